"""A gzip-compressed preference file is opened once and closed when read. Before,
`pluralign.data.io._jsonl_rows` opened it once for its first two bytes and again to read, and handed
that second file to `gzip.open`, which never closes a file object it is given (nor did the check of
a damaged stream, `_gzip_damage`): each read left an open file for the garbage collector, a
`ResourceWarning: unclosed file` under `python -W error::ResourceWarning` (or `-X dev`)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_newuser31_cli import ROW


def strict_pluralign(cwd, *argv: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    """The CLI in a Python that turns every ResourceWarning into an error (reported on stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-m", "training.cli", *argv],
                          cwd=cwd, env=env, input=data, capture_output=True, timeout=120)


def rows(n: int) -> bytes:
    return "".join(json.dumps({**ROW, "prompt": f"Tea or coffee {i}?"}) + "\n" for i in range(n)).encode()


@pytest.mark.parametrize("kind", ["sound", "damaged", "piped", "plain"])
def test_a_preference_file_is_read_without_leaving_a_file_open(tmp_path, kind):
    data = gzip.compress(rows(2000)) if kind != "plain" else rows(20)
    if kind == "damaged":  # a changed byte: garbage lines, then the CRC check (`_gzip_damage` reads it again)
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        data = bytes(data)
    path = tmp_path / ("prefs.jsonl" if kind == "plain" else "prefs.jsonl.gz")
    path.write_bytes(data)
    argv = ["data", "stats", "--source", "jsonl", "--json", "--path"]
    result = strict_pluralign(tmp_path, *argv, "/dev/stdin", data=data) if kind == "piped" else strict_pluralign(tmp_path, *argv, str(path))
    err = result.stderr.decode()
    assert "ResourceWarning" not in err and "unclosed file" not in err, err
    if kind == "damaged":
        assert result.returncode == 2 and "not a whole gzip file" in err, err
    else:
        assert result.returncode == 0 and json.loads(result.stdout)["pairs"] == (20 if kind == "plain" else 2000), (result.stdout, err)
