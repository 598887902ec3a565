"""Session trial52: `pluralign data export --out x.parquet` of a user's preference file mixing TRL's forms (the
service's export of a user with feedback, text, and an imported conversation, messages), run as a user runs it: the
`pluralign` CLI (in-process: tests/unit/clitools.py). README says such an export is "an error naming the column and the records"; it named the
column only (`column `chosen` mixes forms across records (text and messages)`), not `--out` nor which records, so a
user of a large file could not find the rows to split off. Now it names `--out`, and the first record of each form."""

from __future__ import annotations

from tests.unit.clitools import cli, write_jsonl

TEXT = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}
MESSAGES = {"chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]}


def test_a_parquet_export_mixing_text_and_messages_names_out_the_column_and_a_record_of_each_form(tmp_path, capsys):
    src = write_jsonl(tmp_path / "prefs.jsonl", [{"user_id": "ann", **row} for row in (TEXT, TEXT, MESSAGES)])
    out = tmp_path / "prefs.parquet"
    code, stdout, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", src, "--out", str(out))
    assert code == 2 and stdout == "", (code, stderr)
    (error,) = stderr.strip().splitlines()
    assert error.startswith(f"pluralign: error: --out {out}: column `chosen` "), error  # before: no --out
    assert "text (line 1 of --path) and messages (line 3 of --path)" in error and ".jsonl" in error, error  # before: no record
    assert not out.exists()


def test_the_records_named_are_the_lines_of_path_when_bad_lines_are_skipped(tmp_path, capsys):
    """Review of trial52: the records named were counted among those read, not in --path: with a bad line skipped
    (`--skip-bad`) before them, "text (record 1) and messages (record 2)" pointed at lines 1 and 2 of the file, which
    hold the bad row and the text; the rows are on lines 2 and 3. Now each is named by its place in --path, for a
    column of TRL's forms and for an extra column holding two kinds of value alike."""
    bad = {"prompt": "Tea?", "chosen": "Yes."}  # no `rejected`: skipped
    src = write_jsonl(tmp_path / "prefs.jsonl", [{"user_id": "ann", **row} for row in (bad, TEXT, MESSAGES)])
    out = tmp_path / "prefs.parquet"
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", src, "--skip-bad", "--out", str(out))
    assert code == 2, (code, stderr)
    assert "text (line 2 of --path) and messages (line 3 of --path)" in stderr, stderr  # before: records 1 and 2
    scores = [TEXT | {"id": 8}, bad, TEXT | {"id": "r-8"}]  # (a score is a number since session trl55: "high" was here)
    src = write_jsonl(tmp_path / "scores.jsonl", [{"user_id": "ann", **row} for row in scores])
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", src, "--skip-bad", "--out", str(out))
    assert code == 2 and "holds a number (line 1 of --path) and text (line 3 of --path)" in stderr, stderr  # before: record 2
    assert not out.exists()
