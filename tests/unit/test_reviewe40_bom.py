"""Review 40: JSON routes ignore a UTF-8 byte order mark since session 40 (RFC 8259 8.1; Notepad and
PowerShell's `Out-File -Encoding utf8` write one), but a JSON lines file starting with one was refused
by every `pluralign` command that reads a preference file (`line 1: malformed JSON ...; it starts with a
byte order mark (U+FEFF): save the file as UTF-8 without one`). The real CLI, in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

BOM = b"\xef\xbb\xbf"
ROWS = [{"user_id": "u1", "prompt": "Café or tea?", "chosen": "Café.", "rejected": "Tea."},
        {"user_id": "u2", "prompt": "Q?", "chosen": "A.", "rejected": "B."}]


def stats(path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "training.cli", "data", "stats", "--source", "jsonl", "--path", str(path), "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_jsonl_file_starting_with_a_utf8_bom_is_read(tmp_path, compressed):
    raw = BOM + b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in ROWS)
    path = tmp_path / ("bom.jsonl.gz" if compressed else "bom.jsonl")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    done = stats(path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["judgments"] == 2, done.stdout


def test_a_bom_anywhere_but_the_start_is_still_refused_naming_the_line(tmp_path):
    path = tmp_path / "mid.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + BOM + json.dumps(ROWS[1]).encode() + b"\n")
    done = stats(path)
    assert done.returncode != 0 and "line 2" in done.stderr and "byte order mark" in done.stderr, done.stderr
