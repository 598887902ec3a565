"""SIGTERM of `pluralign serve` (a rolling update, `kubectl delete pod`) while a DELETE waits in the
DELETEs' queue behind a running one: the waiting DELETE has deleted nothing, so its client is told so
at once (503 with Retry-After: send it again) instead of uvicorn's 500 once its 5 s graceful wait ran
out; the DELETE running is cut off by that wait, so serve exits 4. Slow (a real service start, about 40 s)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess

# the served process: a DELETE of `zed` holds the DELETEs' one thread (the store's delete never returns); a DELETE
# queued behind it is said in QUEUED_AT
HOLD_ZEDS_DELETE = """
import os, sys, time
from pathlib import Path
from pluralign.store.tables import Store
from service.scheduler import FairScheduler

submit = FairScheduler.submit

def noted(self, tenant, fn):
    future = submit(self, tenant, fn)
    if self.what == "deletes" and self.stats()["waiting"]:
        Path(os.environ["QUEUED_AT"]).write_text("waiting")
    return future

FairScheduler.submit = noted

delete_user = Store.delete_user

def held(self, tenant, user_id):
    if user_id == "zed":
        Path(os.environ["HELD_AT"]).write_text(user_id)
        time.sleep(3600)
    return delete_user(self, tenant, user_id)

Store.delete_user = held
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_delete_waiting_in_the_queue_at_sigterm_is_answered_503_with_retry_after(tmp_path, tiny_generator_dir, tiny_pal_dir):
    data, held_at, queued_at = tmp_path / "data", tmp_path / "held-at", tmp_path / "queued-at"
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=HOLD_ZEDS_DELETE, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"),
                        HELD_AT=str(held_at), QUEUED_AT=str(queued_at))
    answers: dict[str, httpx.Response | Exception] = {}  # in the order they came

    def send_delete(user: str) -> None:
        try:
            answer = httpx.delete(f"{proc.url}/v1/users/{user}", headers=headers, timeout=60)
        except httpx.TransportError as exc:
            answer = exc
        answers[user] = answer

    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}
        for user in ("zed", "ann"):
            r = httpx.post(f"{proc.url}/v1/feedback", headers=headers, json={
                "type": "comparison", "user": user, "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."})
            assert r.status_code == 201, r.text
        threads = [threading.Thread(target=send_delete, args=("zed",), daemon=True)]
        threads[0].start()
        deadline = time.monotonic() + 60
        while not held_at.exists():  # zed's DELETE runs (and holds the DELETEs' thread)
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log.read_text()
            time.sleep(0.02)
        threads.append(threading.Thread(target=send_delete, args=("ann",), daemon=True))
        threads[1].start()  # ann's waits behind it
        deadline = time.monotonic() + 60
        while not queued_at.exists():  # in the DELETEs' queue (a sleep of 1 s, before: maybe not even sent yet)
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log.read_text()
            time.sleep(0.02)
        assert "ann" not in answers
        proc.proc.terminate()
        threads[1].join(timeout=30)
        ann = answers["ann"]
        assert isinstance(ann, httpx.Response), ann
        assert (ann.status_code, "Retry-After" in ann.headers) == (503, True), (ann.status_code, ann.text)
        assert "nothing of the user was deleted" in ann.text, ann.text
        # zed's DELETE never ends: uvicorn's graceful wait cancels it, and the exit status says work was cut off
        assert proc.proc.wait(timeout=30) == 4, proc.log.read_text()
        threads[0].join(timeout=30)
        # ann's 503 came at the stop's start, before the graceful wait's end cut zed's DELETE off (not at that end)
        assert list(answers) == ["ann", "zed"], answers
        assert "stopped with 1 request(s) cut off" in proc.log.read_text()
    finally:
        proc.stop()
