"""Session 39: one tenant's burst of slow requests never queues another tenant's requests behind it.

Every route that reads the store, embeds or fits (a profile, a preferences page, an export, a
next-comparison, a score, a stated-preferences change, feedback's checks) runs on the request threads,
`min(32, cores + 4)` of them. They were the event loop's default thread pool, first come first served: a
tenant sending many slow requests at once (within its rate limit: 200 a second) queued every other
tenant's requests behind all of them, however long that queue grew. Now the request threads take the
waiting work of the tenants in turn (`service.scheduler.TenantThreads`): another tenant's request waits for
the next free thread, behind at most one request of each other tenant."""

from __future__ import annotations

import threading
import time

import numpy as np

from pluralign.turns import caller
from tests.service.tiny import start_service

HOLD = "trial46b-held"


def asker(svc, tenant: str, user: str, marker: str, answers: list[int]):
    """A thread's target: `i` -> `tenant`'s next-comparison for user `<user><i>` over one prompt whose texts hold
    `marker` (what the test's encoder slows or holds), its status code appended to `answers`."""

    def ask(i: int) -> None:
        with svc.client(tenant) as client:
            pool = [{"prompt": f"Question {marker} {i}?", "answers": [f"Yes {marker} {i}.", f"No, not at all {marker} {i}."]}]
            answers.append(client.post(f"/v1/users/{user}{i}/next-comparison", json={"pool": pool}).status_code)

    return ask


class HeldEncoder:
    """The real encoder, except that a call with a text holding HOLD waits until `release` is set (a request
    whose work outlasts everyone else's: a score of 33 long texts, 12-16 s on two busy cores); `held` counts
    the calls waiting so now, `most` the most that ever did at once; `lanes`: whom the encoder's turns took each held
    call to be for (`pluralign.turns.caller`)."""

    def __init__(self, encoder):
        self.encoder, self.encoder_id, self.dim = encoder, encoder.encoder_id, encoder.dim
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.held = self.most = 0
        self.lanes: list = []

    def encode(self, texts):
        if any(HOLD in t for t in texts):
            with self.lock:
                self.lanes.append(caller())
                self.held += 1
                self.most = max(self.most, self.held)
            try:
                self.release.wait(120)
            finally:
                with self.lock:
                    self.held -= 1
            return np.random.default_rng(len(texts)).standard_normal((len(texts), self.dim)).astype(np.float32)
        return self.encoder.encode(texts)


def test_a_tenants_burst_of_slow_requests_does_not_queue_another_tenants_request_behind_it(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch,
):
    """acme's burst of five times as many slow requests as there are request threads, each held in the encoder until
    globex is answered: globex's request is answered while every thread acme took still holds its request and none of
    acme's is answered (before, it waited behind the whole burst: here, until its read timed out)."""
    from service.scheduler import request_threads

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, deletion_sweep_s=3600)
    threads = request_threads()
    burst = 5 * threads
    answers: list[int] = []
    ask = asker(svc, "acme", "slow", HOLD, answers)

    with server, svc.client("globex") as globex:
        assert globex.get("/v1/users/nobody").status_code == 404  # warm
        askers = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(burst)]
        try:
            for t in askers:
                t.start()
            deadline = time.monotonic() + 60
            while encoder.held < threads and time.monotonic() < deadline:  # acme's requests hold every thread it takes
                time.sleep(0.05)
            assert encoder.held == threads, f"{encoder.held} of acme's requests reached the encoder"
            r = globex.get("/v1/users/nobody", timeout=30)
            meanwhile = (encoder.held, len(answers))
        finally:
            encoder.release.set()
            for t in askers:
                t.join(120)
    assert r.status_code == 404, r.text
    assert meanwhile == (threads, 0), meanwhile  # answered while the burst still held its threads and queued the rest
    assert answers.count(200) == burst, answers
    # the encoder takes turns by tenant (session 42), not by request thread: acme's burst is one lane
    assert set(encoder.lanes) == {"tenant:acme"} and len(encoder.lanes) == burst, encoder.lanes[:3]


def test_a_tenant_on_the_request_threads_leaves_another_tenant_a_free_one(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch,
):
    """Session trial46b: taking the waiting work in turns did not keep one tenant from running on every request
    thread at once. globex's 16 scores of 33 texts of 20,000 characters (each 12-16 s of encoding on two busy
    cores, longer side by side) held all 6, so acme's stated-preferences GET, which reads one row, waited
    40 s and its profile 50-57 s for one of them to end. A tenant now runs on at most half the threads
    (`service.scheduler.tenant_share`); its other requests wait for its turn, and another tenant's request
    finds a free thread while this one holds its share. Review of trial46b: a tenant alone runs on as many threads
    as before (a hard cap at half cost a tenant alone 23-35% of its requests a second, its imports 2.4-3.2x their
    time: benchmarks/tenant_share.py), and one more thread is kept for another caller, free at once."""
    from service.scheduler import request_threads, tenant_share

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, deletion_sweep_s=3600)
    threads = request_threads()
    share = tenant_share(threads)
    assert share < threads  # globex alone goes past its share
    answers: list[int] = []
    ask = asker(svc, "globex", "held", HOLD, answers)

    with server, svc.client("acme") as acme:
        askers = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(threads + 2)]
        try:
            for t in askers:
                t.start()
            deadline = time.monotonic() + 60
            while encoder.held < threads and time.monotonic() < deadline:
                time.sleep(0.05)
            assert encoder.held == threads, f"{encoder.held} of globex's requests reached the encoder"
            # globex holds as many threads as before trial46b (every one, then) and none of its requests ends until
            # acme is answered: before, acme's request waited for a thread until this read timed out
            r = acme.get("/v1/users/nobody", timeout=30)
            assert r.status_code == 404, r.text
            assert encoder.held == encoder.most == threads, (encoder.held, encoder.most, threads)
        finally:
            encoder.release.set()
            for t in askers:
                t.join(120)
    assert answers.count(200) == threads + 2, answers
