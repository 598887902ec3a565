"""Feedback a client sends while its own DELETE of the same user runs, through the replica answering
the DELETE and through another one (two replicas on one store in this process, real LanceDB in a temp
dir). What the DELETE promises (docs/api.md): what was acknowledged before it began goes, what was sent
after its answer stays; a feedback in flight meanwhile goes or stays whole."""

from __future__ import annotations

import threading
import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE, give_comparisons
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

SYNC_MS = 200


def race(delete_client, feedback_client) -> tuple[dict[str, tuple[float, float]], float, float, int]:
    """The user's DELETE through `delete_client` while `feedback_client` sends feedback (an import of 2
    rows each, one record in the feedback log) until 2 more were acknowledged after the DELETE's answer. Returns
    {prompt: (sent, acknowledged)}, when the DELETE was sent and answered (time.monotonic), its status."""
    out: dict = {}

    def delete() -> None:
        out["sent"] = time.monotonic()
        out["status"] = delete_client.delete(f"/v1/users/{GONE}").status_code
        out["answered"] = time.monotonic()

    thread = threading.Thread(target=delete)
    sent: dict[str, tuple[float, float]] = {}
    after = 0
    thread.start()
    for i in range(10_000):
        prompt = f"Race {i}?"
        start = time.monotonic()
        body = "".join(f'{{"user_id": "{GONE}", "prompt": "{prompt}", "chosen": "A {i}{j}.", "rejected": "B {i}{j}."}}\n'
                       for j in range(2))
        r = feedback_client.post(f"/v1/users/{GONE}/import", content=body.encode())
        assert r.status_code == 201, r.text
        sent[prompt] = (start, time.monotonic())
        if "answered" in out and start > out["answered"]:
            after += 1
            if after == 2:
                break
        time.sleep(0.02)
    thread.join()
    return sent, out["sent"], out["answered"], out["status"]


def check(held: list[str], rows: dict[str, int], sent: dict[str, tuple[float, float]], began: float, answered: float) -> None:
    for prompt, (start, acked) in sent.items():
        if acked < began:
            assert prompt not in rows, f"{prompt}: acknowledged before the DELETE, kept"
        elif start > answered:
            assert rows.get(prompt) == 2, f"{prompt}: sent after the DELETE answered, {rows.get(prompt, 0)} of 2 rows kept"
        else:
            assert rows.get(prompt, 2) == 2, f"{prompt}: in flight, {rows[prompt]} of 2 rows kept"
    assert not [p for p in held if p.startswith("A drink")]  # the rows from before it


@pytest.mark.parametrize("through", [pytest.param("same", marks=pytest.mark.slow), "other"])  # ~15 s each
def test_feedback_sent_during_the_users_own_delete(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, through):
    """Through the same replica: an import waits for the running DELETE (`_finish_unfinished_delete`), then
    stays. Through another: before, a DELETE answered within `store_sync_ms` of its beginning (a user with
    few rows: 0.13 s) let the other replica take feedback sent after the 200 (its record takes rows received
    before `began_at` + `store_sync_ms`); now a DELETE with replicas answers no sooner than twice that."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", "", n=2)
        sender = acme_a if through == "same" else acme_b
        sent, began, answered, status = race(acme_a, sender)
        assert status == 200
        b.runtime.deletion_sweep.run_once()  # a's record (b applies it even when a's DELETE had it all)
        for svc in (a, b):
            svc.runtime.ingest.flush()
        time.sleep(2 * SYNC_MS / 1000)
        assert not b.runtime.ingest.log.pending_for("acme", GONE)
        held = [r["prompt"] for r in a.runtime.store.tables["preferences"].search().where(f"user_id = '{GONE}'")
                .select(["prompt"]).limit(None).to_arrow().to_pylist()]
        rows = {p: held.count(p) for p in set(held)}
        assert acme_a.get(f"/v1/users/{GONE}").json()["counts"]["preferences"] == len(held)
        check(held, rows, sent, began, answered)
        print(f"{through}: {len(sent)} sent, {len(rows)} kept, DELETE {answered - began:.2f} s")
