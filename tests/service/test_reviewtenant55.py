"""Review of session tenant55 (an audit's flush of one tenant's backlog giving the other tenants turns).

A flush of every tenant (`Ingestor.flush()`: `Runtime.wait_for_background`, the population snapshot, an audit of every
tenant) returned, since tenant55, as soon as no row was pending, before the `on_moved` hooks of the worker's batch under
way had run: `wait_for_background` ("every refit queued so far has run") then waited for a refit queue that did not
hold those users' refits yet."""

from __future__ import annotations

import threading
import time

import msgspec

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import give_comparisons
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM
from tests.service.test_tenant39_request_threads import HOLD, HeldEncoder
from tests.service.tiny import start_service
from tests.stores import WorkerWaits, ingesting, wait_for


def test_a_flush_of_every_tenant_returns_once_the_hooks_of_the_workers_batch_under_way_ran(tmp_path):
    """The worker commits a batch and runs its `on_moved` hook (held here, as a slow hook would be): a flush of every
    tenant called meanwhile finds nothing pending, and must still return only after that hook, as it did before
    tenant55 (the worker holds its lock over the commit and the hooks). Before the fix it returned at once."""
    entered, release, hooked = threading.Event(), threading.Event(), []

    def on_moved(rows):
        entered.set()
        release.wait(30)
        hooked.extend(rows)

    with ingesting(tmp_path, HashEncoder(), on_moved=on_moved) as (_, ingest):
        ingest.submit(feedback("ann", 0, tenant="acme"))
        wait_for(entered.is_set)
        assert ingest.pending_rows() == 0  # committed and out of the log: only its hook still runs
        done: list[float] = []
        flushing = threading.Thread(target=lambda: (ingest.flush(), done.append(time.monotonic())), daemon=True)
        flushing.start()
        flushing.join(0.5)
        returned_early = bool(done)
        released = time.monotonic()
        release.set()
        flushing.join(10)
        assert not returned_early, "flush() returned while the worker's batch's hook was still running"
        assert done and done[0] >= released and len(hooked) == 1


def _post_audit_in_thread(admin, params: dict | None = None) -> tuple[threading.Thread, list]:
    """POST /admin/jobs of an audit of acme by `segment` on a thread of its own: (the thread, [its answer, once any])."""
    answers: list = []

    def post() -> None:
        try:
            answers.append(admin.post("/admin/jobs", params=params or {},
                                      json={"kind": "audit", "params": {"group_by": "segment", "tenant": "acme"}}))
        except Exception as exc:  # noqa: BLE001 (the server closed the connection: told to the test)
            answers.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answers


def test_an_audit_posted_as_a_job_is_bounded_by_its_wait_as_the_audit_route(serve):
    """POST /admin/jobs of an audit moves its tenant's acknowledged feedback into the table first, as GET
    /admin/audits/fairness does; the route's `wait` (query, seconds, 60 unless given) bounds that move the same way: a
    503 `feedback_backlog` with Retry-After once it passed with rows still waiting, nothing queued. Before, the POST had
    no bound (minutes behind a tenant's backlog: the worker held here by `Ingestor.paused`, as a long batch holds it)."""
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        paused = rt.ingest.paused()
        paused.__enter__()
        try:
            give_comparisons(acme, "ann", "tea", n=2)  # acknowledged, still in the log
            began = time.monotonic()
            thread, answers = _post_audit_in_thread(admin, {"wait": 0.5})
            thread.join(10)
            took = time.monotonic() - began
        finally:
            paused.__exit__(None, None, None)
        thread.join(30)
        assert answers, "no answer"
        r = answers[0]
        assert took < 10 and r.status_code == 503, (took, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "feedback_backlog" and "`wait` of 0.5 s" in error["message"], error
        assert r.headers["Retry-After"].isdigit()
        assert admin.get("/admin/jobs", params={"kind": "audit"}).json()["jobs"] == []  # nothing was queued
        bad = admin.post("/admin/jobs", params={"wait": -1}, json={"kind": "audit", "params": {"group_by": "segment"}})
        assert bad.status_code == 400 and "wait" in bad.text, bad.text


def test_an_audits_move_under_way_ends_when_the_service_is_told_to_stop(serve):
    """An audit's POST /admin/jobs moving its tenant's feedback (the worker held by `Ingestor.paused`, as a long batch
    holds it) when the service is told to stop (`stop_taking_work`, which `pluralign serve` calls as its shutdown
    begins): answered at once 503 with Retry-After, nothing queued, and the rows stay acknowledged in the log. Before,
    the move went on through the stop (its 600 s `wait`), the server's graceful wait ran out and its cancel answered
    500, and the audit was queued all the same once the move had ended."""
    from service.app import stop_taking_work

    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        app = server.server.config.app
        paused = rt.ingest.paused()
        paused.__enter__()
        try:
            give_comparisons(acme, "ann", "tea", n=2)  # acknowledged, still in the log
            thread, answers = _post_audit_in_thread(admin, {"wait": 600})
            wait_for(lambda: thread.is_alive(), 10)
            time.sleep(0.2)  # the POST waits for the worker's lock
            stop_taking_work(app)
            told = time.monotonic()
            thread.join(10)
            took = time.monotonic() - told
            pending = rt.ingest.pending_rows("acme")
        finally:
            paused.__exit__(None, None, None)
        thread.join(30)
        assert answers and not isinstance(answers[0], Exception), answers
        r = answers[0]
        assert r.status_code == 503 and r.headers.get("Retry-After", "").isdigit(), (r.status_code, r.headers, r.text[:300])
        assert "the service is stopping" in r.json()["error"]["message"] and took < 5 and pending == 2, (r.text, took, pending)
        assert app.state.admin.runner.list(kind="audit") == []  # nothing was queued


def test_an_admin_post_cut_by_the_graceful_wait_is_answered_503_with_retry_after(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                 minilm, monkeypatch):
    """An audit's POST /admin/jobs whose own batch is still being embedded (held in the encoder, as a 2,048-row batch
    on a busy machine) when the server's graceful wait runs out: its cancel is answered 503 with Retry-After, not 500
    (`CancelledError: timeout graceful shutdown exceeded`, before), and once the batch ends the audit is not queued."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    server.server.config.timeout_graceful_shutdown = 0.3
    app = server.server.config.app
    worker_free = threading.Event()
    # the worker's embedding thread runs this first: the encoder holds the request's embedding alone
    holder = threading.Thread(target=svc.runtime.ingest._low.run, args=(worker_free.wait, 60), daemon=True)
    with svc.client("acme") as acme, svc.client("admin") as admin:
        with server:
            holder.start()
            submit, submitted = app.state.admin.submit, threading.Event()

            def submit_noted(*args, **kwargs):  # the audit's submit, run on a thread of its own: its end noted
                try:
                    return submit(*args, **kwargs)
                finally:
                    submitted.set()

            monkeypatch.setattr(app.state.admin, "submit", submit_noted)
            try:
                give_comparisons(acme, "ann", "tea", marker=HOLD, n=1)  # its texts are held in the encoder
                thread, answers = _post_audit_in_thread(admin, {"wait": 600})
                wait_for(lambda: encoder.held >= 1 and thread.is_alive(), 10)  # the request's flush embeds them
                server.server.stop()
                thread.join(10)
            finally:
                encoder.release.set()
                worker_free.set()
            thread.join(30)
        assert answers and not isinstance(answers[0], Exception), answers
        r = answers[0]
        assert r.status_code == 503 and r.headers.get("Retry-After", "").isdigit(), (r.status_code, r.headers, r.text[:300])
        assert "the service is stopping" in r.json()["error"]["message"], r.text
        wait_for(lambda: not server.thread.is_alive(), 30)
        # the request's thread, which the cancel left running, ended with the batch (a sleep of 0.3 s: maybe not yet)
        assert submitted.wait(60), "the audit's submit never returned"
        assert app.state.admin.runner.list(kind="audit") == [], "an audit was queued after its request was answered 503"


def test_an_audits_wait_passing_during_another_tenants_turn_begins_no_further_batch_of_its_own(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """An audit of acme with `wait` 0.5: its flush moves acme's first record, then the other tenants' turn (globex's
    record, held in the encoder past the wait, as a 2,048-row import on a busy machine). Once that turn ends the wait
    has passed: 503 `feedback_backlog` naming acme's row still waiting, nothing queued, and acme's second record is
    left to the worker. Before, the flush went on to a batch of acme's own after the turn (the wait overrun by two
    batches, not one), and the audit was queued."""
    from service.users import services

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(services, "READ_INLINE_ROWS", 20)
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600, ingest_batch=1)
    rt = svc.runtime
    worker_free = threading.Event()
    # the worker's embedding thread runs this first: the worker embeds none of its batches until it is set
    holder = threading.Thread(target=rt.ingest._low.run, args=(worker_free.wait, 60), daemon=True)
    answers: list = []
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        holder.start()
        try:
            for i in range(2):
                r = acme.post("/v1/feedback", json={"type": "comparison", "user": f"ann{i}", "prompt": f"Tea or coffee {i}?",
                                                    "chosen": "Tea.", "rejected": "Coffee.", "attributes": {"segment": "a"}})
                assert r.status_code == 201, r.text
            r = globex.post("/v1/feedback", json={"type": "comparison", "user": "gus", "prompt": f"Milk {HOLD}?",
                                                  "chosen": "Yes.", "rejected": "No."})
            assert r.status_code == 201, r.text
            asking = threading.Thread(target=lambda: answers.append(admin.get("/admin/audits/fairness", params={
                "group_by": "segment", "tenant": "acme", "wait": 0.5})), daemon=True)
            asking.start()
            wait_for(lambda: encoder.held >= 1, 30)  # the turn of globex's record, after acme's first
            time.sleep(0.7)  # past the wait
            encoder.release.set()
            asking.join(30)
            acme_left = rt.ingest.pending_rows("acme")
        finally:
            encoder.release.set()
            worker_free.set()
        assert answers, "no answer"
        r = answers[0]
        assert r.status_code == 503 and r.json()["error"]["code"] == "feedback_backlog", (r.status_code, r.text[:300])
        assert r.json()["error"]["message"].startswith("1 acknowledged feedback row still"), r.text
        assert acme_left == 1, acme_left  # acme's second record: not begun after the wait passed
        assert admin.get("/admin/jobs", params={"kind": "audit"}).json()["jobs"] == []


class _FailsOnGlobex(HashEncoder):
    """The encoder failing (not refusing: no ValueError or TypeError) on any text of globex's."""

    failures = 0

    def encode(self, texts):
        if any("globex" in t for t in texts):
            self.failures += 1
            raise RuntimeError("the encoder fails on globex's text")
        return super().encode(texts)


def test_another_tenants_failing_batch_in_its_turn_does_not_fail_the_audited_tenants_flush(tmp_path):
    """acme's flush (an audit's) gives globex's rows a turn between two of its batches; the encoder fails on globex's
    text (the store's or the encoder's failure, which the worker retries after a pause). acme's rows are all moved and
    the flush returns; globex's stay pending, for the worker. Before, globex's failure was raised out of acme's flush:
    acme's audit failed (a 500) for as long as globex's record waited. Once failed, no further turn is given in that
    flush (one failure logged, not one per batch of acme's)."""
    records = [*(feedback("ann", i, tenant="acme") for i in range(3)), feedback("gus", 0, tenant="globex")]
    for rows in records:  # the texts name their tenant: the encoder fails on globex's
        for i, r in enumerate(rows):
            rows[i] = msgspec.structs.replace(r, prompt=f"{r.tenant} {r.prompt}")
    log = FeedbackLog(tmp_path / "log")
    for rows in records:
        log.append(rows)
    log.close()
    encoder = _FailsOnGlobex()
    ingest = WorkerWaits(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder, batch=1)
    try:
        ingest.stop()  # its worker takes no batch once begun: the flush alone moves (its turns included)
        ingest.begin.set()
        moved = ingest.flush("acme")
        assert (moved, ingest.pending_rows("acme"), ingest.pending_rows("globex"), encoder.failures) == (3, 0, 1, 1)
    finally:
        ingest.close()
