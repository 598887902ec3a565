"""Session trial54, a new user reading `--help`: `pluralign eval --help`, `audit --help`, every `train` command's and
`data import --help` showed options only, no line of how the command is run, though each module's docstring shows its
exact command lines (docs/STYLE: "Each CLI command's docstring shows the exact command line that runs it"); `serve`,
`keys`, `tenants` and `promote` showed theirs."""

from __future__ import annotations

import re

from tests.unit.test_ops33_help import commands
from training.cli import make_parser


def test_every_command_s_help_shows_how_it_is_run():
    missing = []
    for path, parser in commands(make_parser()):
        if not path or any(a.__class__.__name__ == "_SubParsersAction" for a in parser._actions):
            continue  # `pluralign`, `train`, `data`, `keys`, `tenants`: a command is chosen below them
        example = re.compile(rf"^\s+(?:\S+=\S+ )*pluralign {re.escape(' '.join(path))}( |$)", re.M)
        if not example.search(parser.format_help()):
            missing.append(" ".join(path))
    assert not missing, f"--help without an example of the command: {missing}"


def test_an_option_s_placeholder_is_its_own_name():
    """`pluralign eval --help` showed `[--unseen-per-group UNSEEN_USERS_PER_GROUP]`: the placeholder was its internal
    name (dest), not the option's, the only one of every command's options where the two differ."""
    odd = [f"{' '.join(path)} {action.option_strings[-1]} {action.metavar or action.dest.upper()}"
           for path, parser in commands(make_parser()) for action in parser._actions
           if action.option_strings and action.nargs != 0 and action.choices is None
           and (action.metavar or action.dest.upper()) != action.option_strings[-1].lstrip("-").replace("-", "_").upper()
           and action.metavar is None]
    assert not odd, odd
