"""Session fuzz36: a preference row's `trl` key is no column of any file (TRL's columns and pluralign's,
README 'Preference files'; `preference_row` never writes it) and is refused as any unknown key is.
Before, `row_to_preference` handed it to `msgspec.convert` as the record's own `Preference.trl`: the
row's TRL form, which exports write back instead of its texts."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

ROW = {"user_id": "u", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "trl": {"chosen": "Sure, tea.", "rejected": "Coffee!"}}


def test_a_rows_trl_key_is_refused_as_an_unknown_field_by_the_cli(tmp_path):
    """Before: `pluralign data export` exited 0 and wrote {"chosen": "Sure, tea.", "rejected": "Coffee!"}
    (no prompt) for a row whose texts it read as Tea? / Yes. / No.: another comparison, silently."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"user_id": "u", "prompt": "Milk?", "chosen": "Yes.", "rejected": "No."}) + "\n" + json.dumps(ROW) + "\n")
    result = subprocess.run([sys.executable, "-m", "training.cli", "data", "export", "--source", "jsonl", "--path", str(source),
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "line 2, field `trl`: unknown field" in result.stderr, result.stderr
    assert not out.exists()
