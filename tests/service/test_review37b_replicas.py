"""Replicas' clock comparison (`pluralign.store.clocks`) broken as an operator would: two processes started
with the same PLURALIGN_REPLICA_INDEX on one store (real LanceDB in a temp dir, the real app over HTTP)."""

from __future__ import annotations

import logging
import time
import types

import pluralign.store.clocks as clocks
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_left27b_began import prompts
from tests.service.test_replica37_clock_skew import compare_clocks, skew
from tests.service.tiny import start_service

SYNC_MS = 200


def test_two_replicas_started_with_the_same_index_are_said_loudly_and_deletes_refused(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                       minilm, monkeypatch):
    """Both processes run as replica 0 of 2, the second's clock 5 s behind. Before: each wrote the one row
    `replica = 0` of the clocks table over the other's and skipped it as its own when reading, so neither saw
    the other's clock: /health `ok`, and a DELETE was answered 200 though the skew it relies on was never
    measured. Now each sees its row written by another process between its own passes: /health `degraded`
    naming the index, an error logged, and DELETEs refused (503 `clocks_disagree`) until only one runs as it."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    store = str(tmp_path / "shared-lancedb")
    common = dict(admin_handlers=ADMIN_HANDLERS, store_uri=store, replicas=2, replica_index=0, store_sync_ms=SYNC_MS,
                  deletion_sweep_s=3600)
    first, a = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, **common)
    second, b = start_service(tmp_path / "b", tiny_generator_dir, tiny_pal_dir, minilm, **common)
    b.keys["acme"] = b.runtime.keys.issue("acme")
    skew(b, -5.0)
    logged: list[str] = []  # the app's logging set-up replaces the root's handlers (caplog's too)
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: logged.append(record.getMessage())
    monkeypatch.setattr(logging.getLogger("pluralign.store"), "handlers", [handler])
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", MARKER, n=2)
        for _ in range(3):  # passes of both, interleaved as their sweeps' would be
            compare_clocks(a, b)
            time.sleep(SYNC_MS / 1000)
        for client in (acme_a, acme_b):
            health = client.get("/health").json()
            assert health["status"] == "degraded" and "PLURALIGN_REPLICA_INDEX" in (health["clocks"] or ""), health
            r = client.delete(f"/v1/users/{GONE}")
            assert r.status_code == 503 and r.json()["error"]["code"] == "clocks_disagree", r.text
            assert "replica 0" in r.json()["error"]["message"] and "PLURALIGN_REPLICA_INDEX" in r.json()["error"]["message"]
        assert [m for m in logged if "PLURALIGN_REPLICA_INDEX" in m], logged
        assert len(prompts(acme_a, GONE)) == 2  # nothing deleted

        # the second stops (its passes, then its row, stop): once its last write is `stale_after_s` (3 passes) old,
        # the first, alone on its index, answers DELETEs again
        compare_clocks(a, a)
        later = time.monotonic() + 3 * 3600 + 1
        monkeypatch.setattr(clocks, "time", types.SimpleNamespace(monotonic=lambda: later, time=time.time))
        compare_clocks(a)
        assert acme_a.get("/health").json()["clocks"] is None
        assert acme_a.delete(f"/v1/users/{GONE}").status_code == 200
