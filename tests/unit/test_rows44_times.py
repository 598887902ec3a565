"""Session rows44: times an older release stored in other units, or with no meaning at all, are read as what they
meant wherever the store reads or compares them (its pages and streamed reads, in order; a DELETE's "received before";
an audit's first-received time), imports refuse a time in micro- or nanoseconds with a hint as they do one in
milliseconds, and the CLI's edges (`--cache ''`, `--since` past the times an import takes)."""

from __future__ import annotations

import json
import time

import pytest

from pluralign.data.record import MAX_CREATED_AT, created_at_problem
from pluralign.store import Store
from tests.stores import old_preferences_table
from tests.unit.clitools import cli

DIM = 8
S = 1_700_000_000.0  # 2023-11-14 in seconds
MS, US, NS = 1_700_000_100_123.0, 1_700_000_200_000_000.0, 1_700_000_300_000_000_000.0  # later that day, in ms, us, ns
ROW = {"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def test_a_time_in_micro_or_nanoseconds_of_an_old_table_reads_as_its_seconds_in_order(tmp_path):
    """Before: a page and the streamed read (the full export, the preference file's order) gave a time in milliseconds
    as stored (1.7e12) and sorted it after every time in seconds; micro- and nanoseconds likewise (and the preference
    file wrote those as null). Each is read as the seconds it meant, in their order, the cursor's key included."""
    old_preferences_table(tmp_path, (NS, US, MS, S))
    store = Store(str(tmp_path), "enc", DIM)
    want = [("old3", S), ("old2", MS / 1e3), ("old1", US / 1e6), ("old0", NS / 1e9)]
    page, total = store.preferences_for("t", "ann")
    assert total == 4 and [(p.pref_id, p.created_at) for p in page] == want
    assert [(p.pref_id, p.created_at) for p in store.preferences_in_order("t", "ann", rows_per_read=2)] == want
    after, _ = store.preferences_for("t", "ann", after=(MS / 1e3, "old2"))
    assert [p.pref_id for p in after] == ["old1", "old0"]
    assert [p.received() for p in page] == [t for _, t in want]


@pytest.mark.parametrize(("stored", "received"), [(1e300, 0.0), (float("inf"), 0.0), (-5.0, 0.0), (US, US / 1e6), (NS, NS / 1e9)])
def test_a_row_of_an_old_table_with_an_absurd_or_foreign_unit_time_goes_with_a_finished_delete(tmp_path, stored, received):
    """Before: a row stored before `received_at` was kept counts as received at its `created_at`; 1e300 (or a time in
    micro- or nanoseconds, read as seconds) was a date past any DELETE, so `received_since` said the user came back and a
    DELETE finished after that (`delete_feedback_before`, the journal's `before`) kept the row: a deleted user's
    comparison survived, and an audit took the user for one who came back after it. A time in another unit counts as
    received at its seconds; one of no unit as before any DELETE (0.0)."""
    from pluralign.fairness.store_source import first_received_from_store

    old_preferences_table(tmp_path, (stored,))
    store = Store(str(tmp_path), "enc", DIM)
    now = time.time()
    assert [p.received() for p in store.preferences_for("t", "ann")[0]] == [received]
    assert first_received_from_store(str(tmp_path)) == {"t/ann": received}
    assert not store.received_since("t", "ann", now)
    assert store.received_since("t", "ann", received)  # as `received()` reads it
    assert store.delete_feedback_before("t", "ann", now) == 1
    assert store.preferences_for("t", "ann")[0] == []


def test_a_row_of_an_old_table_whose_time_is_not_a_number_goes_with_a_finished_delete(tmp_path):
    """NaN, which no comparison holds: the filter of rows received before a time must still take it."""
    old_preferences_table(tmp_path, (float("nan"),))
    store = Store(str(tmp_path), "enc", DIM)
    assert not store.received_since("t", "ann", time.time())
    assert store.delete_feedback_before("t", "ann", time.time()) == 1


@pytest.mark.parametrize(("created_at", "said"), [
    (US, "microseconds? divide by 1000000: 1700000200.0"),
    (NS, "nanoseconds? divide by 1000000000: 1700000300.0"),
    (MS, "milliseconds? divide by 1000: 1700000100.123"),
    (str(US), "in seconds: microseconds? divide by 1000000: 1700000200.0"),
])
def test_a_time_in_micro_or_nanoseconds_is_refused_with_its_seconds(created_at, said):
    """Before: only milliseconds had a hint; 1.7e15 (Python's `time.time_ns() // 1000`, a Parquet column of
    microseconds) and 1.7e18 were said to be out of range, nothing more."""
    problem = created_at_problem(created_at)
    assert problem is not None and said in problem, problem


def test_an_empty_cache_is_refused_as_an_empty_out_is(tmp_path, capsys, monkeypatch):
    """Before: `--cache ''` (`--cache "$CACHE"` with CACHE unset) was read as no --cache, the default cache used
    without a word, where every other path option refuses an empty value."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({**ROW, "attributes": {"segment": "s"}}) + "\n")
    for command in (["eval", "--model", "bt", "--protocol", "ukp"],
                    ["audit", "--data", "p.jsonl", "--group-by", "segment"],
                    ["train", "pal", "--protocol", "file", "--data", "p.jsonl", "--out", "o"]):
        code, stdout, err = cli(capsys, *command, "--cache", "")
        assert code == 2 and stdout == "", err
        assert err.strip() == "pluralign: error: --cache '': empty; give the embedding cache's file, or leave --cache out", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_an_audits_since_takes_every_time_an_import_takes_and_no_later(tmp_path, capsys):
    """Before: a job's and the service's `since` stopped at 1e11 (the year 5138) while imports take times to the end
    of year 9999 (MAX_CREATED_AT), and the CLI's `--since` had no bound at all."""
    from training.jobs.params import decode_params

    assert decode_params("audit", {"group_by": "segment", "since": MAX_CREATED_AT}).since == MAX_CREATED_AT
    with pytest.raises(ValueError, match="since"):
        decode_params("audit", {"group_by": "segment", "since": MAX_CREATED_AT + 1})
    code, _, err = cli(capsys, "audit", "--data", "p.jsonl", "--group-by", "segment", "--since", "1700000000000")
    assert code == 2 and f"argument --since: expected a number <= {MAX_CREATED_AT:.0f}" in err, err


def test_a_population_snapshot_an_earlier_release_wrote_loses_a_deleted_users_rows_whatever_their_time(tmp_path):
    """Before: a DELETE finished after the user came back (`forget_before`), or another replica's record of it (by hash,
    with `until`: when it began), drops from a population snapshot the user's rows received before that, by the
    snapshot's `created_at`; a snapshot an earlier release wrote (before the job snapshots' `file_time`: the stored time
    as it was) held 1.7e12 (milliseconds) or 1e300 there, compared as seconds, after any DELETE: the deleted user's
    rows stayed. They are read as `stand_in_received` reads them; the row they sent after the DELETE began stays."""
    from pluralign.store.deletions import Forget, new_deletion
    from service.admin.services import _forget_in_snapshot

    began = time.time() - 60  # a minute ago: the row sent since (began + 5) was received before now
    lines = [{"user_id": "acme/gone", "prompt": f"q{i}", "chosen": "yes", "rejected": "no", "created_at": at}
             for i, at in enumerate((MS, 1e300, -5.0, US, began + 5))] + [{**ROW, "user_id": "acme/ann", "created_at": MS}]
    snapshot = tmp_path / "comparisons-1.jsonl"  # an earlier release's: no users file beside it
    snapshot.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dropped: list[str] = []
    forget = Forget.of([new_deletion("acme", "gone", began + 1, 1, began_at=began)])
    assert _forget_in_snapshot(snapshot, forget, dropped) == 1
    kept = [json.loads(line) for line in snapshot.read_text().splitlines()]
    assert [(x["user_id"], x["prompt"]) for x in kept] == [("acme/gone", "q4"), ("acme/ann", "Tea?")], kept
    assert sorted(set(dropped)) == ["no", "q0", "q1", "q2", "q3", "yes"]


@pytest.mark.parametrize(("option", "said"), [
    ("--user-groups", "--user-groups '': empty; give the user-groups file (a JSON object user_id -> group name), or leave --user-groups out"),
    ("--pal", "--pal '': empty; give the PAL checkpoint folder, or leave --pal out"),
    ("--em", "--em '': empty; give the EM mixture folder, or leave --em out"),
])
def test_an_audits_empty_input_option_is_refused_not_ignored(tmp_path, capsys, monkeypatch, option, said):
    """Before: `audit --data p.jsonl --user-groups ''` (or --pal, --em: `"$VAR"` with VAR unset) read the empty value as
    no option and printed a report made without it, exit 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({**ROW, "attributes": {"segment": "s"}}) + "\n")
    code, stdout, err = cli(capsys, "audit", "--data", "p.jsonl", "--group-by", "segment", option, "")
    assert code == 2 and stdout == "", err
    assert err.strip() == f"pluralign: error: {said}", err


def test_an_audit_since_a_time_scores_no_stored_comparison_whose_time_means_none(tmp_path, capsys):
    """Before: `pluralign audit --store ... --since T` (the admin route's `since=`) scored a comparison an older release
    stored at 1e300 (any finite number was taken) as made after any `since`; `audit --data --since` refuses such rows (no
    time), and a DELETE reads them as received before any DELETE. Its time is unknown: never at or after `since`."""
    from pluralign.store import StoredPreference

    store = Store(str(tmp_path / "db"), "enc", DIM)
    times = {"old": 1_600_000_000.0, "absurd": 1e300, "new": 1_750_000_000.0, "us": US}
    rows = [StoredPreference(tenant="t", user_id="ann", pref_id=pref_id, prompt=f"q{i}", chosen=f"yes {i}", rejected=f"no {i}",
                             kind="comparison", created_at=at, attributes={"segment": "s"}) for i, (pref_id, at) in enumerate(times.items())]
    vectors = [[float(i == j) for j in range(DIM)] for i in range(len(rows))]
    store.add_preferences(rows, vectors, vectors, [[-x for x in v] for v in vectors])
    code, out, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "segment", "--since", "1720000000",
                         "--min-comparisons", "1", "--json")
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["users"], report["comparisons"]) == (1, 1), report  # the 2025 comparison only (2023's in us is before)


@pytest.mark.parametrize("since, hint", [("2026-01-01", "1767225600.0 for this one read as UTC"),
                                         ("1767225600000", "milliseconds? divide by 1000: 1767225600.0")])
def test_an_audits_since_given_as_a_date_or_in_milliseconds_is_told_its_seconds(capsys, since, hint):
    """newsvc56: `pluralign audit --since 2026-01-01` was "expected a number, got '2026-01-01'" (and a time in
    milliseconds "expected a number <= 253402300799"), where an import's created_at names the date's seconds or the
    division. Still a usage error naming --since, now with that hint, as the service's `since` gives it."""
    code, out, err = cli(capsys, "audit", "--data", "p.jsonl", "--group-by", "segment", "--since", since)
    assert code == 2 and not out and "argument --since: expected a number" in err and hint in err, err


def test_an_audits_since_of_a_date_before_1970_is_told_of_the_times_it_takes_not_of_an_import_s(capsys):
    """review newsvc56: `pluralign audit --since 1969-12-31` was told '... outside the times a created_at takes: give
    none to have the row stamped on receipt', an import's hint: --since is no created_at and stamps nothing."""
    code, out, err = cli(capsys, "audit", "--data", "p.jsonl", "--group-by", "segment", "--since", "1969-12-31")
    assert code == 2 and not out and "argument --since: expected a number, got '1969-12-31' (a date before 1970-01-01 " \
        "UTC, outside the times taken: Unix seconds from 0 (1970-01-01) to 253402300799 (9999-12-31T23:59:59 UTC))" in err, err
    assert "created_at" not in err and "stamped" not in err, err
