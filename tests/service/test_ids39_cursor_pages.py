"""Session ids39: `GET /v1/users/{id}/preferences` pages by cursor. Before, it paged by `offset` only: rows
sharing a `created_at` (ordered by pref_id) that joined in front of a walk's position shifted every later
row, so a client walking the pages saw rows twice (and rows deleted behind it made it skip some). Now each
page carries `next_after`, an opaque cursor (the last row's (created_at, pref_id)), and `after=` gives the
rows after it: every row held when the walk began is seen exactly once, whatever joins meanwhile. The real
app over HTTP, real LanceDB in a temp folder."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import field_named, start_service

T = 1_700_000_000.0


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("ids39-pages"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def rows(*ids: str) -> bytes:
    """Comparisons made at one instant, under the given ids (a preference file carries them)."""
    return b"".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}.", "created_at": T,
                                "pref_id": i}).encode() + b"\n" for i in ids)


def test_a_cursor_walk_sees_every_row_once_while_rows_join_the_tie(svc):
    user = "ids39-walk"
    first = [f"r{i}" for i in range(10, 20)]
    with svc.client("acme") as c:
        assert c.post(f"/v1/users/{user}/import", content=rows(*first)).status_code == 201
        seen, after, joined = [], None, []
        while True:
            page = c.get(f"/v1/users/{user}/preferences", params={"limit": 3} | ({"after": after} if after else {}))
            assert page.status_code == 200, page.text
            body = page.json()
            assert after is None or body["next_offset"] is None  # paging by cursor
            seen += [row["pref_id"] for row in body["data"]]
            if len(seen) == 3:  # rows join the tie: two in front of the walk's place, one behind it
                joined = ["r00", "r01", "r155"]
                assert c.post(f"/v1/users/{user}/import", content=rows(*joined)).status_code == 201
            after = body["next_after"]
            if after is None:
                break
        assert len(seen) == len(set(seen)), seen  # no row twice (by offset: r12 and r13 came again)
        assert set(first) <= set(seen) and "r155" in seen and "r00" not in seen  # the one behind its place is for the next walk
        assert seen == sorted(seen)


def test_offset_paging_works_as_before_and_gives_a_cursor(svc):
    user = "ids39-offset"
    with svc.client("acme") as c:
        assert c.post(f"/v1/users/{user}/import", content=rows("a", "b", "c", "d", "e")).status_code == 201
        body = c.get(f"/v1/users/{user}/preferences", params={"offset": 1, "limit": 2}).json()
        assert [r["pref_id"] for r in body["data"]] == ["b", "c"] and body["next_offset"] == 3 and body["total"] == 5
        rest = c.get(f"/v1/users/{user}/preferences", params={"after": body["next_after"]}).json()
        assert [r["pref_id"] for r in rest["data"]] == ["d", "e"] and rest["next_after"] is None and rest["next_offset"] is None
        last = c.get(f"/v1/users/{user}/preferences", params={"offset": 3, "limit": 2}).json()
        assert last["next_offset"] is None and last["next_after"] is None


@pytest.mark.parametrize("cursor", ["nonsense!", "", "W10", "WzEuMCwgMl0", "WyJhIiwgImIiXQ", "WzFlOTk5LCAiYSJd"])
def test_a_cursor_the_service_did_not_write_is_a_400_naming_after(svc, cursor):
    with svc.client("acme") as c:
        assert c.post("/v1/users/ids39-bad/import", content=rows("x")).status_code == 201
        r = c.get("/v1/users/ids39-bad/preferences", params={"after": cursor})
        assert r.status_code == 400 and field_named(r) == "after", r.text


def test_after_with_an_offset_is_a_400_naming_offset(svc):
    with svc.client("acme") as c:
        assert c.post("/v1/users/ids39-both/import", content=rows("x", "y")).status_code == 201
        cursor = c.get("/v1/users/ids39-both/preferences", params={"limit": 1}).json()["next_after"]
        r = c.get("/v1/users/ids39-both/preferences", params={"after": cursor, "offset": 1})
        assert r.status_code == 400 and field_named(r) == "offset", r.text
