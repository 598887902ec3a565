"""review left57 and owed58, with replicas: replica b kept a damaged `retractions-owed.json` aside in its data folder, and
each of its passes applying another replica's DELETE had to scrub the user's ids out of that copy (a pass that could not
left the DELETE unapplied). Now b's start owes again the keys the damaged file holds whole and keeps nothing of it, so a
DELETE through replica a is applied by b's next pass with no copy left naming the users. Two real services over HTTP on
one LanceDB store. Slow-marked (two service starts): `make test-scaleout`."""

from __future__ import annotations

import pytest

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.service.test_retract54 import give_rule
from tests.service.test_reviewleft57_owed import DAMAGED, wait_for

pytestmark = pytest.mark.usefixtures("short_read_margin")


@pytest.mark.slow
def test_a_damaged_owed_file_leaves_no_copy_in_the_replicas_folder_for_another_replicas_delete_to_scrub(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)  # b's data folder, as a crash mid-copy left it
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second:
        wait_for(lambda: not b.runtime.owed_retractions.keys(), "the keys read from the damaged file were never looked at")
        give_rule(acme_a, "ann", 1)
        assert acme_a.delete("/v1/users/ann").status_code == 200
        assert b.runtime.deletion_sweep.run_once() == 1  # a's record, applied at once
        held = [p.name for p in (tmp_path / "b").iterdir() if p.is_file() and b'"ann"' in p.read_bytes()]
        assert held == [], held
        assert not list((tmp_path / "b").glob(f"{OWED_RETRACTIONS_FILE}*"))
