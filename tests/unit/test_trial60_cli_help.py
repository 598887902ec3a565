"""`pluralign train maxmin --help`, read by a new user in session trial60: its second example was one line with a run of
spaces inside (`--out runs/single-80         --steps 30 ...`), the docstring's shell continuation (`\\` at a line's
end) eaten by Python, so the help showed neither the command as one line nor as two."""

from __future__ import annotations

import re

from tests.unit.test_ops33_help import commands
from training.cli import make_parser


def test_every_help_example_is_written_as_a_shell_runs_it():
    broken = []
    for path, parser in commands(make_parser()):
        for line in parser.format_help().splitlines():
            if line.lstrip().startswith("pluralign ") and re.search(r"\S {3,}--", line):
                broken.append(f"{' '.join(path)}: {line.strip()}")
    assert not broken, broken
