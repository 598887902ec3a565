"""Session 33 (operations): every option of every `pluralign` command says what it is in `--help`."""

from __future__ import annotations

import argparse
import subprocess
import sys

from tests.conftest import REPO
from training.cli import make_parser


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of `parser` and every subcommand under it, depth first."""
    yield path, parser
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def without_help(parser: argparse.ArgumentParser) -> list[str]:
    """The arguments (options, positionals, subcommands) of `parser` that --help shows no words for."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest for choice in action._choices_actions if choice.help}
            missing += [name for name in action.choices if name not in described]
        elif action.help is None or not str(action.help).strip():
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def test_every_option_of_every_command_has_a_help_string():
    """Before: 44 options across the commands showed bare in --help (`--seed`, `--batch-size`, `--data-dir`, ...)."""
    missing = [f"pluralign {' '.join(path)} {name}".replace("  ", " ")
               for path, parser in commands(make_parser()) for name in without_help(parser)]
    assert not missing, f"{len(missing)} options without help:\n" + "\n".join(missing)


def test_help_of_a_command_shows_its_options_words():
    """One command's --help, as the operator runs it: the words are there for a defaulted option."""
    result = subprocess.run([sys.executable, "-m", "training.cli", "train", "pal", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seed = next(line for line in result.stdout.splitlines() if line.strip().startswith("--seed"))
    assert len(seed.split()) > 2, seed  # `--seed SEED` and words, not the option alone
