"""trial57: what a new user of the `pluralign` CLI met, driven as they ran it (in-process CLI, tests/unit/clitools.py)."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("command", ["stats", "export", "import"])
def test_a_misspelt_data_source_is_a_usage_error_naming_the_closest(capsys, tmp_path, command):
    """`--source json` (the file is JSON lines) was "unknown --source 'json': expected ukp_convarg1, jsonl or parquet",
    raised after the file was opened, without the closest source or the command's --help; it is now argparse's
    usage error, exit 2, as a misspelt command or choice is."""
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"user_id": "u", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}) + "\n")
    extra = {"stats": [], "export": ["--out", str(tmp_path / "out.jsonl")], "import": ["--url", "http://127.0.0.1:9", "--key", "pk-x"]}[command]
    code, out, err = cli(capsys, "data", command, "--source", "json", "--path", str(path), *extra)
    assert code == 2 and out == "", (code, out, err)
    assert "invalid choice: 'json' (did you mean 'jsonl'?)" in err and f"`pluralign data {command} --help`" in err, err
    assert not (tmp_path / "out.jsonl").exists()
