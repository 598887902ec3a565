"""`pluralign serve` SIGKILLed right after its feedback worker moved a user's comparison into the table and the
feedback log let go of it (`FeedbackLog.done`: the record's segment removed), before the move's hook
(`service.feedback.services.after_move`) noted the user's background refit on disk (`service.waiting_refits`).

The brief's rule: acknowledged feedback survives a crash; the users table is part of what it changes (the pooled
prior, the population a new user is compared with and the fairness audit read a user's row as it is stored; only the
user's own reads refit a stale row). The restart on the same data folder must refit the user without being asked:
their row counts both comparisons.

Before: nothing named the user any more (the log no longer held the record, so `Ingestor.replayed` left them out, and
the waiting file had not been written), so their row kept the fit of before that comparison until the user came
back, for good for one who never did. Now the users a move stores are noted as owed a refit before the log lets go
of their records (`Ingestor.before_done`).

The kill point is a fault-injection hook of the test's own (the child runs `KILLED_AFTER_DONE`, which wraps
`FeedbackLog.done` and SIGKILLs its own process once the test arms it by creating a file). The log's segments are
1 byte (a record's segment is full at once, so a moved record's file goes with it, as an 8 MiB segment's does under
load). Slow: two service starts (~40-90 s on two shared cores); `make test-crash`."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from tests.e2e.test_crash39_kills import NO_GENERATOR
from tests.e2e.test_e2e_serve import ServeProcess

KILLED_AFTER_DONE = """
import os, signal, sys
from pluralign.store.feedback_log import FeedbackLog

init, done = FeedbackLog.__init__, FeedbackLog.done

def one_record_a_segment(self, folder, *args, **kwargs):
    init(self, folder, *args, **{**kwargs, "segment_bytes": 1})

def killed(self, entries):
    done(self, entries)
    if entries and os.path.exists(os.environ["ARMED"]):  # in the table, gone from the log: nothing else ran yet
        os.kill(os.getpid(), signal.SIGKILL)

FeedbackLog.__init__, FeedbackLog.done = one_record_a_segment, killed
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _comparison(n: int) -> dict:
    return {"type": "comparison", "user": "ann", "prompt": f"Question {n}?", "chosen": f"Yes {n}.", "rejected": f"No {n}."}


def _fitted_count(data, minilm) -> int | None:
    """How many comparisons ann's stored row was fitted on, read as the pooled prior reads it (None: no row)."""
    from pluralign.store import Store

    record = Store(str(data / "lancedb"), minilm.encoder_id, minilm.dim).get_user("default", "ann")
    return None if record is None else record.n_preferences


@pytest.mark.slow
def test_a_kill_after_the_move_before_the_refit_was_noted_refits_the_user_at_the_next_start(tmp_path, tiny_pal_dir, minilm):
    data, armed = tmp_path / "data", tmp_path / "armed"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache")}
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=KILLED_AFTER_DONE, ARMED=str(armed), **env)
    headers = {"Authorization": f"Bearer {proc.dev_key()}"}
    try:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=60) as c:
            first = c.post("/v1/feedback", json=_comparison(1), headers={"Idempotency-Key": "ann-1"})
            assert first.status_code == 201, first.text
            assert c.get("/v1/users/ann").status_code == 200  # moved and fitted: a row of one comparison
            deadline = time.monotonic() + 30  # its background refit ran and the waiting file went: ann is owed nothing
            while (data / "refits-waiting.jsonl").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not (data / "refits-waiting.jsonl").exists()
            armed.touch()
            second = c.post("/v1/feedback", json=_comparison(2), headers={"Idempotency-Key": "ann-2"})
            assert second.status_code == 201, second.text  # acknowledged, then the worker moves it and is killed
        proc.killed()
    finally:
        proc.stop()
    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)
    try:
        deadline = time.monotonic() + 60  # refitted in the background from the start: nobody reads ann meanwhile
        while (fitted := _fitted_count(data, minilm)) != 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert fitted == 2, f"ann's stored row was fitted on {fitted} comparisons after the restart; 2 were acknowledged"
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as c:
            for n in (1, 2):  # the client's retries: answered from what was stored, nothing doubled
                r = c.post("/v1/feedback", json=_comparison(n), headers={"Idempotency-Key": f"ann-{n}"})
                assert r.status_code == 201 and r.headers.get("idempotent-replayed") == "true", (r.status_code, r.headers, r.text)
            page = c.get("/v1/users/ann/preferences", params={"limit": 100}).json()
            assert sorted(p["prompt"] for p in page["data"]) == ["Question 1?", "Question 2?"], page
    finally:
        with contextlib.suppress(Exception):
            again.stop()
