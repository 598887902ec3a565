"""retract56, with replicas: a row replica a stored in the instant before replica b's pending retraction (b answered the
user 202), whose take-back by a keeps failing (here a 503 of the user's feedback still being stored, as
`flush_for_read` answers; a store down does the same). a tried again after 5, 30, 120 and 600 s, then logged an error
and gave up: the row stayed stored, learned from and exported, though the user was told 202. Now a tries again every
600 s past those, for as long as it runs, the row owed on disk meanwhile (`service.owed_retractions`, taken back at the
next start), and `/metrics` shows how many are owed (`pluralign_retractions_owed`). Two real services over HTTP on one
LanceDB store. Slow-marked (two service starts): `make test-scaleout`."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.service.test_retract54 import MISCLICK, give_rule
from tests.service.test_retractrep54_replicas import listed
from tests.service.test_retractrep55_replicas import exported
from tests.service.test_reviewretractrep55_replicas import keyed_misclick

pytestmark = pytest.mark.usefixtures("short_read_margin")


def owed_gauge(service) -> float | None:
    """`pluralign_retractions_owed` of `service`'s /metrics (read from this machine: no key), None when not there."""
    for family in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text):
        if family.name == "pluralign_retractions_owed":
            return family.samples[0].value
    return None


def wait_for(what, timeout: float, why) -> None:
    """Poll `what` until true; past `timeout` s fail with `why` (a str, or a callable read then)."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why() if callable(why) else why
        time.sleep(0.1)


@pytest.mark.slow
def test_a_row_whose_take_back_keeps_failing_is_tried_again_past_the_last_retry_and_shown_owed(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from litestar.exceptions import ServiceUnavailableException

    from service.users import retractions
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(retractions, "ARRIVED_RETRY_S", (0.2, 0.3), raising=False)  # tries 1-3 as 5/30/120/600 s were
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        kept = set(give_rule(acme_a, "ria", 2))
        assert listed(acme_a, "ria") == kept
        flush, tries, failing = retractions.flush_for_read, [], [True]

        def backlogged(rt, tenant, user_id):
            if rt is a.runtime and failing[0]:
                tries.append(time.monotonic())
                raise ServiceUnavailableException(detail="this user's comparisons are still being stored")
            flush(rt, tenant, user_id)

        with a.runtime.ingest.paused():
            late = keyed_misclick(acme_a, "ria", "late")
            assert acme_b.delete(f"/v1/users/ria/preferences/{late}").status_code == 202
            monkeypatch.setattr(a.runtime.ingest, "_not_retracted", lambda entries: entries)  # its look came first
            monkeypatch.setattr(retractions, "flush_for_read", backlogged)
        a.runtime.ingest.flush()
        # past the retries' list: given up after its third try before (the row stored for good)
        wait_for(lambda: len(tries) >= 5, 20, lambda: f"tried {len(tries)} times, then given up")
        assert late in listed(acme_a, "ria")  # still stored meanwhile: owed, and shown so
        assert (a.runtime.settings.data_path / OWED_RETRACTIONS_FILE).exists()
        assert owed_gauge(a) == 1
        failing[0] = False
        wait_for(lambda: late not in listed(acme_a, "ria"), 20, "never taken back once it could be")
        assert listed(acme_a, "ria") == kept and MISCLICK not in exported(acme_a, "ria")
        wait_for(lambda: owed_gauge(a) == 0, 5, "still shown owed")
        assert not (a.runtime.settings.data_path / OWED_RETRACTIONS_FILE).exists()


@pytest.mark.slow
def test_a_row_stored_while_the_look_for_retractions_failed_is_taken_back_and_its_batch_kept(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """a's look for rows taken back right after its commit fails (the store did not answer): it was logged and the move
    went on, so the row b's pending retraction named (a 202) stayed stored. Now the batch is owed whole and each row
    looked at again: the one taken back goes, the one sent beside it stays."""
    from pluralign.store.failures import StoreUnavailable
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        kept = set(give_rule(acme_a, "ria", 2))
        assert listed(acme_a, "ria") == kept
        looked, failed = a.runtime.store.retracted, []

        def unanswered_once(rows):  # the first look at the batch holding the row taken back
            if not failed and any(r.pref_id == late for r in rows):
                failed.append(len(rows))
                raise StoreUnavailable("retractions", "the store", "read", "unreadable", "connection reset")
            return looked(rows)

        with a.runtime.ingest.paused():
            r = acme_a.post("/v1/feedback", json={"type": "comparison", "user": "ria", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
            beside = r.json()["stored"][0]  # a row of the same batch, not taken back
            late = keyed_misclick(acme_a, "ria", "late")
            assert acme_b.delete(f"/v1/users/ria/preferences/{late}").status_code == 202
            monkeypatch.setattr(a.runtime.ingest, "_not_retracted", lambda entries: entries)  # its look came first
            monkeypatch.setattr(a.runtime.store, "retracted", unanswered_once)
        a.runtime.ingest.flush()
        wait_for(lambda: late not in listed(acme_a, "ria"), 20, "the row taken back stayed stored")
        assert failed  # the look at its batch failed once
        assert beside in listed(acme_a, "ria")  # looked at again, not taken back
        wait_for(lambda: not (a.runtime.settings.data_path / OWED_RETRACTIONS_FILE).exists(), 10, "still owed")
