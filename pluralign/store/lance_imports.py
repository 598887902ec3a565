"""lancedb's import without the eager work of a REST client we never call.

`import lancedb` imports `lance_namespace`, which imports the generated OpenAPI client
`lance_namespace_urllib3_client`; its ~370 API methods are each wrapped in `pydantic.validate_call`,
which builds a validator per method as the module is imported: ~0.37 s of CPU (1.32-1.40 s -> 0.97-0.98 s
for `import lancedb`, measured on two cores) in every process that opens a store (each `pluralign serve`, each job
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
# one swap of `pydantic.validate_call` at a time: two threads' imports (a store opened beside an audit's `connect`)
# would each keep the other's as "the original", and the last to end would leave the deferred one in pydantic
_SWAPPING = threading.Lock()


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
                            built = _build(validate_call, f, options)
                return built(*args, **kwargs)

            return call

        return wrap if func is None else wrap(func)

    return deferred


def _build(validate_call: Callable, f: Callable, options: dict) -> Callable:
    # not in `call`: pydantic keeps its caller's frame locals for good (`parent_frame_namespace`, to resolve
    # annotations), which there are the first call's arguments (the API client, a request body)
    return validate_call(f, **options)


def import_lancedb():
    """The `lancedb` module, its REST client (if this process has not imported it yet) imported with
    `validate_call_at_first_call`; `pydantic.validate_call` is pydantic's own again before this returns."""
    if REST_CLIENT not in sys.modules:
        with _SWAPPING:
            if REST_CLIENT not in sys.modules:  # (another thread's import may have ended meanwhile)
                _import_rest_client()
    import lancedb

    return lancedb


def _import_rest_client() -> None:
    import pydantic

    original = pydantic.validate_call
    pydantic.validate_call = validate_call_at_first_call(original)
    try:
        with contextlib.suppress(ImportError):  # a later lancedb without it: nothing to spare
            __import__(REST_CLIENT)
    finally:
        pydantic.validate_call = original
