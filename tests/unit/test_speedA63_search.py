"""speedA63: the checks of three slow-marked tests of test_review_freeze60.py (each searched every object of the
process twice: ~10 CPU-s apiece in a worker of the default suite) kept in the default suite on the search's own
steps (`tests.holders`), called on the objects the test makes alone: a few ms."""

from __future__ import annotations

import uuid

from tests.holders import _found, _holder, _may_hold, _Texts
from tests.unit.test_review_freeze60 import _LetsGo


def test_bytes_equal_to_a_searched_text_but_not_the_tests_own_are_a_holder():
    """slow: test_bytes_equal_to_a_text_held_by_another_object_are_a_holder. The test's own UTF-8 encoding of a text
    is told by identity: bytes the service made equal to it are a holder's, the test's own are not."""
    marker = uuid.uuid4().hex
    searched = _Texts([marker])
    held = [f"sent {marker}".encode()[5:]]  # equal to `marker.encode()`, another object
    assert held[0] == searched.raw[0] and held[0] is not searched.raw[0]
    assert _may_hold([held], searched) and _holder(held, searched) == 0
    assert _found([held], searched, collect=True) == [(held, 0)]
    own = [searched.raw[0]]
    assert _holder(own, searched) is None and _found([own], searched, collect=True) == []


def test_a_holder_that_lets_go_as_it_is_read_is_named_by_that_read():
    """slow: test_a_holder_that_lets_go_while_a_search_runs_is_waited_for_not_an_error. A holder is named as it is
    read, not read again: a work item emptied by that read (its work ended) is still named, no StopIteration."""
    marker = uuid.uuid4().hex
    searched = _Texts([marker])
    work = _LetsGo({f"Tell me about {marker}?": 1})
    assert _may_hold([work], searched) and work  # the pre-check reads the keys without the dict's own `__iter__`
    assert _holder(work, searched) == 0
    assert not work
    assert _holder(work, searched) is None


def test_the_test_clients_response_and_the_dict_of_its_attributes_are_left_out_without_a_collection():
    """slow: test_the_test_clients_responses_are_left_out_with_the_dict_of_their_attributes. Without a collection the
    test's HTTP client's objects (`httpx`) are left out, the dict of a Response's attributes too; with one, they are
    holders as any other."""
    import httpx

    marker = uuid.uuid4().hex
    searched = _Texts([marker])
    request = httpx.Request("PATCH", "http://service/v1/users/u/stated-preferences")
    answer = httpx.Response(400, text=f"'{marker} length' is not a named feature", request=request)
    assert marker in answer.text and marker in vars(answer)["_text"]
    attributes = vars(answer)
    assert _found([request, answer, attributes], searched, collect=False) == []
    assert _found([request, answer, attributes], searched, collect=True) == [(attributes, 0)]


def test_a_holder_let_go_after_a_search_of_it_is_not_kept_by_that_search():
    """slow: test_a_holder_let_go_after_a_search_is_not_kept_by_it_for_the_next. With the collector off, the search's
    own frame left in a reference cycle (its variable holding the threads' frames, its own among them) kept what it
    found alive: here the search reads the work item alone."""
    import gc
    import weakref

    from tests.holders import holders_of
    from tests.unit.test_review_freeze60 import _Work

    marker = uuid.uuid4().hex
    gc.disable()  # (no collection first: only the work item is searched, garbage elsewhere aside)
    try:
        work = _Work(prompt=f"Tell me about {marker}?")
        gone = weakref.ref(work)
        assert holders_of([marker], collect=False, among=[work]) == [
            f"1 tests.unit.test_review_freeze60._Work holding texts[0] ({marker[:12]}...)"]
        del work  # the thread is done with it
        assert gone() is None, "the search kept what it found alive"
    finally:
        gc.enable()


def test_the_services_own_http_client_objects_are_searched_without_a_collection_on_its_request():
    """slow: test_the_services_own_http_client_objects_are_searched_without_a_collection. `collect=False` leaves out
    the test's HTTP client's objects (`httpx`), not `httpx2`'s, the client a remote generator is sent chats with."""
    import httpx2

    marker = uuid.uuid4().hex
    searched = _Texts([marker])
    sent = httpx2.Request("POST", "http://generator/v1/chat/completions", content=f"Tell me about {marker}?".encode())
    found = _found([sent, sent.stream], searched, collect=False)
    assert sorted(type(o).__qualname__ for o, _ in found) == ["ByteStream", "Request"]
    assert {i for _, i in found} == {0} and all(type(o).__module__.startswith("httpx2") for o, _ in found)
