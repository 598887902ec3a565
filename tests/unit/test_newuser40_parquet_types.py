"""`pluralign data export --out x.parquet` of a preference file whose TRL extra column holds values of two
types across rows, as the service's export of an import may (`id` 7 in one row, "r-3" in another: TRL's extra
columns are kept as they came; a score is a number since session trl55, which used `score_chosen` "high" here),
run as a user runs it: the real CLI's entry point (`training.cli.main`) in this process, as `tests.unit.clitools.cli`
runs it (a subprocess says the same and pays ~1 CPU-s of imports a run).

Before: the error said the column "mixes forms across records (e.g. text and messages): write them to
separate files", the words for a `chosen` of text beside one of messages, which an extra column never
holds, and named no way out. Now it says the column holds a number in one row and text in another, which
rows, and that JSON lines (`.jsonl`) keep them as they are; the forms' own message stays for
prompt/chosen/rejected."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tests.unit.clitools import cli


def export(capsys, tmp_path, rows: list[dict], out: str) -> SimpleNamespace:
    """`pluralign data export` of `rows`: its exit code as `returncode`, its stdout and stderr."""
    src = tmp_path / "prefs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, stdout, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(src), "--user", "ann", "--out", str(tmp_path / out))
    return SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr)


def test_an_extra_column_of_two_types_is_named_with_its_types_and_the_jsonl_way_out(tmp_path, capsys):
    rows = [{"prompt": "p1", "chosen": "a", "rejected": "b", "id": 7},
            {"prompt": "p2", "chosen": "a", "rejected": "b"},
            {"prompt": "p3", "chosen": "a", "rejected": "b", "id": "r-3"}]
    result = export(capsys, tmp_path, rows, "prefs.parquet")
    assert result.returncode == 2, (result.returncode, result.stderr)
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("pluralign: error: "), error
    assert "column `id` holds a number (line 1 of --path) and text (line 3 of --path)" in error, error
    assert "text and messages" not in error and ".jsonl" in error, error
    assert not (tmp_path / "prefs.parquet").exists()
    assert export(capsys, tmp_path, rows, "prefs-out.jsonl").returncode == 0  # the way out named works


def test_text_beside_messages_keeps_its_own_words(tmp_path, capsys):
    rows = [{"prompt": "p1", "chosen": "a", "rejected": "b"},
            {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}]
    result = export(capsys, tmp_path, rows, "prefs.parquet")
    assert result.returncode == 2, (result.returncode, result.stderr)
    error = result.stderr.strip().splitlines()[-1]
    assert "mixes forms across records (text and messages)" in error and ".jsonl" in error, error
