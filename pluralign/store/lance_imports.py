"""lancedb's import without the eager work of a REST client we never call.

`import lancedb` imports `lance_namespace`, which imports the generated OpenAPI client
`lance_namespace_urllib3_client`; its ~370 API methods are each wrapped in `pydantic.validate_call`,
which builds a validator per method as the module is imported: ~0.37 s of CPU (1.32-1.40 s -> 0.97-0.98 s
for `import lancedb`, session 45) in every process that opens a store (each `pluralign serve`, each job
worker, each CLI command on the tables), for a client only a REST namespace calls (our stores are a
folder or an object store). `import_lancedb` imports that client with each validator built at its
method's first call instead: what a call validates, and the error it raises, are the same.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable

REST_CLIENT = "lance_namespace_urllib3_client"


def validate_call_at_first_call(validate_call: Callable) -> Callable:
    """`validate_call` (pydantic's decorator, used bare or with options) whose validator is built when the
    decorated function is first called, once, then used for every call: a wrong argument raises the
    same `pydantic.ValidationError`, only not the import a schema error would have failed."""

    def deferred(func=None, /, **options):
        def wrap(f):
            built = None
            lock = threading.Lock()

            @functools.wraps(f)
            def call(*args, **kwargs):
                nonlocal built
                if built is None:
                    with lock:
                        if built is None:
                            built = validate_call(f, **options)
                return built(*args, **kwargs)

            return call

        return wrap if func is None else wrap(func)

    return deferred


def import_lancedb():
    """The `lancedb` module, its REST client (if this process has not imported it yet) imported with
    `validate_call_at_first_call`; `pydantic.validate_call` is pydantic's own again before this returns."""
    if REST_CLIENT not in sys.modules:
        import pydantic

        original = pydantic.validate_call
        pydantic.validate_call = validate_call_at_first_call(original)
        try:
            with contextlib.suppress(ImportError):  # a later lancedb without it: nothing to spare
                __import__(REST_CLIENT)
        finally:
            pydantic.validate_call = original
    import lancedb

    return lancedb
