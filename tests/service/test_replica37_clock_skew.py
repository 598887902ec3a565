"""Replicas whose clocks disagree, and a DELETE of a user answered by one of them while another holds or
receives the user's feedback. `received_at` is the receiving replica's clock, a deletion record's
`began_at` the answering one's: two replicas on one store in this process (real LanceDB in a temp dir),
replica b's feedback log stamping rows with a clock `SKEW_S` off."""

from __future__ import annotations

import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_left27b_began import BACK, prompts
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

SYNC_MS = 200
SKEW_S = 3.0


def skew(service, by_s: float) -> None:
    """The replica's clock runs `by_s` seconds off the true time (negative: behind): its feedback log's
    `received_at` and its clock comparison (`pluralign.store.clocks`)."""
    service.runtime.ingest.log.clock = service.runtime.deletion_sweep.clocks.clock = lambda: time.time() + by_s


def compare_clocks(*services) -> None:
    """Each replica's clock comparison, in this order (what their sweeps do every pass), once the replica's
    own sweep has stopped: its start pass, on the sweep's thread, may still run on a loaded machine, and one
    beside the test's reads whether DELETEs were refused before the test's pass and logs the refusal's start
    again after it (`DeletionSweep.check_clocks`: the service runs its passes one at a time, on that thread)."""
    for service in services:
        sweep = service.runtime.deletion_sweep
        sweep.stop()  # waits for the pass running, if any; the test's passes stand for the later ones
        sweep.check_clocks()


def refused(client) -> bool:
    r = client.delete(f"/v1/users/{GONE}")
    return r.status_code == 503 and r.json()["error"]["code"] == "clocks_disagree" and "Retry-After" in r.headers


def apply_records(service, n: int = 1) -> None:
    """The replica's sweep applies the `n` records another replica wrote (once its reads see them)."""
    assert wait_until(lambda: len(service.runtime.store.deletions_since(0)) >= n), "no deletion record"
    assert service.runtime.deletion_sweep.run_once() == n




@pytest.mark.slow  # ~2.5 CPU-s; fast: the clock ahead below (the same refusal until the clocks agree, then the DELETE), and a
# clock behind's skew in /metrics and refused DELETEs in tests/service/test_review37b_replicas.py
def test_a_replica_whose_clock_is_behind_stops_deletes_until_it_agrees(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                      monkeypatch):
    """Replica b's clock is SKEW_S behind a's. Before: the user's DELETE answered by a, then feedback the
    user sent through b (after the 200) was stamped by b before the DELETE's `began_at` on a's clock, and
    b's sweep deleted it with their old rows. Now b sees a's clock ahead of its own through the store, both
    replicas refuse the DELETE (503 `clocks_disagree`, nothing deleted) until the clocks agree again, and
    then the DELETE keeps what came after it."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    skew(b, -SKEW_S)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        give_comparisons(acme_a, GONE, "tea", MARKER, n=2)
        compare_clocks(a, b)
        assert wait_until(lambda: (compare_clocks(b), b.runtime.deletion_sweep.clocks_disagree())[1])
        assert b.runtime.deletion_sweep.clocks.skew.seconds > SKEW_S - 1
        assert wait_until(lambda: (compare_clocks(a), a.runtime.deletion_sweep.clocks_disagree())[1])  # b's row says so
        for client in (acme_a, acme_b):
            assert refused(client)
        r = acme_a.delete(f"/v1/users/{GONE}")
        assert "replica 1" in r.json()["error"]["message"] and "NTP" in r.json()["error"]["message"], r.text
        health = acme_a.get("/health").json()
        assert health["status"] == "degraded" and "replica 1" in health["clocks"], health
        assert len(prompts(acme_a, GONE)) == 2  # nothing deleted

        skew(b, 0.0)  # NTP fixed
        assert wait_until(lambda: not (compare_clocks(b, a), a.runtime.deletion_sweep.clocks_disagree())[1])
        assert acme_a.get("/health").json()["clocks"] is None
        r = acme_a.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        give_comparisons(acme_b, GONE, "coffee", BACK, n=1)  # after the 200
        apply_records(b)
        for client in (acme_b, acme_a):
            assert wait_until(lambda client=client: [p for p in prompts(client, GONE) if BACK in p], 10), prompts(client, GONE)
            assert not [p for p in prompts(client, GONE) if MARKER in p]


def test_a_replica_whose_clock_is_ahead_stops_deletes_until_it_agrees(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                     monkeypatch):
    """Replica b's clock is SKEW_S ahead of a's. Before: b acknowledged the user's feedback and still held it
    (its embedding backlog) when a answered the user's DELETE (a 404: a holds nothing of theirs; its record
    is written all the same); b's rows carried a time after the DELETE's `began_at`, so b's sweep kept them
    and they came back after the DELETE. Now a sees b's clock ahead, both refuse the DELETE until the clocks
    agree, and then it takes what b holds."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    skew(b, SKEW_S)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        compare_clocks(b)
        assert wait_until(lambda: (compare_clocks(a), a.runtime.deletion_sweep.clocks_disagree())[1])
        assert wait_until(lambda: (compare_clocks(b), b.runtime.deletion_sweep.clocks_disagree())[1])  # a's row says so
        with b.runtime.ingest.paused():
            give_comparisons(acme_b, GONE, "tea", MARKER, n=2)  # acknowledged: in b's log
            for client in (acme_a, acme_b):
                assert refused(client)
            assert "replica 0" in acme_b.delete(f"/v1/users/{GONE}").json()["error"]["message"]

            skew(b, 0.0)
            assert wait_until(lambda: not (compare_clocks(a, b), b.runtime.deletion_sweep.clocks_disagree())[1])
            assert wait_until(lambda: not (compare_clocks(a), a.runtime.deletion_sweep.clocks_disagree())[1])
            r = acme_a.delete(f"/v1/users/{GONE}")  # a holds nothing of theirs: 404, and its record is written
            assert r.status_code == 404, r.text
            apply_records(b)
        b.runtime.ingest.flush()
        for client in (acme_b, acme_a):
            assert prompts(client, GONE) == []
