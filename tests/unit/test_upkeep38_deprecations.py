"""No deprecated API called from our code: what `-W error::DeprecationWarning` turns into errors.

pyproject's `filterwarnings` makes a DeprecationWarning raised from a `pluralign`, `service` or
`training` module an error in every test. Litestar's warnings about how a handler declares its
parameters are raised from Litestar's own modules (while the app is built, or by `Parameter(query=...)`
itself), so that filter cannot see them: this builds the app's routes in a fresh interpreter with every
DeprecationWarning from Litestar's modules or ours an error (`STRICT`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


# Litestar's deprecations (warned from its own modules) and ours are errors; another library's, imported here
# too (pandas, torch, pydantic, lancedb), warns only: a newer minor version of one would fail this otherwise
STRICT = ("import warnings\nwarnings.filterwarnings('error', category=DeprecationWarning, "
          "module=r'(litestar|pluralign|service|training)(\\.|$)')\n")


def build(before: str = "") -> subprocess.CompletedProcess:
    """BUILD in a fresh interpreter under STRICT, `before` run first (as a library's import would)."""
    return subprocess.run([sys.executable, "-c", STRICT + before + BUILD], cwd=ROOT, capture_output=True, text=True, timeout=120)


# another library's deprecation, warned in its own module as at its import (pandas 2.2 warned at `import pandas`)
THEIRS = "import warnings\nwarnings.warn_explicit('old', DeprecationWarning, 'pandas/__init__.py', 1, module='pandas')\n"


@pytest.fixture(scope="module")
def built_beside_theirs() -> subprocess.CompletedProcess:
    """BUILD under STRICT after THEIRS, once for the module: a fresh interpreter importing the service (torch,
    lancedb, pandas: seconds). THEIRS is no error under STRICT and turns none of Litestar's or ours into one,
    so a build that passes with it passes without it: the routes' test and the other library's share it."""
    return build(THEIRS)


def test_the_services_routes_declare_their_parameters_in_litestars_supported_style(built_beside_theirs):
    """Litestar 2.25 deprecates `Parameter(query=/header=...)`, a query parameter with no marker
    (`kind: str | None = None`) and a body without one (`data: EmbeddingsRequest`, `pluralign
    serve-embeddings`), all to stop working in Litestar 3: `QueryParameter(name=...)`,
    `HeaderParameter(name=...)`, `FromQuery[...]`, `JSONBody[...]`."""
    done = built_beside_theirs
    assert done.returncode == 0 and done.stdout.strip() == "built", done.stderr[-3000:]


def test_another_librarys_deprecation_does_not_fail_the_build_but_litestars_does(built_beside_theirs):
    """Building the routes imports pandas, torch, pydantic and lancedb too. A DeprecationWarning one of them
    raises in its own code (at import, in a newer minor version: pandas 2.2 warned at `import pandas`) made
    this test fail with nothing of ours to change. Only Litestar's and our own modules' deprecations fail it."""
    done = built_beside_theirs
    assert done.returncode == 0 and done.stdout.strip() == "built", done.stderr[-3000:]
    litestars = "from litestar.params import Parameter\nParameter(query='old')\n"  # Litestar's own deprecation, as before
    done = build(litestars)
    assert done.returncode != 0 and "Deprecated 'query' parameter" in done.stderr, done.stderr[-3000:]
