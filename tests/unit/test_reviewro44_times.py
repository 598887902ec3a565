"""Review ro44 of session rows44: a row an older release stored without `received_at` counts as received at its
`created_at` (`stand_in_received`); rows44 read a time of no unit (-5, 1e300, inf, NaN) as received before any DELETE,
but a date still to come (2100-01-01 in seconds or in milliseconds: those releases took any number) still counted as
received then, after every DELETE: such a row outlived a DELETE finished from the journal or by another replica's
record, made the user look as if they came back, and made every audit of the store withhold their group."""

from __future__ import annotations

import json
import time

import pytest

from pluralign.store import Store
from tests.stores import old_preferences_table
from tests.unit.test_rows44_times import DIM, ROW

YEAR_2100 = 4_102_444_800.0  # 2100-01-01 UTC in seconds: no row stored before `received_at` was kept came then


@pytest.mark.parametrize("stored", [YEAR_2100, YEAR_2100 * 1000])
def test_a_row_of_an_old_table_dated_in_the_future_goes_with_a_finished_delete(tmp_path, stored):
    """Before: received() gave 4102444800.0, `received_since(now)` said the user came back, `first_received_from_store`
    dated them in 2100 and `delete_feedback_before(now)` deleted nothing. The row is read in its order all the same."""
    from pluralign.fairness.store_source import first_received_from_store

    old_preferences_table(tmp_path, (stored, 1_700_000_000.0))
    store = Store(str(tmp_path), "enc", DIM)
    now = time.time()
    rows = store.preferences_for("t", "ann")[0]
    assert [(p.pref_id, p.created_at, p.received()) for p in rows] == [("old1", 1_700_000_000.0, 1_700_000_000.0),
                                                                        ("old0", YEAR_2100, 0.0)]
    assert first_received_from_store(str(tmp_path)) == {"t/ann": 0.0}
    assert not store.received_since("t", "ann", now)
    assert store.received_since("t", "ann", 1_700_000_000.0)  # the other row, as `received()` reads it
    assert store.delete_feedback_before("t", "ann", now) == 2
    assert store.preferences_for("t", "ann")[0] == []


def test_a_population_snapshot_an_earlier_release_wrote_loses_a_deleted_users_row_dated_in_the_future(tmp_path):
    """Before: the snapshot's time 2100 (an earlier release wrote the stored time as it was) read as a row sent after
    the DELETE began, and the deleted user's row stayed in the file the population models train on."""
    from pluralign.store.deletions import Forget, new_deletion
    from service.admin.services import _forget_in_snapshot

    began = time.time() - 60
    lines = [{"user_id": "acme/gone", "prompt": f"q{i}", "chosen": "yes", "rejected": "no", "created_at": at}
             for i, at in enumerate((YEAR_2100, YEAR_2100 * 1000, began + 5))] + [{**ROW, "user_id": "acme/ann", "created_at": YEAR_2100}]
    snapshot = tmp_path / "comparisons-1.jsonl"
    snapshot.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert _forget_in_snapshot(snapshot, Forget.of([new_deletion("acme", "gone", began + 1, 1, began_at=began)]), []) == 1
    kept = [json.loads(line) for line in snapshot.read_text().splitlines()]
    assert [(x["user_id"], x["prompt"]) for x in kept] == [("acme/gone", "q2"), ("acme/ann", "Tea?")], kept


def test_a_row_given_again_in_milliseconds_is_the_row_stored_so(tmp_path):
    """Guards rows44's `_differs` line, which no test reached (reverted, every test passed): the store now reads a
    stored 1.7e12 as its seconds, so the same row given again as it was stored (a library call; a feedback log an
    earlier release wrote, replayed after its rows were moved) must still be the row held, not a PrefIdConflict naming
    `created_at`, which the mover logs and drops."""
    from pluralign.store import StoredPreference

    store = Store(str(tmp_path / "db"), "enc", DIM)
    row = StoredPreference(tenant="t", user_id="ann", pref_id="p0", prompt="q", chosen="yes", rejected="no", kind="comparison",
                           created_at=1_700_000_100_123.0)
    vectors = [[0.5] * DIM]
    assert store.add_preferences([row], vectors, vectors, vectors) == 1
    assert Store(str(tmp_path / "db"), "enc", DIM).add_preferences([row], vectors, vectors, vectors) == 0  # read from the table
    assert store.add_preferences([row], vectors, vectors, vectors) == 0  # from the cached history
    assert [(p.pref_id, p.created_at) for p in store.preferences_for("t", "ann")[0]] == [("p0", 1_700_000_100.123)]


@pytest.mark.parametrize(("given", "said"), [
    (["--store", "", "--data", "p.jsonl"], "--store '': empty; give the service's store (its data folder, or an object-store URI), or leave --store out"),
    (["--store", "nowhere", "--data", ""], "--data '': empty; give a preference file (.jsonl or .parquet), or leave --data out"),
    (["--store", "nowhere", "--path", ""], "--path '': empty; give the folder of the --source data, or leave --path out"),
])
def test_an_audits_empty_source_option_is_refused_not_read_as_not_given(tmp_path, capsys, monkeypatch, given, said):
    """rows44 refused an empty --cache, --user-groups, --pal and --em, but not audit's own sources: `--store "$STORE"`
    (unset) beside --data audited the file, and beside --store an empty --data or --path was not the "not read with
    --store" error any other value is (or --data '' beside --source persona audited the population), exit 0."""
    from tests.unit.clitools import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({**ROW, "attributes": {"segment": "s"}}) + "\n")
    code, stdout, err = cli(capsys, "audit", "--group-by", "segment", *given)
    assert code == 2 and stdout == "", err
    assert err.strip() == f"pluralign: error: {said}", err
