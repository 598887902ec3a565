"""A hostile pass on the `pluralign` command line (break session 21b): an output that cannot be
written was found out only when written, after the work (a trainer's whole run), and the error named
a path but not the option (`pluralign: error: Not a directory: afile/pal`)."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli
from tests.unit.clitools import write_jsonl as write_lines


def rows(n_users: int = 2, per_user: int = 10) -> list[dict]:
    return [{"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
             "attributes": {"segment": f"s{u}"}}
            for u in range(n_users) for i in range(per_user)]


COMMANDS = {  # each command writing --out, with what it needs besides
    "train pal": ["train", "pal", "--protocol", "file", "--data", "{data}", "--k", "1", "--epochs", "1", "--out", "{out}"],
    "train em": ["train", "em", "--protocol", "file", "--data", "{data}", "--k", "1", "--out", "{out}"],
    "data export": ["data", "export", "--source", "jsonl", "--path", "{data}", "--out", "{out}.jsonl"],
    "audit": ["audit", "--data", "{data}", "--group-by", "segment", "--out", "{out}.json"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_under_a_file_is_refused_before_the_work_naming_out(tmp_path, capsys, command, one_torch_thread):
    """`--out notes.txt/pal` (a file where a folder must be): train pal trained its whole run, then
    said `pluralign: error: Not a directory: notes.txt/pal`; export read the data first, then said so
    of a temp file (`.../.x.jsonl.mb9gn2wa`)."""
    data = write_lines(tmp_path / "p.jsonl", rows())
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "result"
    argv = [a.format(data=data, out=out) for a in COMMANDS[command]]
    code, stdout, err = cli(capsys, *argv)
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --out {argv[-1]}: {tmp_path / 'notes.txt'} is a file, not a folder"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "p.jsonl"]


def test_an_out_where_nothing_can_be_written_is_refused_before_training(tmp_path, capsys):
    """/proc takes no new file, even for root (a read-only mount does the same): the run trained,
    then failed on it, naming no option."""
    data = write_lines(tmp_path / "p.jsonl", rows())
    code, _, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", data, "--k", "1", "--out", "/proc/pal-out")
    assert code == 2 and err.strip().startswith("pluralign: error: --out /proc/pal-out: cannot write in /proc ("), err


def test_skip_bad_reports_why_a_line_that_is_not_json_was_skipped(tmp_path, capsys):
    """--skip-bad said `line 2: expected a JSON object` of a line that is not JSON at all (or not
    UTF-8): the line's own error was dropped and the row checked as if it were null."""
    data = write_lines(tmp_path / "p.jsonl", [rows()[0], "{not json", rows()[1]])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", data, "--skip-bad", "--json")
    assert code == 0 and '"judgments":2' in out, err
    assert f"--path {data}: skipped 1 bad row (--skip-bad); first: line 2: malformed JSON" in err, err  # 25b: no list repr


def test_a_file_whose_every_row_is_bad_is_an_error_even_with_skip_bad(tmp_path, capsys):
    """A preference file saved as UTF-16 (Windows' "Unicode"): every line is bad, so --skip-bad (as
    the error's hint suggested) skipped them all, and `data export` wrote an empty file, exit 0. Now
    nothing is written and the error names the file, the count and the first line's reason, with a
    hint at the encoding."""
    data = tmp_path / "p.jsonl"
    data.write_bytes("".join(json.dumps(r) + "\n" for r in rows()).encode("utf-16"))
    out = tmp_path / "out.jsonl"
    code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(data), "--skip-bad", "--out", str(out))
    assert code == 2 and stdout == "" and not out.exists(), err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --path {data}: no row could be read: all "), line  # 21: UTF-16 splits into one more "line"
    assert "rows are bad (first: line 1: malformed JSON" in line
    assert "UTF-16" in line


def test_a_damaged_parquet_file_is_an_error_naming_the_option(tmp_path, capsys):
    """A Parquet file cut short said `pluralign: error: Could not open Parquet input source
    '<path>': Parquet magic bytes not found in footer...`: Arrow's words, no option named, unlike
    every other bad preference file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pylist(rows()), whole)
    data = tmp_path / "p.parquet"
    data.write_bytes(whole.read_bytes()[:-100])
    code, out, err = cli(capsys, "data", "stats", "--source", "parquet", "--path", str(data))
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.strip().startswith(f"pluralign: error: --path {data}: not a whole Parquet file (truncated or another format)"), err


@pytest.mark.parametrize("cache", ["not a database", "a folder", "under a file"])
def test_a_cache_that_cannot_be_opened_is_an_error_naming_cache(tmp_path, capsys, cache):
    """--cache on a file that is not SQLite, on a folder, or under a file: train pal printed a
    traceback ending in sqlite3.DatabaseError: file is not a database (or OperationalError: unable
    to open database file), exit 1; audit said `File exists: notes.txt`."""
    data = write_lines(tmp_path / "p.jsonl", rows())
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    path = {"not a database": tmp_path / "notes.txt", "a folder": tmp_path / "folder", "under a file": tmp_path / "notes.txt" / "c.sqlite"}[cache]
    code, out, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", data, "--k", "1", "--out", str(tmp_path / "pal"), "--cache", str(path))
    assert code == 2 and out == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --cache {path}: "), line
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "pal").exists()


@pytest.mark.parametrize("blank", ["", " "])
def test_keys_revoke_with_a_blank_argument_revokes_nothing(tmp_path, capsys, blank):
    """`pluralign keys revoke "$KEY_ID"` with the variable unset revoked every key created without
    --name (their name is ""), in every tenant, at once in the running service."""
    keys = ["keys", "--data-dir", str(tmp_path)]
    for tenant in ("acme", "globex"):
        assert cli(capsys, *keys, "create", "--tenant", tenant)[0] == 0
    code, out, err = cli(capsys, *keys, "revoke", blank)
    assert code == 2 and out == "" and err.startswith("pluralign: error: no key id or name given"), (code, out, err)
    code, out, _ = cli(capsys, *keys, "list")
    assert code == 0 and out.strip().splitlines()[-1] == '{"keys":2}'


@pytest.mark.parametrize("command", ["audit", "train adapter"])
def test_a_mistyped_store_is_an_error_naming_store_and_creates_nothing(tmp_path, capsys, command):
    """`audit --store data/lanced` (a typo) created that folder, then said `pluralign: error: Table
    'preferences' was not found`; `train adapter --store ./dta` loaded MiniLM and created a whole
    empty LanceDB store there (four tables) before saying the user had no comparisons in it."""
    store = tmp_path / "typo"
    argv = {"audit": ["audit", "--store", str(store), "--group-by", "segment"],
            "train adapter": ["train", "adapter", "--user", "alice", "--store", str(store), "--steps", "1"]}[command]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.strip().startswith(f"pluralign: error: --store {store}: no pluralign store there"), err
    assert not store.exists()
