"""Session 49: one tenant's backlog of feedback is bounded, and the dead letters keep only what is a record's own fault.
Over HTTP with the real app (one service for the module, its bound on a tenant's waiting rows set low), a real
LanceDB folder and a real feedback log."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator

import httpx
import msgspec
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog, TenantBacklog
from pluralign.store.ingest import Ingestor
from pluralign.store.tables import RowRefused
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_feedback_log import DIM, HashEncoder, feedback
from tests.service.tiny import start_service
from tests.stores import WorkerWaits, ingesting, records_alone_at_the_bound_are_set_aside, wait_for

BOUND = 3  # rows of one tenant that may wait in the feedback log (setting tenant_feedback_backlog_rows)


def comparison(user: str, i: int) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Question {i} of {user}?", "chosen": f"Short answer {i}.",
            "rejected": f"A long and rambling answer number {i}."}


def import_body(user: str, n: int, start: int = 0) -> bytes:
    return b"\n".join(msgspec.json.encode({k: v for k, v in comparison(user, i).items() if k not in ("type", "user")})
                      for i in range(start, start + n))


REFUSED = "UNREADABLE-BY-THE-ENCODER"  # a text holding it is refused by the module's encoder (`Picky`)
NOT_FINITE = "EMBEDDED-AS-NAN"  # and one holding this is embedded as NaN


class Picky:
    """The real encoder, but for a text holding REFUSED (a ValueError, as a tokenizer or a remote encoder may refuse
    one) and one holding NOT_FINITE (embedded as NaN, as a model that overflows on a text): what session 50's tests of
    the rows set aside send in an import."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.watched: str | None = None  # a text holding it is counted, by the thread that embeds it (`watched_texts`)
        self.watched_texts: list[str] = []  # the names of the threads that embedded each such text, once a text each time

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, texts):
        texts = list(texts)
        if self.watched is not None:
            self.watched_texts += [threading.current_thread().name for t in texts if self.watched in t]
        if any(REFUSED in t for t in texts):
            raise ValueError("a text this encoder cannot read")
        vectors = np.array(self.encoder.encode(texts), np.float32)
        vectors[[NOT_FINITE in t for t in texts]] = np.nan
        return vectors


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, Picky(minilm), admin_handlers=ADMIN_HANDLERS,
                                    deletion_sweep_s=3600, tenant_feedback_backlog_rows=BOUND)
    with server:
        yield service


def refused_total(svc) -> float:
    with svc.client("acme") as c:
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    family = families.get("pluralign_feedback_refused")
    return sum(s.value for s in family.samples if s.labels.get("reason") == "feedback_backlog") if family else 0.0


def test_the_log_refuses_a_tenant_past_its_bound_and_takes_it_again_once_moved(tmp_path):
    """The library's bound: a tenant with rows waiting is refused past it (nothing written), another tenant is not, a
    tenant with none waiting may append one record larger than the bound, and rows done free the room."""
    log = FeedbackLog(tmp_path, tenant_rows=3)
    try:
        first = log.append(feedback("ann", 0, tenant="a", n=2))
        log.append(feedback("ann", 1, tenant="a"))
        with pytest.raises(TenantBacklog) as refused:
            log.append(feedback("ann", 2, tenant="a"))
        assert (refused.value.tenant, refused.value.rows, refused.value.adding, refused.value.limit) == ("a", 3, 1, 3)
        assert log.backlog() == (2, 3) and log.tenant_backlog("a") == 3
        log.append(feedback("bob", 0, tenant="b", n=5))  # alone and larger than the bound: taken
        with pytest.raises(TenantBacklog):
            log.append(feedback("bob", 1, tenant="b"))
        log.done([first])
        assert log.tenant_backlog("a") == 1
        log.append(feedback("ann", 2, tenant="a", n=2))
        log.append(feedback("ann", 3, tenant="a"), bounded=False)  # rows acknowledged already (a dead letter put back)
        assert log.tenant_backlog("a") == 4 and log.tenant_backlog("b") == 5
    finally:
        log.close()
    # replayed: counted again (the record done is still in the segment being written: the Ingestor's start drops
    # what of the replay the table holds, `_drop_already_moved`)
    assert FeedbackLog(tmp_path, tenant_rows=3).tenant_backlog("a") == 6


def test_a_flooding_tenant_gets_503_while_another_tenants_feedback_is_stored(svc):
    """acme's user `flood` is held in the log (`Ingestor.held`: as a worker that has not reached acme's rows yet), so
    acme's backlog stays at the bound: its next feedback and its import are refused, 503 `feedback_backlog` with
    Retry-After, counted in /metrics, and nothing of them is stored; globex's feedback meanwhile is acknowledged and
    reaches the table. Once acme's backlog is moved, acme's feedback is taken again. Before the bound, every post of
    acme was acknowledged and kept in memory and in the log, and every tenant's feedback waited behind it."""
    rt = svc.runtime
    before = refused_total(svc)
    with svc.client("acme") as acme, svc.client("globex") as globex:
        with rt.ingest.held("acme", "flood"):
            for i in range(BOUND):
                assert acme.post("/v1/feedback", json=comparison("flood", i)).status_code == 201
            r = acme.post("/v1/feedback", json=comparison("flood", BOUND))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "feedback_backlog" and r.headers["Retry-After"].isdigit(), r.text
            assert f"{BOUND} feedback rows waiting" in r.json()["error"]["message"], r.text
            imported = acme.post("/v1/users/other/import", content=import_body("other", 2))
            assert imported.status_code == 503 and imported.json()["error"]["code"] == "feedback_backlog", imported.text
            assert rt.ingest.log.tenant_backlog("acme") == BOUND
            for burst in range(2):  # another tenant: taken, and stored by the worker meanwhile (a burst at its own bound)
                for i in range(burst * BOUND, (burst + 1) * BOUND):
                    assert globex.post("/v1/feedback", json=comparison("calm", i)).status_code == 201
                wait_for(lambda: rt.ingest.log.tenant_backlog("globex") == 0)  # its rows stored, out of the log
                assert rt.store.count_preferences("globex", "calm") == (burst + 1) * BOUND
            assert rt.store.count_preferences("acme", "flood") == 0
            assert refused_total(svc) == before + 2
        wait_for(lambda: rt.ingest.log.tenant_backlog("acme") == 0)  # moved once no longer held
        assert acme.post("/v1/feedback", json=comparison("flood", BOUND)).status_code == 201
        wait_for(lambda: rt.store.count_preferences("acme", "flood") == BOUND + 1)
        assert rt.store.count_preferences("acme", "other") == 0


class FailingFirst:
    """Raises `error` on the first `times` calls of `call`, then calls it: a store or an encoder failing for a while."""

    def __init__(self, call, times: int, error: Exception):
        self.call, self.left, self.error, self.calls = call, times, error, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return self.call(*args, **kwargs)


def test_a_store_failure_that_is_not_the_records_is_retried_not_set_aside(tmp_path, quick_retries):
    """A quiet service's one record (a batch of one) meets a ValueError of the store's that names no row, five times
    in a row: it is retried with backoff and stored once the store works again, never set aside. Until session 49
    any ValueError or TypeError counted as the record's, and the good record was a dead letter after three tries."""
    store = Store(str(tmp_path / "db"), "hash", DIM)
    store._append = failing = FailingFirst(store._append, 5, ValueError("lance error: a commit conflict (injected)"))
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder(), tries=3)
    try:
        ingest.submit(feedback("ann", 0, tenant="t1", n=2))
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=60.0)
        assert store.count_preferences("t1", "ann") == 2
        assert failing.calls == 6 and ingest.set_aside == 0 and ingest.dead_letters.names() == []
    finally:
        ingest.close()


def test_an_encoder_failing_for_every_text_sets_nothing_aside(tmp_path, quick_retries):
    """The encoder raises a ValueError for every text for a while (its model not loaded, a device error): the record is
    retried, not set aside, and stored once the encoder works again."""
    encoder = HashEncoder()
    encoder.encode = FailingFirst(encoder.encode, 20, ValueError("the model is not loaded (injected)"))
    with ingesting(tmp_path, encoder, tries=3) as (store, ingest):
        ingest.submit(feedback("ann", 0, tenant="t1"))
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=60.0)
        assert store.count_preferences("t1", "ann") == 1 and ingest.set_aside == 0 and ingest.dead_letters.names() == []


class PickyEncoder(HashEncoder):
    """Refuses any text holding "\x7f" (as a tokenizer may refuse a text): what a damaged or older log may hold."""

    def encode(self, texts):
        if any("\x7f" in t for t in texts):
            raise ValueError("a text this encoder cannot read")
        return super().encode(texts)


def test_a_text_the_encoder_refuses_is_set_aside_and_the_rest_stored(tmp_path, quick_retries):
    """A record whose text the encoder refuses while it embeds another text (`PROBE_TEXT`) is its own fault
    (`TextRefused`): set aside after three tries, the other tenant's record stored."""
    records = [[msgspec.structs.replace(r, prompt="broken \x7f text") for r in feedback("ann", 0, tenant="t1")],
               feedback("bob", 0, tenant="t2")]
    with ingesting(tmp_path, PickyEncoder(), records, tries=3) as (store, ingest):
        wait_for(lambda: ingest.set_aside == 1, timeout=60.0)
        assert store.count_preferences("t2", "bob") == 1 and store.count_preferences("t1", "ann") == 0
        [name] = ingest.dead_letters.names()
        assert "refused a text" in ingest.dead_letters.read(name).error


def test_the_store_names_a_row_arrow_cannot_hold(tmp_path):
    """`Store.add_preferences` refuses a row whose text Arrow cannot hold with RowRefused naming it (its position),
    nothing written: the store's own word that the row, not the store, is at fault."""
    store = Store(str(tmp_path / "db"), "hash", DIM)
    rows = feedback("ann", 0, tenant="t1", n=3)
    rows[1] = msgspec.structs.replace(rows[1], chosen="lone \udfff surrogate", received_at=time.time())
    rows = [msgspec.structs.replace(r, received_at=time.time()) for r in rows]
    vectors = np.ones((3, DIM), np.float32)
    with pytest.raises(RowRefused) as refused:
        store.add_preferences(rows, vectors, vectors, vectors)
    assert refused.value.index == 1 and "row 1" in str(refused.value)
    assert store.count_preferences("t1", "ann") == 0


def test_one_bad_row_of_an_import_record_sets_aside_that_row_only(tmp_path, quick_retries):
    """An import's record of 6 rows in the log, rows 2 and 5 with a time that is not finite (a damaged log or an older
    release's: the import route refuses them): once it failed three times, its 4 good rows are stored and only rows 2
    and 5 are set aside, the letter naming their positions. Until session 49 the whole record (up to 8,000 rows) was."""
    rows = feedback("ann", 0, tenant="t1", n=6)
    rows[1] = msgspec.structs.replace(rows[1], created_at=float("nan"))
    rows[4] = msgspec.structs.replace(rows[4], created_at=float("inf"))
    with ingesting(tmp_path, HashEncoder(), [rows], tries=3) as (store, ingest):
        wait_for(lambda: ingest.set_aside == 2 and ingest.log.backlog() == (0, 0), timeout=60.0)
        stored = sorted(r.pref_id for r in store.stored_rows("t1", "ann"))
        assert stored == sorted(rows[i].pref_id for i in (0, 2, 3, 5))
        [name] = ingest.dead_letters.names()
        letter = ingest.dead_letters.read(name)
        assert [r.pref_id for r in letter.rows] == [rows[1].pref_id, rows[4].pref_id] and letter.row_numbers == [2, 5]
        assert "created_at" in letter.error and "row 1" in letter.error and "row 4" in letter.error
        assert ingest.forget_user("t1", "ann") == 2 and ingest.dead_letters.names() == []  # the 2 rows set aside went


def put_letters(rt, tenant: str, user: str, n: int, at: float) -> list[str]:
    """`n` dead letters of `user`'s rows (as the worker writes them: `DeadLetters.put`), set aside 1 s apart from `at`."""
    names = []
    for i in range(n):
        rows = [msgspec.structs.replace(r, created_at=float("nan"), received_at=at) for r in feedback(user, i, tenant=tenant)]
        names.append(rt.ingest.dead_letters.put(rows, f"RowRefused: `created_at` of row 0 is not finite ({i})", 3, at + i))
    return names


def test_the_dead_letter_list_pages_and_filters_by_tenant(svc):
    """GET /admin/feedback/dead-letter pages by `limit` and `after` (each page's `next`), oldest first, and `tenant`
    keeps that tenant's letters only; `rows` counts every letter listed; the parameters are in the OpenAPI schema, and
    a cursor the list did not write or a tenant name no tenant can have is a 400 naming it. Before: every letter of
    every tenant in one answer, and `limit`, `after` and `tenant` a 400 as unknown parameters."""
    rt = svc.runtime
    acme = put_letters(rt, "acme", "lettered", 3, 1_000.0)
    globex = put_letters(rt, "globex", "lettered", 2, 1_000.5)
    try:
        with svc.client("admin") as admin:
            pages, after = [], None
            while True:
                r = admin.get("/admin/feedback/dead-letter", params={"limit": 2, **({"after": after} if after else {})})
                assert r.status_code == 200, r.text
                pages.append([x["name"] for x in r.json()["letters"]])
                assert r.json()["rows"] == 5
                if (after := r.json()["next"]) is None:
                    break
            assert pages == [[acme[0], globex[0]], [acme[1], globex[1]], [acme[2]]]
            r = admin.get("/admin/feedback/dead-letter", params={"tenant": "acme", "limit": 2})
            assert [x["name"] for x in r.json()["letters"]] == acme[:2] and r.json()["rows"] == 3
            r = admin.get("/admin/feedback/dead-letter", params={"tenant": "acme", "limit": 2, "after": r.json()["next"]})
            assert [x["name"] for x in r.json()["letters"]] == acme[2:] and r.json()["next"] is None
            assert all(x["tenant"] == "acme" for x in r.json()["letters"])
            for params, field in (({"after": "nonsense"}, "after"), ({"tenant": "no/such"}, "tenant")):
                r = admin.get("/admin/feedback/dead-letter", params=params)
                assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
            schema = admin.get("/schema/openapi.json").json()
            declared = {p.get("name") for p in schema["paths"]["/admin/feedback/dead-letter"]["get"]["parameters"]}
            assert {"tenant", "after", "limit"} <= declared
    finally:
        for name in acme + globex:
            rt.ingest.dead_letters.discard(name)


def test_letters_set_aside_at_no_finite_time_are_paged_as_set_aside_at_0(svc):
    """Letters whose `set_aside_at` is NaN or inf (a hand-edited or damaged letter, an older release's) are ordered as
    if set aside at 0, then by name: paged one at a time, every letter of the tenant is listed once, in that order, and
    every `next` is a cursor the list takes. Before (dletters50), a NaN letter's cursor (`nan~...`) was a 400 naming
    `after`, so the letters after it could not be reached, and NaN broke the sort of the whole list."""
    import math

    rt = svc.runtime
    rows = feedback("nanuser", 0, tenant="nanco")
    names = [rt.ingest.dead_letters.put([msgspec.structs.replace(rows[0], pref_id=f"nan-{i}")], "RowRefused: then", 3, at)
             for i, at in enumerate((5.0, float("nan"), 1.0, float("inf")))]
    try:
        with svc.client("admin") as admin:
            listed, after = [], None
            for _ in range(6):
                r = admin.get("/admin/feedback/dead-letter", params={"tenant": "nanco", "limit": 1, **({"after": after} if after else {})})
                assert r.status_code == 200, r.text
                listed += [x["name"] for x in r.json()["letters"]]
                if (after := r.json()["next"]) is None:
                    break
            assert listed == [*sorted([names[1], names[3]]), names[2], names[0]], listed
            r = admin.get("/admin/feedback/dead-letter", params={"tenant": "nanco", "limit": 2, "after": f"0.0~{min(names[1], names[3])}"})
            assert [x["name"] for x in r.json()["letters"]] == [max(names[1], names[3]), names[2]]
            shown = {x["name"]: x["set_aside_at"] for x in r.json()["letters"]}
            assert shown[names[2]] == 1.0 and (shown[max(names[1], names[3])] is None or math.isinf(shown[max(names[1], names[3])]))
    finally:
        for name in names:
            rt.ingest.dead_letters.discard(name)


def test_a_users_export_holds_their_rows_set_aside_marked_not_learned_from(svc):
    """GET /v1/users/{id}/export (format all): the user's stored preference and, after it, their rows set aside as a
    dead letter, each a `preference` line with `learned_from: false` and `set_aside` naming the letter and its error;
    another user's letter is not in it. A user whose only rows are set aside has an export (200, not 404). Before:
    the rows set aside were left out, and such a user was a 404."""
    rt = svc.runtime
    with svc.client("acme") as acme:
        assert acme.post("/v1/feedback", json=comparison("dana", 0)).status_code == 201
        [mine] = put_letters(rt, "acme", "dana", 1, 2_000.0)
        [other] = put_letters(rt, "acme", "erin", 1, 2_000.0)
        try:
            r = acme.get("/v1/users/dana/export")
            assert r.status_code == 200, r.text
            lines = [msgspec.json.decode(line) for line in r.content.splitlines()]
            stored = [x for x in lines if x["type"] == "preference" and "learned_from" not in x]
            set_aside = [x for x in lines if x.get("learned_from") is False]
            assert len(stored) == 1 and stored[0]["prompt"] == "Question 0 of dana?"
            assert [x["pref_id"] for x in set_aside] == ["acme-dana-0-0"] and set_aside[0]["created_at"] is None
            assert set_aside[0]["set_aside"]["letter"] == mine and "created_at" in set_aside[0]["set_aside"]["error"]
            r = acme.get("/v1/users/erin/export")
            assert r.status_code == 200, r.text
            assert [msgspec.json.decode(line)["pref_id"] for line in r.content.splitlines()] == ["acme-erin-0-0"]
            assert acme.head("/v1/users/erin/export").status_code == 200
        finally:
            rt.ingest.dead_letters.discard(mine)
            rt.ingest.dead_letters.discard(other)


def test_an_import_sent_again_while_its_rows_wait_is_refused_past_the_bound(svc):
    """An import whose rows carry their ids (an export's preference file), sent again while those rows still wait in
    the log: each resend logs a copy of every held row (received again), so it counts against the tenant's bound as
    new rows do. Past it the resend is 503 `feedback_backlog` and nothing of it is logged; once the rows are moved it
    is answered `already_stored`. Before, `_claim_and_log` asked for room only for new rows: every resend of the same
    file was acknowledged and logged another copy of all its rows, and one tenant's backlog grew without bound."""
    rt = svc.runtime
    body = b"\n".join(msgspec.json.encode({**{k: v for k, v in comparison("again", i).items() if k not in ("type", "user")},
                                           "pref_id": f"again-{i}"}) for i in range(BOUND))
    wait_for(lambda: rt.ingest.log.tenant_backlog("globex") == 0)
    with svc.client("globex") as globex:
        with rt.ingest.held("globex", "again"):
            first = globex.post("/v1/users/again/import", content=body)
            assert first.status_code == 201 and len(first.json()["stored"]) == BOUND, first.text
            for _ in range(3):
                r = globex.post("/v1/users/again/import", content=body)
                assert r.status_code == 503 and r.json()["error"]["code"] == "feedback_backlog", r.text
            assert rt.ingest.log.tenant_backlog("globex") == BOUND
        wait_for(lambda: rt.ingest.log.tenant_backlog("globex") == 0)
        r = globex.post("/v1/users/again/import", content=body)
        assert r.status_code == 201 and sorted(r.json()["already_stored"]) == [f"again-{i}" for i in range(BOUND)], r.text
        assert rt.store.count_preferences("globex", "again") == BOUND


def test_the_cli_import_waits_out_a_tenants_backlog_rather_than_giving_up(svc, tmp_path, capsys, monkeypatch):
    """`pluralign data import` of two users while the first one's rows wait in the log (held, as behind a slow
    worker): the second user's chunk is 503 `feedback_backlog` until they are moved, and the command sends it again
    until it is taken (the service's Retry-After shortened to 0.1 s here; 1-60 s in service). Before, a 503 counted as
    any other: after 5 retries (~25 s at Retry-After 5) the command failed, so a file larger than the tenant's bound
    (50,000 rows by default) could not be imported against a worker slower than it (~70 rows/s on a CPU)."""
    from service import errors
    from tests.unit.clitools import cli, write_jsonl

    monkeypatch.setattr(errors, "BACKLOG_RETRY_AFTER", 0.1)
    monkeypatch.setattr(errors, "BACKLOG_RETRY_AFTER_RANGE", (0.1, 0.1))  # measured or not (session 50)
    rt = svc.runtime
    rows = [{**{k: v for k, v in comparison(user, i).items() if k not in ("type", "user")}, "user_id": user}
            for user in ("cli-first", "cli-second") for i in range(BOUND)]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    wait_for(lambda: rt.ingest.log.tenant_backlog("acme") == 0)
    hold = rt.ingest.held("acme", "cli-first")
    hold.__enter__()
    release = threading.Timer(0.8, hold.__exit__, (None, None, None))
    release.start()
    try:
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", path, "--url", svc.url,
                             "--key", svc.keys["acme"])
    finally:
        release.join()
    assert code == 0, err
    assert "still storing this tenant's earlier feedback" in err and err.count("waiting for it") == 1, err
    assert json.loads(out.strip().splitlines()[-1])["stored"] == 2 * BOUND
    wait_for(lambda: rt.store.count_preferences("acme", "cli-second") == BOUND)


@pytest.mark.parametrize("bad", [[1], [0, 1, 2]], ids=["one-row-of-three", "the-whole-record"])
def test_a_record_set_aside_is_not_replayed_at_the_next_start(tmp_path, quick_retries, bad):
    """A record set aside (some of its rows, or all) leaves the log's files too, not only what is pending: the next
    start (a deploy, not a crash) does not replay it, so a letter an admin discarded does not come back, and the rows
    of it that were stored are not logged and received again. Before, `done` left the record in its segment (the one
    being written, or one holding other feedback still waiting), and every start set it aside again."""
    log = FeedbackLog(tmp_path / "log")
    rows = feedback("ann", 0, tenant="t1", n=3)
    for i in bad:
        rows[i] = msgspec.structs.replace(rows[i], created_at=float("nan"))
    log.append(rows)
    log.append(feedback("bob", 0, tenant="t2"))  # still waiting at the stop: its segment stays
    log.close()
    store = Store(str(tmp_path / "db"), "hash", DIM)
    # its worker begins once bob is held: until the review of session 49 the worker, started by the Ingestor, could
    # move bob's record before the test held it (seen in CI under load), and his segment was gone
    ingest = WorkerWaits(FeedbackLog(tmp_path / "log"), store, HashEncoder(), tries=3)
    try:
        with ingest.held("t2", "bob"):  # as a user whose DELETE is under way, or a worker that has not reached it
            ingest.begin.set()
            wait_for(lambda: ingest.set_aside == len(bad) and ingest.log.backlog() == (1, 1), timeout=60.0)
            [name] = ingest.dead_letters.names()
            assert ingest.dead_letters.discard(name)
    finally:
        ingest.close()
    # what the start replayed, read before its worker may move bob's record (until session 50 it could, under load)
    again = WorkerWaits(FeedbackLog(tmp_path / "log"), store, HashEncoder(), tries=3)
    try:
        assert [e.key for e in again.log.pending.values()] == [("t2", "bob")]  # the record set aside is not replayed
        again.begin.set()
        wait_for(lambda: again.log.backlog() == (0, 0), timeout=60.0)
        assert again.dead_letters.names() == [] and again.set_aside == 0
        assert store.count_preferences("t1", "ann") == 3 - len(bad) and store.count_preferences("t2", "bob") == 1
    finally:
        again.close()


def test_a_tenants_refused_records_alone_in_the_log_do_not_hold_it_at_its_bound(tmp_path, quick_retries):
    """Two records of one tenant whose rows the store refuses for their own content (a blank time: a damaged log),
    alone in the log and at the tenant's bound: they are set aside after their tries, and the tenant's feedback is
    taken again. Before, a batch whose every record failed on its own was passed over, counted only once other
    feedback was stored: nothing else could be (the tenant's was refused for its backlog, which those rows filled),
    so a deployment of one tenant answered it 503 `feedback_backlog` for good."""
    # the tenant at its bound before its worker may set the records aside (until session 50 it could, under load)
    records_alone_at_the_bound_are_set_aside(
        tmp_path, [[msgspec.structs.replace(r, created_at=float("nan")) for r in feedback(f"u{i}", 0, tenant="t1", n=2)]
                   for i in range(2)], HashEncoder())


@pytest.mark.parametrize("marker", [REFUSED, NOT_FINITE], ids=["a-text-the-encoder-refuses", "a-vector-not-finite"])
def test_an_imports_row_the_encoder_fails_on_is_set_aside_alone(svc, quick_retries, marker):
    """An import of 4 rows whose 3rd has a `chosen` the encoder refuses (a ValueError while it embeds other texts), or
    embeds as NaN: once the record failed its tries, its 3 other rows are stored and the 3rd alone is set aside, its
    letter naming its line (3) and why; the export shows 3 stored rows and the one set aside. Until session 50 only the
    store's row refusals were split by row: the whole import (8,000 rows at most) was one dead letter."""
    rt = svc.runtime
    user = f"picky-{len(marker)}"
    rows = [{k: v for k, v in comparison(user, i).items() if k not in ("type", "user")} for i in range(4)]
    rows[2]["chosen"] = f"An answer the encoder fails on: {marker}."
    wait_for(lambda: rt.ingest.log.tenant_backlog("acme") == 0, timeout=60.0)
    with svc.client("acme") as acme:
        r = acme.post(f"/v1/users/{user}/import", content=b"\n".join(msgspec.json.encode(row) for row in rows))
        assert r.status_code == 201, r.text
        wait_for(lambda: not rt.ingest.log.pending_for("acme", user) and rt.ingest.dead_letters.rows_of("acme", user),
                 timeout=60.0)
        [(name, letter)] = rt.ingest.dead_letters.rows_of("acme", user)
        try:
            assert [r.chosen for r in letter.rows] == [rows[2]["chosen"]] and letter.row_numbers == [3], letter
            assert "row 2" in letter.error and "chosen" in letter.error, letter.error
            assert rt.store.count_preferences("acme", user) == 3
            lines = [msgspec.json.decode(line) for line in acme.get(f"/v1/users/{user}/export").content.splitlines()]
            assert sum(x["type"] == "preference" and "learned_from" not in x for x in lines) == 3
            assert [x["chosen"] for x in lines if x.get("learned_from") is False] == [rows[2]["chosen"]]
        finally:
            rt.ingest.dead_letters.discard(name)


def test_a_user_whose_only_rows_are_set_aside_has_a_profile_that_learned_nothing(svc):
    """A user whose only rows are set aside as a dead letter: the profile is 200, as the export, and says what the user
    model knows: the population's prior, no comparison learned, `counts.set_aside` their rows set aside, and a sentence
    saying they are not learned from. Once the letter is discarded the user is a 404 again. Before, the profile was a
    404 while the export of the same user was a 200."""
    rt = svc.runtime
    [name] = put_letters(rt, "acme", "aside-only", 1, 3_000.0)
    try:
        with svc.client("acme") as acme:
            r = acme.get("/v1/users/aside-only")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["counts"] == {"preferences": 0, "interactions": 0, "set_aside": 1}, body
            assert body["pal"]["prior"] is True and body["summary"]["comparisons"] == 0 and body["user_model"] is None
            assert "1 row set aside" in body["summary"]["sentences"][-1], body["summary"]["sentences"]
            assert acme.get("/v1/users/aside-only/export").status_code == 200
            assert acme.get("/v1/users/aside-only/preferences").json()["total"] == 0
    finally:
        rt.ingest.dead_letters.discard(name)
    with svc.client("acme") as acme:
        assert acme.get("/v1/users/aside-only").status_code == 404
        assert acme.get("/v1/users/aside-only/export").status_code == 404


@contextlib.contextmanager
def tenant_measured(svc, tenant: str) -> Iterator[httpx.Client]:
    """A client of the fresh tenant `tenant` (its key issued here) two of whose rows were stored one by one, so that its
    drain rate is measured and under 2.85 rows/s: 1 row after the first over more than 0.35 s, so 3 rows take more than
    1 s to drain and 1 row a third of that (their `Retry-After` ceilings differ)."""
    rt = svc.runtime
    svc.keys[tenant] = rt.keys.issue(tenant)
    with svc.client(tenant) as c:
        for i in range(2):
            assert c.post("/v1/feedback", json=comparison("steady", i)).status_code == 201
            wait_for(lambda: rt.ingest.log.tenant_backlog(tenant) == 0, timeout=60.0)
        wait_for(lambda: rt.ingest.log.drain_rate(tenant) < 2.85, timeout=60.0)
        yield c


def test_retry_after_of_a_tenants_backlog_grows_with_what_must_drain(svc):
    """A fresh tenant whose rows were stored one by one (its drain rate measured, under 2.85 rows/s once 0.35 s passed),
    then held at its bound of 3: a feedback of 1 row is told a shorter `Retry-After` than an import of 400 rows (which
    waits for all 3 waiting rows to go), each the seconds those rows take to drain at that rate (1 to 60 s), the message
    naming the rate. Before, both were told 5 s, whatever the backlog and the rate."""
    rt = svc.runtime
    with tenant_measured(svc, "drain50") as c:
        with rt.ingest.held("drain50", "slow"):
            for i in range(BOUND):
                assert c.post("/v1/feedback", json=comparison("slow", i)).status_code == 201
            one = c.post("/v1/feedback", json=comparison("slow", BOUND))
            before = rt.ingest.log.drain.rate("drain50")  # falls as time passes with none of its rows leaving
            many = c.post("/v1/users/slow/import", content=import_body("slow", 400))
            after = rt.ingest.log.drain.rate("drain50")
    for r in (one, many):
        assert r.status_code == 503 and r.json()["error"]["code"] == "feedback_backlog", r.text
        assert "rows/s lately" in r.json()["error"]["message"], r.text
    short, long = float(one.headers["Retry-After"]), float(many.headers["Retry-After"])
    assert 1 <= short < long <= 60, (short, long, before, after)
    assert min(60, math.ceil(BOUND / before)) <= long <= min(60, math.ceil(BOUND / after)), (long, before, after)
    wait_for(lambda: rt.ingest.log.tenant_backlog("drain50") == 0, timeout=60.0)


def test_a_delete_of_a_user_whose_rows_are_set_aside_counts_them(svc):
    """DELETE /v1/users/{id} of a user whose only rows are set aside as a dead letter (their profile and export a 200):
    a 200 whose `deleted.preferences` counts those rows, and the letter is gone; a user with a stored row and a row set
    aside has both counted. Before (review of session 50), the rows went but the DELETE said 404 "no user" (their rows
    were counted only where the table or the feedback log held them), and a user with both was told 1 row."""
    rt = svc.runtime
    put_letters(rt, "acme", "aside-deleted", 2, time.time())
    put_letters(rt, "acme", "aside-and-stored", 1, time.time())
    with svc.client("acme") as acme:
        assert acme.get("/v1/users/aside-deleted").status_code == 200
        r = acme.delete("/v1/users/aside-deleted")
        assert r.status_code == 200, r.text
        assert r.json()["deleted"]["preferences"] == 2, r.json()
        assert not rt.ingest.dead_letters.holds("acme", "aside-deleted")
        assert acme.get("/v1/users/aside-deleted").status_code == 404
        assert acme.post("/v1/feedback", json=comparison("aside-and-stored", 0)).status_code == 201
        assert acme.get("/v1/users/aside-and-stored").json()["counts"] == {"preferences": 1, "interactions": 0, "set_aside": 1}
        r = acme.delete("/v1/users/aside-and-stored")
        assert r.status_code == 200 and r.json()["deleted"]["preferences"] == 2, r.text
        assert acme.delete("/v1/users/aside-deleted").status_code == 404  # nothing left of them


def test_a_text_the_encoder_refuses_costs_no_second_pass_of_its_import(svc, quick_retries):
    """An import of 20 rows (60 distinct texts) whose 11th `chosen` the encoder refuses: its 19 other rows are stored
    and the 11th set aside, and every text of the import is embedded by the worker's low-priority thread
    (`ingest-embed`, at `nice`), at most five times each over the record's three tries: once, the halving that finds
    the text refused (about three times over: 60 + 2 x (30 + 15 + ...)), and for each try after the first only the
    refused text. Before (session 50), each try embedded the whole record again (and halved it), the move embedded it
    once more at normal priority once the refusal was found, the last try a third time at normal priority to find its
    rows, and the move of its 19 good rows, logged again, once more: 949 texts embedded, 178 of them by the worker's
    own thread, against 244 (none) now."""
    rt = svc.runtime
    encoder = rt.ingest.encoder
    user, tag = "refused-once", "[t51]"
    rows = [{"prompt": f"Question {i} {tag}?", "chosen": f"Answer {i} {tag}.", "rejected": f"Rambling {i} {tag}."}
            for i in range(20)]
    rows[10]["chosen"] = f"An answer the encoder refuses {tag}: {REFUSED}."
    wait_for(lambda: rt.ingest.log.tenant_backlog("acme") == 0, timeout=60.0)
    encoder.watched, encoder.watched_texts = tag, []
    try:
        with svc.client("acme") as acme:
            r = acme.post(f"/v1/users/{user}/import", content=b"\n".join(msgspec.json.encode(row) for row in rows))
            assert r.status_code == 201, r.text
        wait_for(lambda: not rt.ingest.log.pending_for("acme", user) and rt.ingest.dead_letters.rows_of("acme", user),
                 timeout=60.0)
        embedded = list(encoder.watched_texts)
    finally:
        encoder.watched = None
    [(name, letter)] = rt.ingest.dead_letters.rows_of("acme", user)
    rt.ingest.dead_letters.discard(name)
    assert letter.row_numbers == [11] and rt.store.count_preferences("acme", user) == 19
    by_thread = {thread: embedded.count(thread) for thread in set(embedded)}
    assert set(by_thread) == {"ingest-embed"}, by_thread  # the worker's low-priority thread only
    assert len(embedded) <= 5 * 60, by_thread


def test_a_delete_during_a_backlog_does_not_count_in_its_drain_rate(svc):
    """A fresh tenant whose rows were stored one by one (its drain rate measured, under 2.85 rows/s), then an import of
    400 rows of a user whose rows stay in the log (`held`), deleted while they wait (DELETE /v1/users/{id}): its 400 rows
    leave the log, not through the worker, and the rate stays what the stored rows make it; once held at its bound of 3,
    an import is told the seconds those 3 rows take at that rate (2 s at least), the message naming it. Before, the
    DELETE's rows counted as drained: 400 rows in well under a second made the rate hundreds of rows a second and
    the wait 1 s."""
    rt = svc.runtime
    with tenant_measured(svc, "delete51") as c:
        with rt.ingest.held("delete51", "gone"):
            assert c.post("/v1/users/gone/import", content=import_body("gone", 400)).status_code == 201
            assert rt.ingest.log.tenant_backlog("delete51") == 400
            before = rt.ingest.log.drain.rate("delete51")
            r = c.delete("/v1/users/gone")
            assert r.status_code == 200 and r.json()["deleted"]["preferences"] == 400, r.text
            after = rt.ingest.log.drain.rate("delete51")
        assert rt.ingest.log.tenant_backlog("delete51") == 0
        assert after is not None and after <= before < 2.85, (before, after)  # it only falls as time passes
        with rt.ingest.held("delete51", "slow"):
            for i in range(BOUND):
                assert c.post("/v1/feedback", json=comparison("slow", i)).status_code == 201
            many = c.post("/v1/users/slow/import", content=import_body("slow", 400))
    assert many.status_code == 503 and many.json()["error"]["code"] == "feedback_backlog", many.text
    rate = float(many.json()["error"]["message"].split("stored at ~")[1].split(" rows/s")[0])
    assert rate <= before and float(many.headers["Retry-After"]) >= 2, (many.text, many.headers["Retry-After"], before)
    wait_for(lambda: rt.ingest.log.tenant_backlog("delete51") == 0, timeout=60.0)


def test_an_audit_refused_for_feedback_still_moving_is_told_its_drain_time(svc):
    """GET /admin/audits/fairness of a fresh tenant whose rows were stored one by one (its drain rate measured, under
    2.85 rows/s), while 3 more of its rows wait behind the worker (`Ingestor.paused`, as a long batch): with `wait` 0
    the answer is the 503 `feedback_backlog` naming the rate, its `Retry-After` the seconds those 3 rows take at that
    rate (2 s at least, as a refused feedback's). Before, it was always 5 s, whatever the backlog and the rate."""
    rt = svc.runtime
    with tenant_measured(svc, "audit51") as c, svc.client("admin") as admin:
        with rt.ingest.paused():
            for i in range(3):
                assert c.post("/v1/feedback", json=comparison("waiting", i)).status_code == 201
            before = rt.ingest.log.drain_rate("audit51")
            r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "audit51", "wait": 0})
            after = rt.ingest.log.drain_rate("audit51")
    assert r.status_code == 503 and r.json()["error"]["code"] == "feedback_backlog", r.text
    assert "rows/s lately" in r.json()["error"]["message"], r.text
    assert 2 <= math.ceil(3 / before) <= float(r.headers["Retry-After"]) <= min(60, math.ceil(3 / after)), (r.headers, before, after)
    wait_for(lambda: rt.ingest.log.tenant_backlog("audit51") == 0, timeout=60.0)


def test_a_removal_of_a_tenant_that_shows_nowhere_is_a_404_unless_asked_even_if_unseen(svc):
    """POST /admin/tenants/{t}/removal of a mistyped name (no key, no removal before, nothing stored, waiting or set
    aside): 404 `tenant_unseen` naming it (`param: tenant`), nothing recorded (its GET is a 404); with
    `even_if_unseen=true` it begins (202) and ends `done`, as the CLI's `tenants remove --even-if-unseen`. A tenant
    whose only trace is a row this service set aside (a dead letter) is no typo: its removal begins without it, and
    the letter goes. Before, the route began a removal of any name: `done`, found nothing, read as the tenant removed."""
    from tests.service.test_tenant48_removal import wait_removed

    rt = svc.runtime
    [name] = put_letters(rt, "aside51", "ann", 1, time.time())
    with svc.client("admin") as admin:
        r = admin.post("/admin/tenants/acmee/removal")
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("tenant_unseen", "tenant") and "'acmee'" in error["message"], error
        assert "even_if_unseen=true" in error["message"], error
        assert admin.get("/admin/tenants/acmee/removal").status_code == 404  # nothing recorded
        r = admin.post("/admin/tenants/acmee/removal", params={"even_if_unseen": "true"})
        assert r.status_code == 202 and r.json()["keys_revoked"] == 0, r.text
        assert wait_removed(admin, "acmee", timeout=60)["users_removed"] == 0
        r = admin.post("/admin/tenants/aside51/removal")
        assert r.status_code == 202, r.text
        assert wait_removed(admin, "aside51", timeout=60)["counts"]["preferences"] == 1
    assert name not in rt.ingest.dead_letters.names()


def test_a_removal_of_a_tenant_whose_only_trace_is_a_job_naming_it_begins_and_purges_the_job(svc):
    """(review of session 51) POST /admin/tenants/{t}/removal of a tenant whose only trace here is a job naming it (an
    audit of it queued by an admin: `POST /admin/jobs`; its keys revoked and its users deleted one by one before) is
    no typo: the removal begins (202) and purges the job, as its docs say a removal does. Before, the route answered 404
    `tenant_unseen`, "nothing to remove", and the job and its report stayed."""
    from tests.service.test_tenant48_removal import wait_removed

    with svc.client("admin") as admin:
        queued = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "tenant": "jobs51"}})
        assert queued.status_code == 201, queued.text
        r = admin.post("/admin/tenants/jobs51/removal")
        assert r.status_code == 202, r.text
        assert wait_removed(admin, "jobs51", timeout=60)["jobs_removed"] == 1
        assert admin.get(f"/admin/jobs/{queued.json()['id']}").status_code == 404


def test_huge_but_valid_feedback_of_a_tenant_is_bounded_by_its_size_while_another_tenants_is_taken(svc):
    """breakG63: acme's feedback of texts at the API's bound (3 of 20,000 emoji: ~240 KB a row) is refused past the
    size of its bound's rows (3 rows of `ROW_BYTES`: the first taken alone, the second a 503 `feedback_backlog` naming
    the bytes), while globex's same feedback is acknowledged and stored. Before, acme's rows were acknowledged until 3
    waited, and at the default bound (50,000 rows) a tenant could hold 12 GB of them in the log and in memory."""
    rt, longest = svc.runtime, "\U0001f600" * 20_000
    huge = lambda user, i: {**comparison(user, i), "chosen": longest, "rejected": longest[1:] + "!"}  # noqa: E731
    with svc.client("acme") as acme, svc.client("globex") as globex:
        with rt.ingest.held("acme", "huge"):
            assert acme.post("/v1/feedback", json=huge("huge", 0)).status_code == 201
            r = acme.post("/v1/feedback", json=huge("huge", 1))
            assert r.status_code == 503 and r.json()["error"]["code"] == "feedback_backlog", r.text
            assert "bytes of them (at most 12288" in r.json()["error"]["message"], r.text
            assert globex.post("/v1/feedback", json=huge("calm-huge", 0)).status_code == 201
            wait_for(lambda: rt.store.count_preferences("globex", "calm-huge") == 1)
        wait_for(lambda: rt.ingest.log.tenant_backlog("acme") == 0)
        assert acme.post("/v1/feedback", json=huge("huge", 1)).status_code == 201
        wait_for(lambda: rt.store.count_preferences("acme", "huge") == 2)


def test_an_import_refused_for_its_size_logs_nothing_of_its_rows_held_already(svc):
    """breakG63: an import of a row the user holds waiting in the log (received again: logged once more) and a new row of
    texts at their bound: refused whole for its size before any step (503
    `feedback_backlog`), the tenant's backlog as it was; sent again once the backlog moved: stored, each row once. A
    guard of the import's first look at the bound (`check_room`) counting the new rows' size too: counting their number
    only, the held row was logged again and then the new one refused."""
    rt, longest = svc.runtime, "\U0001f600" * 20_000
    known = {"prompt": "Known question?", "chosen": "Known yes.", "rejected": "Known no.", "pref_id": "known-1"}
    huge = {"prompt": "Huge?", "chosen": longest, "rejected": longest[1:] + "!", "pref_id": "huge-1"}
    body = b"\n".join(msgspec.json.encode(r) for r in (known, huge))
    with svc.client("acme") as acme:
        with rt.ingest.held("acme", "half"):
            assert acme.post("/v1/users/half/import", content=msgspec.json.encode(known)).status_code == 201
            r = acme.post("/v1/users/half/import", content=body)
            assert r.status_code == 503 and r.json()["error"]["code"] == "feedback_backlog", r.text
            assert rt.ingest.log.tenant_backlog("acme") == 1
        wait_for(lambda: rt.ingest.log.tenant_backlog("acme") == 0)
        assert acme.post("/v1/users/half/import", content=body).status_code == 201
        wait_for(lambda: rt.store.count_preferences("acme", "half") == 2)
