"""Every test file that marks a test slow is named by exactly one Makefile target besides `test-all` (session 51: 165
slow tests in 79 files ran in `make test-all` alone, which no session had run whole for a while; session small52: three
files were named by two targets each, so their slow tests ran twice in a pass over the targets). Static: reads the
files' text, collects nothing (a few ms)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def targets_naming(makefile: str) -> dict[str, set[str]]:
    """{test file: the Makefile targets (but `test-all`) whose recipe names it, whole or one test of it (`::`)}."""
    named: dict[str, set[str]] = defaultdict(set)
    for target, body in re.findall(r"^([\w-]+):.*\n((?:\t.*\n)+)", makefile, re.M):
        if target != "test-all":
            for arg in body.split():
                if arg.startswith("tests/"):
                    named[arg.split("::")[0]].add(target)
    return named


def test_every_file_with_a_slow_test_is_in_one_named_make_target():
    named = targets_naming((ROOT / "Makefile").read_text())
    slow = {str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
            if re.search(r"mark\.slow\b|marks=pytest\.mark\.slow", path.read_text())}
    assert len(slow) > 100, len(slow)  # the scan still finds them
    assert sorted(slow - set(named)) == [], "slow tests no make target but test-all runs: add each file to a target"
    assert sorted(f for f in named if not (ROOT / f).is_file()) == []
    twice = {f: sorted(targets) for f, targets in named.items() if f in slow and len(targets) > 1}
    assert twice == {}, "a file's slow tests run by two targets: name each file in one"


def test_a_file_named_by_two_targets_is_found():
    """The check above on a Makefile of its own: a file named whole by one target and by one of its tests in another."""
    makefile = ("test-a: x\n\tpytest -m slow tests/e2e/test_x.py tests/unit/test_y.py\n\n"
                "test-b: x\n\tpytest -m slow tests/e2e/test_x.py::test_one\n\n"
                "test-all: x\n\tpytest -m '' tests/unit/test_y.py\n")
    assert {f: sorted(t) for f, t in targets_naming(makefile).items()} == {
        "tests/e2e/test_x.py": ["test-a", "test-b"], "tests/unit/test_y.py": ["test-a"]}
