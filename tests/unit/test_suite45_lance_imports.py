"""lancedb imported with its REST client's validators built at first call (`pluralign.store.lance_imports`):
a call validates as pydantic's own decorator does, and pydantic is left as it was."""

from __future__ import annotations

import sys
import threading
import time

import pydantic
import pytest
from pydantic.validate_call_decorator import validate_call as pydantics_own

from pluralign.store.lance_imports import REST_CLIENT, import_lancedb, validate_call_at_first_call


def test_a_deferred_validator_validates_every_call_as_pydantics_own_and_is_built_once():
    built = []

    def counting(func=None, /, **options):
        built.append(options)
        return pydantics_own(func, **options)

    deferred = validate_call_at_first_call(counting)

    class Api:  # as the generated client writes it: methods, bare and with options
        @deferred
        def describe(self, table: pydantic.StrictStr, limit: int = 10) -> str:
            return f"{table}:{limit}"

        @deferred(validate_return=True)
        def count(self, table: pydantic.StrictStr) -> int:
            return table  # not an int: the return is validated too

    assert built == []  # nothing built as the class is defined
    api = Api()
    assert api.describe("prefs", limit="3") == "prefs:3"  # coerced as pydantic does
    with pytest.raises(pydantic.ValidationError, match="valid string"):
        api.describe(5)
    assert built == [{}]  # once, for every call after
    assert Api.describe.__name__ == "describe"
    with pytest.raises(pydantic.ValidationError):
        api.count("prefs")
    assert built == [{}, {"validate_return": True}]


def test_a_store_import_leaves_pydantic_as_it_was_and_the_rest_client_still_validates():
    import pluralign.store.tables  # noqa: F401  (lancedb through `import_lancedb`, unless this worker had it already)

    assert pydantic.validate_call is pydantics_own
    from lance_namespace_urllib3_client.api.table_api import TableApi

    with pytest.raises(pydantic.ValidationError):
        TableApi().describe_table(5, None)  # validated before any request is made


def test_a_deferred_validator_keeps_none_of_its_first_calls_arguments():
    """Review session 45: pydantic's `validate_call` keeps its caller's frame locals (to resolve annotations); built
    inside the deferred wrapper, those were the first call's arguments (the API client, a request body), kept for
    the life of the process."""
    import gc
    import weakref

    @validate_call_at_first_call(pydantics_own)
    def send(body: object, limit: int) -> int:
        return limit

    class Body:
        pass

    body = Body()
    first = weakref.ref(body)
    assert send(body, "3") == 3
    del body
    gc.collect(1)  # the young generations, where anything made here is (a full collection walks torch's heap: ~0.8 CPU-s)
    assert first() is None


class HoldTheFirstImport:
    """Holds thread A in its import of the REST client (its module lock taken, not yet in sys.modules) until thread
    B, importing lancedb through `import_lancedb` as well, has gone as far as it can: swapped
    `pydantic.validate_call` itself, or stopped (the same instruction of `import_lancedb` twice, 50 ms apart)."""

    def __init__(self):
        self.a_held = threading.Event()
        self.b = None

    def find_spec(self, name, path=None, target=None):
        if name == REST_CLIENT and threading.current_thread().name == "A":
            swapped = pydantic.validate_call
            self.a_held.set()
            deadline = time.monotonic() + 10
            while pydantic.validate_call is swapped and not self.b_stopped() and time.monotonic() < deadline:
                pass
        return None

    def b_stopped(self) -> bool:
        where = []
        for _ in range(2):
            frame = sys._current_frames().get(self.b.ident)
            where.append(frame and (frame.f_code.co_name, frame.f_lasti))
            time.sleep(0.05)
        return where[0] is not None and where[0] == where[1] and where[0][0] == "import_lancedb"  # (None: B not started yet)


def test_two_threads_importing_lancedb_at_once_leave_pydantic_as_it_was(monkeypatch):
    """Review session 45: two threads' `import_lancedb` at once (a store opened beside an audit's `connect`) each
    swapped `pydantic.validate_call`; the second kept the first's deferred one as "the original" and put it back
    last, so every `validate_call` after in that process was the deferred one."""
    import pluralign.store.tables  # noqa: F401  (lancedb and its REST client, whose package is imported again below)

    monkeypatch.setattr(pydantic, "validate_call", pydantics_own)  # as it was after the test, whatever happens
    monkeypatch.delitem(sys.modules, REST_CLIENT)  # (its modules stay: only the package's __init__ runs again)
    hold = HoldTheFirstImport()
    monkeypatch.setattr(sys, "meta_path", [hold, *sys.meta_path])
    a = threading.Thread(target=import_lancedb, name="A")
    hold.b = threading.Thread(target=lambda: hold.a_held.wait(10) and import_lancedb(), name="B")
    for thread in (a, hold.b):
        thread.start()
    for thread in (a, hold.b):
        thread.join(30)
    assert REST_CLIENT in sys.modules
    assert pydantic.validate_call is pydantics_own
