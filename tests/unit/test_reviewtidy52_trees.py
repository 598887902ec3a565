"""A benchmark's `--against REV` (benchmarks/trees.py) naming a revision git does not know, as a user mistypes it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a checkout")
@pytest.mark.parametrize("script", ["delete_weights.py", "log_append.py"])
def test_an_unknown_revision_is_one_error_line_naming_it_before_anything_is_measured(script):
    """Before (reviewtidy52): a traceback ending in `subprocess.CalledProcessError: Command '['git', '-C', ...,
    'archive', 'no-such-revision-52', 'pluralign']' returned non-zero exit status 128`, git's own words (`fatal: not
    a valid object name`) swallowed."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--sizes", "10", "--against", "no-such-revision-52"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("--against no-such-revision-52: git archive refused it: "), line
    assert "no-such-revision-52" in line.split("refused it: ", 1)[1], line  # git's reason, naming it
    assert "this tree" not in done.stdout  # nothing measured first
