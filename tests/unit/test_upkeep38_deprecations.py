"""No deprecated API called from our code: what `-W error::DeprecationWarning` turns into errors.

pyproject's `filterwarnings` makes a DeprecationWarning raised from a `pluralign`, `service` or
`training` module an error in every test. Litestar's warnings about how a handler declares its
parameters are raised from Litestar's own modules (while the app is built, or by `Parameter(query=...)`
itself), so that filter cannot see them: this builds the app's routes in a fresh interpreter with every
DeprecationWarning an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BUILD = """
from litestar import Litestar, Router
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.session import SESSION_HANDLERS
from service.app import TENANT_HANDLERS
from service.embeddings.app import create_embeddings_app
Litestar(route_handlers=[Router(path="/", route_handlers=list(TENANT_HANDLERS)),
                         Router(path="/admin", route_handlers=list(ADMIN_HANDLERS)), *SESSION_HANDLERS])
class Encoder:  # what `pluralign serve-embeddings` serves, as far as building its app looks
    encoder_id, dim = "tiny", 4
create_embeddings_app(Encoder())
print("built")
"""


def test_the_services_routes_declare_their_parameters_in_litestars_supported_style():
    """Litestar 2.25 deprecates `Parameter(query=/header=...)`, a query parameter with no marker
    (`kind: str | None = None`) and a body without one (`data: EmbeddingsRequest`, `pluralign
    serve-embeddings`), all to stop working in Litestar 3: `QueryParameter(name=...)`,
    `HeaderParameter(name=...)`, `FromQuery[...]`, `JSONBody[...]`."""
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", BUILD], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "built", done.stderr[-3000:]
