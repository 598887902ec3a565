"""review left57, with replicas: a damaged `retractions-owed.json` set aside in replica b's data folder named a user that
a DELETE through replica a then deleted: b's pass applying a's record left the user's id in the file set aside, for
good. Now b's pass takes their keys out of it (another user's stay). Two real services over HTTP on one LanceDB store.
Slow-marked (two service starts): `make test-scaleout`."""

from __future__ import annotations

import pytest

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.service.test_retract54 import give_rule
from tests.service.test_reviewleft57_owed import DAMAGED, wait_for

pytestmark = pytest.mark.usefixtures("short_read_margin")


@pytest.mark.slow
def test_another_replicas_delete_takes_the_users_keys_out_of_a_damaged_owed_file_set_aside_here(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)  # b's data folder, as a crash mid-copy left it
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second:
        [aside] = (tmp_path / "b").glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")
        wait_for(lambda: not b.runtime.owed_retractions.keys(), "the keys read from the damaged file were never looked at")
        give_rule(acme_a, "ann", 1)
        assert acme_a.delete("/v1/users/ann").status_code == 200
        assert aside.read_bytes() == DAMAGED  # b has not applied a's record yet (its pass is the test's)
        assert b.runtime.deletion_sweep.run_once() == 1
        assert aside.read_bytes() == b'[["acme","bob","p-2"],["globex","ann","p-3"],["acme","cy","p-'


@pytest.mark.slow
def test_another_replicas_delete_meeting_a_file_set_aside_here_it_cannot_rewrite_stays_unapplied_until_it_can(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """review reviewleft57: b's pass logged the file it could not rewrite and noted a's record applied, the user's ids
    left in it for good. Now the record stays unapplied (the pass raises once every other file was done) and the next
    pass, the file mended, applies it."""
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second:
        [aside] = (tmp_path / "b").glob(f"{OWED_RETRACTIONS_FILE}.damaged-*")
        moved = tmp_path / "elsewhere.json"
        moved.write_bytes(aside.read_bytes())
        aside.unlink()
        aside.symlink_to(moved)  # the operator moved it to another disk: it cannot be rewritten in place
        give_rule(acme_a, "ann", 1)
        assert acme_a.delete("/v1/users/ann").status_code == 200
        with pytest.raises(OSError, match="damaged-"):  # SetAsideNotRewritten, naming the file
            b.runtime.deletion_sweep.run_once()
        assert moved.read_bytes() == DAMAGED
        aside.unlink()
        aside.write_bytes(moved.read_bytes())  # mended: a file again
        assert b.runtime.deletion_sweep.run_once() == 1  # a's record, not applied before
        assert aside.read_bytes() == b'[["acme","bob","p-2"],["globex","ann","p-3"],["acme","cy","p-'
