"""Review ro43 of rows43 (old millisecond times, date hints, the CLI's edges). A `created_at` in epoch milliseconds that a
release before session rows42 stored keeps its meaning, the seconds it meant, where the store's rows are read by time:
an audit's `--since` and its order of each user's comparisons, and which of a user's labels is their latest."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from pluralign.data.io import read_rows
from pluralign.data.record import PreferenceError
from pluralign.store import Store, StoredPreference
from tests.unit.clitools import cli

DIM = 4
MS = 1_700_000_000_123.0  # 2023-11-14 in milliseconds, as an import before session rows42 stored it
ROW = {"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def stored_rows(folder, times: dict[str, float], attributes=lambda i: {}) -> Store:
    """A store holding one comparison of user `ann` (tenant `t`) at each of `times` (pref_id -> created_at)."""
    store = Store(str(folder), "enc", DIM)
    rows = [StoredPreference(tenant="t", user_id="ann", pref_id=pref_id, prompt=f"q{i}", chosen=f"yes {i}", rejected=f"no {i}",
                             kind="comparison", created_at=at, attributes={"segment": "s", **attributes(i)})
            for i, (pref_id, at) in enumerate(times.items())]
    vectors = np.random.default_rng(0).standard_normal((len(rows), DIM)).astype(np.float32)
    store.add_preferences(rows, vectors, vectors, -vectors)
    return store


def test_an_audit_since_a_date_scores_no_comparison_made_in_milliseconds_before_it(tmp_path, capsys):
    """Before: `pluralign audit --store ... --since T` (the admin route's `since=`) read `created_at` as stored, so a
    comparison of 2023 stored in milliseconds counted as made in the year 55,847: scored by an audit since 2025 (and last
    in its user's order, where each is predicted from the user's earlier ones)."""
    stored_rows(tmp_path / "db", {"old": 1_600_000_000.0, "ms": MS, "new": 1_750_000_000.0})
    code, out, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "segment", "--since", "1720000000",
                         "--min-comparisons", "1", "--json")
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["users"], report["comparisons"]) == (1, 1), report  # the 2025 comparison only


@pytest.mark.parametrize(("created_at", "said"), [
    ("1969-07-20", "(a date before 1970-01-01 UTC, outside the times a created_at takes"),
    (datetime.date(1969, 7, 20), "(a date before 1970-01-01 UTC,"),
    ("1970-01-01T00:30:00+01:00", "(a date before 1970-01-01 UTC,"),
    ("9999-12-31T23:59:59.999999+00:00", "(a date after 9999-12-31T23:59:59 UTC,"),
])
def test_a_dates_hint_never_gives_a_time_the_rule_refuses(created_at, said):
    """Before (rows43's hint): "give its Unix time, -14256000.0 for this one": a number the same rule refuses."""
    with pytest.raises(PreferenceError) as caught:
        read_rows([{**ROW, "created_at": created_at}])
    assert said in caught.value.problem and "for this one" not in caught.value.problem, caught.value.problem


@pytest.mark.parametrize(("created_at", "said"), [
    ("1700000000", "(a number as text? give it as a number (1700000000 without quotes in JSON)"),
    ("1700000000123", "(a number as text? give it as a number (1700000000123 without quotes in JSON), in seconds: "
                      "milliseconds? divide by 1000: 1700000000.123)"),
])
def test_a_number_given_as_text_is_told_so_not_taken_for_a_date(created_at, said):
    """Before: '1700000000' (a CSV's column made JSON text) was hinted "a date? give its Unix time: for ISO text ..."."""
    with pytest.raises(PreferenceError) as caught:
        read_rows([{**ROW, "created_at": created_at}])
    assert said in caught.value.problem and "a date" not in caught.value.problem, caught.value.problem


def test_threads_takes_one_per_cpu_of_a_machine_past_1024_and_its_error_names_the_most(tmp_path, capsys, monkeypatch):
    """Before: --threads was at most 1024 whatever the machine, so `--threads $(nproc)` on one with 1,920 logical CPUs
    (a Power10 E1080 with SMT8, an 8-socket Xeon) was refused, "expected an integer < 1025" (a bound the help did not
    give). The most is 1024 or the machine's CPU count, whichever is more, named as the help names it."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 1920)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    # an --out that is a file: refused after the arguments parse and before any thread is made
    code, _, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", str(a_file), "--out", str(a_file), "--threads", "1920")
    assert code == 2 and "--threads" not in err and err.startswith(f"pluralign: error: --out {a_file}"), err
    code, _, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", "x", "--out", "y", "--threads", "1921")
    assert code == 2 and "argument --threads: expected an integer <= 1920, got 1921" in err, err
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: 1024
    code, out, _ = cli(capsys, "eval", "--help")
    assert code == 0 and "torch CPU threads, 0 to 1024" in " ".join(out.split()), out


@pytest.mark.parametrize(("command", "said"), [
    (["train", "fspo", "--population", "file", "--data", "p.jsonl", "--steps", "1"], "--out '': empty; give the folder to write the LoRA adapter to"),
    (["audit", "--data", "p.jsonl", "--group-by", "segment"], "--out '': empty; give a file name for the report JSON"),
])
def test_an_empty_out_of_a_command_whose_out_is_optional_is_refused_not_ignored(tmp_path, capsys, monkeypatch, command, said):
    """Before: rows43 refused `--out ""` (`--out "$OUT"` with OUT unset) of the trainers that need one, but `train fspo`
    and `audit` read an empty --out as none: fspo trained (minutes to hours) and saved nothing, the audit wrote no
    report, both exit 0 with `"out": ""` or nothing said."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(json.dumps({**ROW, "attributes": {"segment": "s"}}) + "\n")
    code, stdout, err = cli(capsys, *command, "--out", "")
    assert code == 2 and stdout == "", err
    assert err.strip() == f"pluralign: error: {said}", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


@pytest.mark.parametrize(("command", "description", "what"), [
    (["train", "maxmin", "--pairs", "missing.jsonl"], "meta.json", "MaxMin policy"),
    (["train", "fspo", "--population", "file", "--data", "missing.jsonl"], "pluralign.json", "LoRA adapter"),
])
def test_the_lora_trainers_refuse_a_later_releases_artifact_in_their_out_too(tmp_path, capsys, monkeypatch, command, description, what):
    """rows43 gave `train maxmin` and `train fspo` the check of `train pal|em` (tested there only): with it gone from
    either, this run went on to its data (a missing file here; a real one: the training, then the artifact replaced)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "later"
    out.mkdir()
    (out / description).write_text(json.dumps({"schema_version": 2, "kind": "a later one"}))
    code, stdout, err = cli(capsys, *command, "--out", str(out))
    assert code == 2 and stdout == "", err
    assert err.startswith(f"pluralign: error: --out {out}: holds a {what} of schema 2, written by a later pluralign release "
                          "(this one writes schema 1)"), err
    assert [p.name for p in out.iterdir()] == [description]


def test_data_import_names_pluralign_key_when_the_key_no_header_can_carry_came_from_it(tmp_path, capsys, monkeypatch):
    """rows43's check names where the key came from; only --key was tested (the error naming --key for PLURALIGN_KEY's
    key would send a user to an option they never gave)."""
    monkeypatch.setenv("PLURALIGN_KEY", "pk-abc\n")
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    code, stdout, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", str(data), "--url", "http://127.0.0.1:9")
    assert code == 2 and stdout == "" and err.startswith("pluralign: error: PLURALIGN_KEY: not an API key (not shown)"), err


def test_an_audit_of_a_file_since_a_time_refuses_comparisons_that_have_no_time(tmp_path, capsys):
    """Before: `pluralign audit --data FILE --since T` where some row had no `created_at` (a TRL dataset; a service
    export's row an older version stored with -5 or 1e300, written null) ordered every comparison by its line number
    instead, which `--since` then compared with T: 0 comparisons scored, exit 0, no figure and nothing said."""
    rows = [{**ROW, "user_id": f"u{u}", "prompt": f"Tea {i}?", "attributes": {"segment": "s"}, "created_at": 1_700_000_000.0 + i}
            for u in range(2) for i in range(3)]
    rows[4]["created_at"] = None
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, stdout, err = cli(capsys, "audit", "--data", str(data), "--group-by", "segment", "--since", "1700000001", "--json")
    assert code == 2 and stdout == "", err
    assert err.strip() == ("pluralign: error: --since 1700000001: 1 of the 6 comparisons audited has no created_at, so whether "
                           "it came at or after that time is unknown; give every row its time, or audit without --since"), err
