"""Session trial52: `pluralign data export --out x.parquet` of a user's preference file mixing TRL's forms (the
service's export of a user with feedback, text, and an imported conversation, messages), run as a user runs it: the
real CLI in a subprocess. README says such an export is "an error naming the column and the records"; it named the
column only (`column `chosen` mixes forms across records (text and messages)`), not `--out` nor which records, so a
user of a large file could not find the rows to split off. Now it names `--out`, and the first record of each form."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

TEXT = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}
MESSAGES = {"chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}]}


def test_a_parquet_export_mixing_text_and_messages_names_out_the_column_and_a_record_of_each_form(tmp_path):
    src, out = tmp_path / "prefs.jsonl", tmp_path / "prefs.parquet"
    src.write_text("".join(json.dumps({"user_id": "ann", **row}) + "\n" for row in (TEXT, TEXT, MESSAGES)))
    result = subprocess.run([sys.executable, "-m", "training.cli", "data", "export", "--source", "jsonl", "--path", str(src),
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "", (result.returncode, result.stderr)
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(f"pluralign: error: --out {out}: column `chosen` "), error  # before: no --out
    assert "text (record 1) and messages (record 3)" in error and ".jsonl" in error, error  # before: no record
    assert not out.exists()
