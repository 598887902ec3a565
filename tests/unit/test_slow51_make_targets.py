"""Every test file that marks a test slow is named by a Makefile target besides `test-all` (session 51: 165 slow
tests in 79 files ran in `make test-all` alone, which no session had run whole for a while). Static: reads the
files' text, collects nothing (a few ms)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_with_a_slow_test_is_in_a_named_make_target():
    named = set()
    for target, body in re.findall(r"^([\w-]+):.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M):
        if target != "test-all":
            named |= {arg.split("::")[0] for arg in body.split() if arg.startswith("tests/")}
    slow = {str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
            if re.search(r"mark\.slow\b|marks=pytest\.mark\.slow", path.read_text())}
    assert len(slow) > 100, len(slow)  # the scan still finds them
    assert sorted(slow - named) == [], "slow tests no make target but test-all runs: add each file to a target"
    assert sorted(f for f in named if not (ROOT / f).is_file()) == []
