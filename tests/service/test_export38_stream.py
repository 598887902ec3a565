"""Session export38: GET /v1/users/{id}/export is read from LanceDB as it is sent, a batch of rows at a time,
from one version of each table. Before, the whole history was read (and held) before the first byte: 59 MB
of Python peak for 50,000 rows. The export must stay what it was, byte for byte; a failure before the first
byte stays a 503, and one after it cuts the connection instead of ending a 200 that looks complete."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import msgspec
import numpy as np
import pytest

from pluralign.store import Store, StoredPreference
from pluralign.store.failures import StoreUnavailable
from pluralign.store.tables import ROWS_PER_READ, DeletedMeanwhile
from service.users import services
from tests.service.test_store import DIM, prefs
from tests.service.tiny import start_service

USER = "eq38"
BULK = ROWS_PER_READ * 2 + 300  # straight into the store: three reads of the streamed export


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("export38-data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def reference(rt, tenant: str, user_id: str, export_format: str) -> bytes:
    """The export as it was built before this session (every row read at once), from the store as it is now."""
    from pluralign.data.io import preference_row
    from pluralign.data.record import Preference
    from pluralign.data.text import answer_key, is_blank

    encode = msgspec.json.encode
    out = []
    preferences, _ = rt.store.preferences_for(tenant, user_id)
    if export_format == "all":
        record = rt.store.get_user(tenant, user_id)
        if record is not None:
            line = msgspec.to_builtins(msgspec.structs.replace(record, user_model=None, stated=None))
            line["user_model"] = msgspec.to_builtins(services.stored_state(record))
            stated = services.stated_of(record)
            # shown without its epoch (versions52: a part of the entity tag only)
            line["stated"] = msgspec.to_builtins(services.StatedShown.of(stated, services.stated_history(rt, tenant, user_id, stated)))
            out.append(encode({"type": "user", **line}) + b"\n")
        out += [encode({"type": "preference", **msgspec.to_builtins(row)}) + b"\n" for row in preferences]
        out += [encode({"type": "interaction", **msgspec.to_builtins(i)}) + b"\n" for i in rt.store.interactions_for(tenant, user_id)]
        return b"".join(out)
    for row in preferences:
        if is_blank(row.prompt) or is_blank(row.chosen) or is_blank(row.rejected) or answer_key(row.chosen) == answer_key(row.rejected):
            continue
        record = Preference(user_id=row.user_id, prompt=row.prompt, chosen=row.chosen, rejected=row.rejected, margin=row.margin,
                            tie=row.tie, source=row.source, created_at=row.created_at, attributes=row.attributes, trl=row.trl,
                            pref_id=row.pref_id)  # carried since session ids39
        out.append(msgspec.json.encode(preference_row(record)) + b"\n")
    return b"".join(out)


def comparison(text: str) -> dict:
    return {"type": "comparison", "user": USER, "prompt": f"What should I cook? {text}", "chosen": f"A spicy {text}.",
            "rejected": "A plain steak.", "attributes": {"group": "spicy"}}


def bulk_rows(rt, tenant: str, user_id: str, n: int, beside: str | None = None) -> list[StoredPreference]:
    """`n` rows written straight into the store, most of them at one `created_at` (ordered by pref_id then),
    with a blank prompt and a same-answer row among them, as older versions stored; every tenth one of user
    `beside` instead, when given (two users' rows in the same files, as a compaction leaves them)."""
    now = time.time()
    rows = [StoredPreference(tenant=tenant, user_id=user_id, pref_id=uuid.uuid4().hex, prompt=f"Soup or salad, number {i}?",
                             chosen=f"Soup {i}", rejected=f"Salad {i}", kind="comparison", created_at=now - (i % 3 == 0) * i,
                             received_at=now) for i in range(n)]
    if beside is not None:
        rows = [msgspec.structs.replace(r, user_id=beside) if i % 10 == 9 else r for i, r in enumerate(rows)]
    rows[5] = msgspec.structs.replace(rows[5], prompt="\u200b ")  # blank
    rows[7] = msgspec.structs.replace(rows[7], chosen="Same.", rejected="Same.")
    vectors = np.random.default_rng(1).standard_normal((n, rt.store.dim)).astype(np.float32)
    rt.store.add_preferences(rows, vectors, vectors, vectors)
    return rows


def test_the_streamed_export_is_the_export_it_was_byte_for_byte(svc):
    rt = svc.runtime
    with svc.client() as c:
        for i in range(2):  # interactions, and a rating (a rating without rival is left out of the preference file)
            chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": USER, "seed": i,
                                                        "messages": [{"role": "user", "content": f"Dinner idea {i}?"}]})
            assert chat.status_code == 200, chat.text
        assert c.post("/v1/feedback", json={"type": "rating", "response_id": chat.json()["id"], "rating": 5}).status_code == 201
        for change in ({"length": "less"}, {"length": None, "exclamations": "less"}):  # stated history: two versions
            r = c.patch(f"/v1/users/{USER}/stated-preferences", json={"preferences": change})
            assert r.status_code == 200, r.text
        trl = [{"chosen": [{"role": "user", "content": "Tea or coffee?"}, {"role": "assistant", "content": "Tea."}],
                "rejected": [{"role": "user", "content": "Tea or coffee?"}, {"role": "assistant", "content": "Coffee."}],
                "score_chosen": 7.5},
               {"prompt": "Milk?", "chosen": "Yes.", "rejected": "No.", "id": "row-2"}]
        r = c.post(f"/v1/users/{USER}/import", content="\n".join(json.dumps(row) for row in trl))
        assert r.status_code == 201, r.text
        rt.wait_for_background()
        bulk_rows(rt, "acme", USER, BULK)
        with rt.ingest.paused():  # acknowledged, still in the feedback log: the export moves them in first
            pending = [c.post("/v1/feedback", json=comparison(f"curry {i}")).json()["stored"][0] for i in range(3)]
            assert rt.ingest.log.pending_for("acme", USER)
            first = {f: c.get(f"/v1/users/{USER}/export" + ("?format=preferences" if f == "preferences" else "")) for f in ("all", "preferences")}
        rt.wait_for_background()  # the refit the moved rows asked for: the user line may change with it
        for export_format, query in (("all", ""), ("preferences", "?format=preferences")):
            for encoding in ("identity", "gzip"):
                got = c.get(f"/v1/users/{USER}/export{query}", headers={"Accept-Encoding": encoding})
                assert got.status_code == 200, got.text
                assert got.headers.get("content-encoding") == (None if encoding == "identity" else "gzip")
                want = reference(rt, "acme", USER, export_format)
                assert got.content == want, (export_format, encoding, len(got.content), len(want))
            # the first export (pending rows moved in by it) held the same rows in the same order
            prefs_of = lambda body: [line for line in body.splitlines() if b'"type":"user"' not in line]  # noqa: E731
            assert prefs_of(first[export_format].content) == prefs_of(got.content), export_format
    lines = [json.loads(line) for line in got.content.splitlines()]
    assert sum(str(row.get("prompt")).startswith("Soup or salad") for row in lines) == BULK - 2  # the blank prompt and
    assert not any(row["chosen"] == row["rejected"] for row in lines)  # the same-answer row left out
    assert any(row.get("score_chosen") == 7.5 for row in lines) and any(row.get("id") == "row-2" for row in lines)  # TRL's columns
    every = [json.loads(line) for line in first["all"].content.splitlines()]
    assert {row["pref_id"] for row in every if row["type"] == "preference"} >= set(pending)
    assert sum(row["type"] == "interaction" for row in every) == 2 and every[0]["type"] == "user"
    assert len(every[0]["stated"]["history"]) >= 2


def stored(tmp_path, n: int = 30) -> Store:
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*prefs("t", "ann", n))
    return store


def test_a_streamed_read_is_one_version_of_the_table(tmp_path):
    """An import landing while an export is being read is not mixed in: the read stays on its version."""
    store = stored(tmp_path)
    want = [p.pref_id for p in store.preferences_for("t", "ann")[0]]
    rows = store.preferences_in_order("t", "ann", rows_per_read=7)
    got = [next(rows).pref_id]
    store.add_preferences(*prefs("t", "ann", 5, start=100))  # an import meanwhile
    got += [p.pref_id for p in rows]
    assert got == want
    assert [p.pref_id for p in store.preferences_in_order("t", "ann")] == [p.pref_id for p in store.preferences_for("t", "ann")[0]]


def test_a_delete_of_the_user_stops_a_streamed_read_in_flight(tmp_path):
    """Alone on the store, a DELETE removes the versions that held the user's rows at once: a read begun
    before it stops with DeletedMeanwhile, not a short list that looks whole (and no storage problem is noted)."""
    store = stored(tmp_path)
    rows = store.preferences_in_order("t", "ann", rows_per_read=7)
    assert next(rows).user_id == "ann"
    store.delete_user("t", "ann")
    with pytest.raises(DeletedMeanwhile):
        list(rows)
    assert store.problems.recent() == []


def failing_after(rows, n: int):
    for i, row in enumerate(rows):
        if i == n:
            raise StoreUnavailable("table `preferences`", "/data", "read", "unreadable", "injected")
        yield row


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_failure_mid_export_cuts_the_connection(svc, monkeypatch, encoding):
    """Before the first byte a storage failure is the 503 it was; after it, the body is cut short
    (the chunked body never ends), never a 200 whose body looks complete."""
    rt = svc.runtime
    user = f"cut38{encoding}"
    bulk_rows(rt, "acme", user, BULK)
    real = rt.store.preferences_in_order
    monkeypatch.setattr(rt.store, "preferences_in_order", lambda *a, **k: failing_after(real(*a, **k), BULK - 100))
    with svc.client() as c, c.stream("GET", f"/v1/users/{user}/export?format=preferences", headers={"Accept-Encoding": encoding}) as r:
        assert r.status_code == 200
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            for _ in r.iter_raw():
                pass

    def down(*a, **k):
        raise StoreUnavailable("table `preferences`", "/data", "read", "unreadable", "injected")

    monkeypatch.setattr(rt.store, "preferences_in_order", down)
    with svc.client() as c:
        for query in ("", "?format=preferences"):
            r = c.get(f"/v1/users/{user}/export{query}", headers={"Accept-Encoding": encoding})
            assert r.status_code == 503, (r.status_code, r.text[:200])
            assert "table `preferences` cannot be read" in r.json()["error"]["message"], r.json()


# and the RateLimit-* headers, which count each request. `Transfer-Encoding: chunked` is the framing uvicorn (h11)
# chooses for a body it sends, so not for a HEAD's (RFC 9112 6.1 lets a HEAD's answer leave it out)
VARYING = ("date", "x-request-id", "transfer-encoding")


def compared(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in VARYING and not k.startswith("ratelimit")}


def test_head_and_get_of_an_export_answer_the_same_headers(svc):
    """Session 37 left HEAD answering `Content-Encoding: gzip` for a known user whose preference file is empty,
    where the GET's empty body is not gzipped. Every header now agrees, for an unknown user, known users
    with nothing in the file, and a user with rows; both formats; with gzip accepted and not."""
    rt = svc.runtime
    with svc.client() as c:
        assert c.patch("/v1/users/stated38h/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "chats38h", "seed": 3,
                                                    "messages": [{"role": "user", "content": "Dinner?"}]})
        assert chat.status_code == 200, chat.text
        refused = bulk_rows(rt, "acme", "refused38h", 8)  # only rows the preference file leaves out
        rt.store.delete_feedback_before("acme", "refused38h", time.time() + 60)
        rows = [msgspec.structs.replace(r, prompt=" ") for r in refused]
        vectors = np.zeros((len(rows), rt.store.dim), np.float32)
        rt.store.add_preferences(rows, vectors, vectors, vectors)
        assert c.post("/v1/feedback", json={**comparison("rice"), "user": "rows38h"}).status_code == 201
        checked = 0
        for user in ("nobody38h", "stated38h", "chats38h", "refused38h", "rows38h"):
            for query in ("", "?format=preferences"):
                for encoding in ("identity", "gzip"):
                    path, headers = f"/v1/users/{user}/export{query}", {"Accept-Encoding": encoding}
                    get, head = c.get(path, headers=headers), c.head(path, headers=headers)
                    assert head.status_code == get.status_code, (path, encoding, head.status_code, get.status_code)
                    assert compared(head) == compared(get), (path, encoding, compared(head), compared(get))
                    assert head.content == b""
                    checked += get.status_code == 200 and get.content == b""
    assert checked >= 4, checked  # the empty files: stated38h, chats38h, refused38h (preferences), each in both encodings


def test_an_export_reads_the_users_rows_a_batch_at_a_time(svc, monkeypatch):
    """What keeps an export's Python peak flat (the slow test below measures it over 12,000 rows), counted: the
    export of a user of BULK rows reads them from the store in batches of at most ROWS_PER_READ rows, each one
    as the body reaches it. Before export38, one read of every row."""
    rt = svc.runtime
    bulk_rows(rt, "acme", "batch38", BULK)
    real, batches = rt.store._taken, []

    def counted(*args, **kwargs):
        for batch in real(*args, **kwargs):
            batches.append(len(batch))
            yield batch

    monkeypatch.setattr(rt.store, "_taken", counted)
    with svc.client() as c:
        r = c.get("/v1/users/batch38/export?format=preferences", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.content.count(b"\n") == BULK - 2
    assert batches == [ROWS_PER_READ, ROWS_PER_READ, BULK - 2 * ROWS_PER_READ], batches


@pytest.mark.slow  # ~2.5 CPU-s (12,000 rows); fast: a failure mid-export cuts the connection (the rows are read as they are sent:
# a list of them first, a 503 there), a DELETE stops a streamed read in flight (the store reads them as the iterator advances)
# and an export's reads counted, ROWS_PER_READ rows each (above)
def test_an_exports_python_peak_does_not_grow_with_the_users_rows(svc):
    """The server runs in this process: tracemalloc sees its Python allocations. Before, the export of 12,000
    rows held them all at once (~15 MB; 59 MB for 50,000, BENCHMARKS.md); now a batch of ROWS_PER_READ rows."""
    import tracemalloc

    rt = svc.runtime
    bulk_rows(rt, "acme", "big38", 12_000)
    rt.wait_for_background()
    with svc.client() as c:
        tracemalloc.start()
        try:
            with c.stream("GET", "/v1/users/big38/export?format=preferences", headers={"Accept-Encoding": "identity"}) as r:
                lines = sum(chunk.count(b"\n") for chunk in r.iter_raw())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert r.status_code == 200 and lines == 12_000 - 2
    assert peak < 6e6, f"{peak / 1e6:.1f} MB"


def test_a_page_of_preferences_is_the_page_it_was_and_builds_only_itself(svc):
    """GET .../preferences made every one of the user's rows a Python dict to sort them and keep a page
    (~14 MB for 12,000 rows, ~60 MB for 50,000); now they are sorted in Arrow and only the page is built.
    The pages are the same: oldest first, ties in created_at by pref_id."""
    import tracemalloc

    rt = svc.runtime
    bulk_rows(rt, "acme", "page38", 12_000)
    rt.wait_for_background()
    everything = sorted(rt.store.history("acme", "page38").rows, key=lambda r: (r["created_at"], r["pref_id"]))  # as it was
    with svc.client() as c:
        c.get("/v1/users/page38/preferences?limit=1")  # the history is loaded (and cached) once, as before
        for offset, limit in ((0, 50), (37, 500), (11_900, 500), (12_000, 5), (12_010, 5)):
            tracemalloc.start()
            try:
                r = c.get(f"/v1/users/page38/preferences?offset={offset}&limit={limit}")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert r.status_code == 200, r.text
            page = r.json()
            assert [p["pref_id"] for p in page["data"]] == [row["pref_id"] for row in everything[offset : offset + limit]]
            assert page["total"] == 12_000 and page["next_offset"] == (offset + limit if offset + limit < 12_000 else None)
            assert peak < 4e6, (offset, limit, f"{peak / 1e6:.1f} MB")


def test_another_users_delete_or_a_compaction_does_not_cut_a_streamed_read(tmp_path):
    """reviewx38: the read pinned a version and took its rows by row id; a DELETE of *another* user (its purge
    removes every old version of the table at once when alone on the store) or a compaction dropping old
    versions removed that version's files, so the read failed as a damaged table (StoreUnavailable, noted in
    `problems`: the health check degraded) though nothing was wrong and the user's rows were all there. It
    now goes on from the newest version with the same rows in the same order; only the user's own rows
    going stops it (DeletedMeanwhile)."""
    from datetime import timedelta

    from pluralign.store import Interaction

    store = Store(str(tmp_path), "enc", DIM)
    for i in range(3):  # the two users' rows share fragments, as appends interleave
        store.add_preferences(*prefs("t", "ann", 20, start=100 * i))
        store.add_preferences(*prefs("t", "bob", 5, start=100 * i))
        for who in ("ann", "bob"):
            for j in range(4):
                store.add_interaction(Interaction(tenant="t", user_id=who, response_id=f"{who}-{i}-{j}", prompt="p",
                                                  messages=[], candidates=["r"], scores=[0.0], chosen_index=0, history=[],
                                                  model="m", created_at=1000.0 + (j % 2)))  # ties in created_at
    want = [p.pref_id for p in store.preferences_for("t", "ann")[0]]
    want_chats = [i.response_id for i in store.interactions_for("t", "ann")]
    rows = store.preferences_in_order("t", "ann", rows_per_read=7)
    chats = store.interactions_in_order("t", "ann", rows_per_read=3)
    got, got_chats = [next(rows).pref_id], [next(chats).response_id]
    store.delete_user("t", "bob")
    got += [next(rows).pref_id for _ in range(20)]
    got_chats += [next(chats).response_id for _ in range(5)]
    store.add_preferences(*prefs("t", "cid", 5, start=900))  # an import meanwhile, then a compaction dropping old versions
    store.compact(keep_versions_for=timedelta(0), every_table=True)
    got += [p.pref_id for p in rows]
    got_chats += [i.response_id for i in chats]
    assert got == want and got_chats == want_chats
    assert store.problems.recent() == []


def test_an_export_outlives_another_users_delete_over_http(svc, monkeypatch):
    """reviewx38: a tenant's DELETE of one user cut every other user's export in flight (their pinned version's
    files purged): the client saw a connection cut short, the store noted a damaged table. The export now
    ends whole, the bytes it would have been. The read is held after 1,500 rows (a slow reader) while the
    DELETE is sent, so that it next reads the table after the purge."""
    import threading

    rt = svc.runtime
    user = "slow38"
    bulk_rows(rt, "acme", user, BULK + 300, beside="gone38")  # 2,340 of the user's, 260 of gone38's
    want = reference(rt, "acme", user, "preferences")
    problems = list(rt.store.problems.recent())
    held, go = threading.Event(), threading.Event()
    real = rt.store.preferences_in_order

    def gated(*a, **k):
        for i, row in enumerate(real(*a, **k)):
            if i == ROWS_PER_READ + 500:
                held.set()
                go.wait(60)
            yield row

    monkeypatch.setattr(rt.store, "preferences_in_order", gated)
    with svc.client() as c, c.stream("GET", f"/v1/users/{user}/export?format=preferences", headers={"Accept-Encoding": "identity"}) as r:
        assert r.status_code == 200
        assert held.wait(60)
        with svc.client() as other:
            assert other.delete("/v1/users/gone38", timeout=120).status_code == 200
        go.set()
        body = b"".join(r.iter_raw())
    assert body == want, (len(body), len(want))
    assert rt.store.problems.recent() == problems


def test_a_damaged_table_under_a_streamed_read_is_still_a_storage_failure(tmp_path):
    """reviewx38: going on from the newest version (above) must not hide damage. A data file removed behind
    Lance's back (not a version's cleanup: the newest version still names it) fails the read again there:
    StoreUnavailable, noted in `problems`, as before."""
    store = stored(tmp_path, 40)
    rows = store.preferences_in_order("t", "ann", rows_per_read=7)
    assert next(rows).user_id == "ann"
    for data in (tmp_path / "preferences.lance" / "data").glob("*.lance"):
        data.unlink()
    with pytest.raises(StoreUnavailable, match="table `preferences`"):
        list(rows)
    assert [p["what"] for p in store.problems.recent()] == ["table `preferences`"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_delete_before_the_first_byte_of_an_export_is_a_404(svc, monkeypatch, method):
    """reviewx38: the export fixes its version, then reads its first rows before answering. A DELETE of the user
    landing between the two (alone on the store, it removes that version's files at once) raised
    DeletedMeanwhile inside the handler: a 500 `internal_error`, logged as an unhandled exception (HEAD too: its
    look for a first line of the preference file reads that way). Nothing was sent yet, and nothing is held about
    the user now: the 404 an export of an unknown user is."""
    import threading

    rt = svc.runtime
    user = f"early38{method.lower()}"
    bulk_rows(rt, "acme", user, 50)
    held, go = threading.Event(), threading.Event()
    real = rt.store.preferences_in_order

    def gated(*a, **k):
        rows = real(*a, **k)  # the version and the order are fixed here
        held.set()
        go.wait(60)
        yield from rows

    monkeypatch.setattr(rt.store, "preferences_in_order", gated)
    answer = {}
    with svc.client() as c:
        reader = threading.Thread(target=lambda: answer.setdefault("r", c.request(method, f"/v1/users/{user}/export?format=preferences")))
        reader.start()
        assert held.wait(60)
        with svc.client() as other:
            assert other.delete(f"/v1/users/{user}", timeout=120).status_code == 200
        go.set()
        reader.join(120)
    r = answer["r"]
    assert r.status_code == 404, (r.status_code, r.text[:300])
    assert method == "HEAD" or r.json()["error"]["code"] == "not_found"


def test_the_access_log_tells_a_cut_export_from_a_whole_one(svc, monkeypatch):
    """reviewx38: an export cut part way (the store failing, the user deleted, the client hanging up) was logged
    `GET /v1/users/{user_id}/export 200 ... ms` exactly as one sent whole: the status was sent before the body,
    and an operator following a complaint could not tell. The line now ends with `cut` (`access["cut"]`: True)
    when the body never ended; a whole answer's line is as it was."""
    import logging

    rt = svc.runtime
    user = "logcut38"
    bulk_rows(rt, "acme", user, BULK)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    access = logging.getLogger("pluralign.access")
    access.addHandler(handler)
    try:
        with svc.client() as c:
            whole = c.get(f"/v1/users/{user}/export?format=preferences", headers={"X-Request-Id": "whole38"})
            assert whole.status_code == 200
            assert c.head(f"/v1/users/{user}/export", headers={"X-Request-Id": "head38", "Accept-Encoding": "gzip"}).status_code == 200
            real = rt.store.preferences_in_order
            monkeypatch.setattr(rt.store, "preferences_in_order", lambda *a, **k: failing_after(real(*a, **k), BULK - 100))
            with c.stream("GET", f"/v1/users/{user}/export?format=preferences", headers={"X-Request-Id": "cut38"}) as r:
                assert r.status_code == 200
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    for _ in r.iter_raw():
                        pass
        deadline = time.time() + 10
        while time.time() < deadline and not any(getattr(x, "request_id", None) == "cut38" for x in records):
            time.sleep(0.05)
    finally:
        access.removeHandler(handler)
    by_id = {getattr(x, "request_id", None): x for x in records}
    assert by_id["whole38"].access["status"] == 200 and "cut" not in by_id["whole38"].access, by_id["whole38"].access
    assert not by_id["whole38"].getMessage().endswith(" cut") and "cut" not in by_id["head38"].access, by_id["head38"].access
    assert by_id["cut38"].access["status"] == 200 and by_id["cut38"].access["cut"] is True, by_id["cut38"].access
    assert by_id["cut38"].getMessage().endswith(" cut"), by_id["cut38"].getMessage()


def test_with_replicas_another_users_delete_does_not_cut_a_streamed_read(tmp_path):
    """reviewx38, two processes on one store (`sync_seconds`): replica b's DELETE of bob removes the versions from
    before its purge `sync_seconds` + READ_MARGIN_S later, the one replica a's read of ann is on among them. The
    read goes on from the newest version; a DELETE of ann herself still stops it (DeletedMeanwhile), unnoted."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0.2)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0.2)
    for i in range(3):
        a.add_preferences(*prefs("t", "ann", 20, start=100 * i))
        a.add_preferences(*prefs("t", "bob", 5, start=100 * i))
    time.sleep(0.3)
    want = [p.pref_id for p in a.preferences_for("t", "ann")[0]]
    rows = a.preferences_in_order("t", "ann", rows_per_read=7)
    got = [next(rows).pref_id]
    b.delete_user("t", "bob")
    got += [p.pref_id for p in rows]
    assert got == want and a.problems.recent() == []
    rows = a.preferences_in_order("t", "ann", rows_per_read=7)
    next(rows)
    b.delete_user("t", "ann")
    with pytest.raises(DeletedMeanwhile):
        list(rows)
    assert a.problems.recent() == []
