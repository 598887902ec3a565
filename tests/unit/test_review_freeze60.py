"""Review of freeze60: the shared holder search (`tests.holders`) keeps nothing it found alive past its return, names
what it found as it read it, tells the test's own encodings of the texts by identity, and leaves out only the test's
HTTP client's objects (`httpx`), not the service's own (`httpx2`, the remote generator's client)."""

from __future__ import annotations

import gc
import uuid
import weakref

import pytest

from tests.holders import assert_none_hold, holders_of


class _Work(dict):
    """A thread's work item (a dict of the request's texts), let go by the thread once done."""


@pytest.mark.slow  # make test-deletion (~5-10 CPU-s: searches of every object); kept by test_speedA63_search.py::test_a_holder_let_go_after_a_search_of_it_is_not_kept_by_that_search
def test_a_holder_let_go_after_a_search_is_not_kept_by_it_for_the_next():
    """With the collector off (`collect=False`, as the searches after chats and deletes run), a search's own frame was
    left in a reference cycle (the loop over the threads' frames kept this thread's in its variable) holding the
    objects it found: a work item let go after the first search stayed alive, so each search again within
    `assert_none_hold`'s timeout found it and the test failed for work that had ended."""
    marker = uuid.uuid4().hex
    gc.collect()
    gc.disable()
    try:
        work = _Work(prompt=f"Tell me about {marker}?")
        gone = weakref.ref(work)
        assert holders_of([marker], collect=False) == [f"1 {__name__}._Work holding texts[0] ({marker[:12]}...)"]
        del work  # the thread is done with it
        assert gone() is None, "the search kept what it found alive"
        assert holders_of([marker], collect=False) == []
    finally:
        gc.enable()


class _LetsGo(dict):
    """A dict emptied once read: work that ends while a search runs over it."""

    def __iter__(self):
        keys = list(super().__iter__())
        self.clear()
        return iter(keys)


@pytest.mark.slow  # make test-deletion (~10 CPU-s: two searches of every object); kept by test_speedA63_search.py::test_a_holder_that_lets_go_as_it_is_read_is_named_by_that_read
def test_a_holder_that_lets_go_while_a_search_runs_is_waited_for_not_an_error():
    """An object found holding a text was read again to name which text: one that let go in between (its work ended)
    made that read find none, and the search raised `RuntimeError: generator raised StopIteration` instead of
    reporting it, so `assert_none_hold` failed at once instead of searching again."""
    marker = uuid.uuid4().hex
    work = _LetsGo({f"Tell me about {marker}?": 1})
    assert holders_of([marker]) == [f"1 {__name__}._LetsGo holding texts[0] ({marker[:12]}...)"]
    assert not work
    assert_none_hold([marker], timeout=60)


@pytest.mark.slow  # make test-deletion (~10 CPU-s: two searches of every object); kept by test_speedA63_search.py::test_bytes_equal_to_a_searched_text_but_not_the_tests_own_are_a_holder
def test_bytes_equal_to_a_text_held_by_another_object_are_a_holder():
    """The test's own UTF-8 encodings of the texts were left out by equality: bytes the service made equal to one of
    the texts (a whole answer encoded, a marker sent alone) were no holder."""
    marker = uuid.uuid4().hex
    held = [f"sent {marker}".encode()[5:]]  # equal to `marker.encode()`, another object
    assert holders_of([marker]) == [f"1 builtins.list holding texts[0] ({marker[:12]}...)"]
    del held
    assert holders_of([marker]) == []


@pytest.mark.slow  # make test-deletion (~5-10 CPU-s: searches of every object); kept by test_speedA63_search.py::test_the_services_own_http_client_objects_are_searched_without_a_collection_on_its_request
def test_the_services_own_http_client_objects_are_searched_without_a_collection():
    """`collect=False` leaves out the test's HTTP client's objects (`httpx`, in cycles of their own); its filter on
    the module's name starting with "httpx" left out `httpx2` too, the client `pluralign.policy.remote` sends a
    remote generator the user's chats with."""
    import httpx2

    marker = uuid.uuid4().hex
    sent = httpx2.Request("POST", "http://generator/v1/chat/completions", content=f"Tell me about {marker}?".encode())
    assert sorted(holders_of([marker], collect=False)) == [f"1 httpx2.{kind} holding texts[0] ({marker[:12]}...)"
                                                           for kind in ("ByteStream", "Request")]
    del sent


@pytest.mark.slow  # make test-deletion (~10 CPU-s: two searches of every object); kept by test_speedA63_search.py::test_the_test_clients_response_and_the_dict_of_its_attributes_are_left_out_without_a_collection
def test_the_test_clients_responses_are_left_out_with_the_dict_of_their_attributes():
    """delete61: `collect=False` left out the test's HTTP client's objects by their type's module, but not the dict
    of a Response's attributes, a `builtins.dict` (made when its class's instances stop sharing their keys, as a
    process that ran other tests' clients had them): test_freeze60.py, in a worker after other tests, found the
    garbage 400 and export responses' texts held by "1 builtins.dict" and failed."""
    import httpx

    marker = uuid.uuid4().hex
    request = httpx.Request("PATCH", "http://service/v1/users/u/stated-preferences")
    answer = httpx.Response(400, text=f"'{marker} length' is not a named feature", request=request)
    assert marker in answer.text and marker in vars(answer)["_text"]  # its attributes in a dict of their own
    assert holders_of([marker], collect=False) == []
    assert holders_of([marker]) != []  # searched with a collection, the client's objects are holders as any other
    del answer
