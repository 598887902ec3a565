"""review delete61: the holder search's pre-check (`tests.holders._may_hold`, which leaves aside the chunks of objects
it finds no text in) still lets the search find a text in each place `_holder` reads one: a str or bytes referred to,
a str subclass, a dict's str key (which gc does not visit), and a text inside untracked containers (a tuple, a dict of
atomic values, a msgspec Struct of strs) one and two deep. Each of the DELETE paths' service tests (held59, break58,
freeze60) looks for a leak through one of them; a pre-check that cleared such a chunk would let every one pass."""

from __future__ import annotations

import gc
import uuid

import msgspec

from tests.holders import _holder, _may_hold, _Texts


class _Row(msgspec.Struct):  # a Struct of strs alone: msgspec leaves it untracked by gc
    text: str


def test_the_search_s_pre_check_clears_no_chunk_holding_a_text_in_a_place_the_search_reads():
    markers = [uuid.uuid4().hex for _ in range(8)]

    class Note(str):
        pass

    held = [
        [f"a chat of {markers[0]}"],  # a str in a list
        [f"an answer of {markers[1]}".encode()],  # its bytes
        [Note(f"a note of {markers[2]}")],  # a str subclass
        [{f"a key of {markers[3]}": []}],  # a tracked dict's key, read as the list's referent's key
        [{f"a key of {markers[4]}": 1}],  # an untracked dict's key: read through it
        [(f"a row of {markers[5]}", 1)],  # one untracked tuple deep
        [((f"a row of {markers[6]}", 1), 2)],  # two untracked tuples deep
        [_Row(f"a row of {markers[7]}")],  # an untracked Struct
    ]
    gc.collect()  # a collection untracks a tuple of untracked objects: the inner one, then at the next the outer
    gc.collect()
    assert not any(gc.is_tracked(h[0]) for h in held[4:]), "a container meant untracked is tracked: the case is not read through"
    # a search's chunks hold 2,048 objects, these cases' lists likely in one (a search of them all finds each case
    # though the pre-check clears all but one): each case alone through the pre-check, which must not clear a chunk
    # `_holder` finds a holder in, and clears one that holds none of the texts (a search's whole saving)
    other = _Texts([uuid.uuid4().hex])
    for i, (case, marker) in enumerate(zip(held, markers, strict=True)):
        holder = case[0] if i == 3 else case  # the tracked dict holds its key itself
        assert _holder(holder, _Texts([marker])) == 0, i
        assert _may_hold([holder], _Texts([marker])), f"the pre-check clears case {i}, which `_holder` finds"
        assert not _may_hold([holder], other), i
    del held
