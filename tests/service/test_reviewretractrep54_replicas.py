"""Review of retractrep54, with replicas: a replica's sweep pass (`DeletionSweep.drop_retracted`) that comes more than
SLACK_S (10 minutes) after the pass before it (`PLURALIGN_DELETION_SWEEP_S` past 600 s, or passes that failed
meanwhile) still finds the retractions answered by another replica since that pass, and rewrites its log files without
the taken-back row (it read only the last 10 minutes' records: such a row stayed in its files until its restart).
Two real services over HTTP on one LanceDB store. Slow-marked (two services, ~13 s at load 8: `make test-scaleout`)."""

from __future__ import annotations

import time
import types

import pytest

from tests.service.test_retract54 import MISCLICK, give_rule, misclick
from tests.service.test_retractrep54_replicas import in_log_files, listed

pytestmark = pytest.mark.usefixtures("short_read_margin")


@pytest.mark.slow
def test_a_sweep_pass_more_than_ten_minutes_after_the_last_drops_rows_taken_back_since(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    import service.deletions
    from pluralign.store.deletions import SLACK_S
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:
        b.runtime.deletion_sweep.drop_retracted()  # a pass now (the start's)
        kept = set(give_rule(acme_b, "ria", 2))
        oops = misclick(acme_b, "ria")
        assert listed(acme_b, "ria") == kept | {oops} and in_log_files(b, MISCLICK)
        assert acme_a.delete(f"/v1/users/ria/preferences/{oops}").status_code == 200

        # b's next pass, an hour's interval (or passes that failed) later: its clock as it will read then
        monkeypatch.setattr(service.deletions, "time", types.SimpleNamespace(time=lambda: time.time() + SLACK_S + 60))
        assert b.runtime.deletion_sweep.drop_retracted() == 1
        assert not in_log_files(b, MISCLICK)
