"""The `pluralign` command lines the docs give parse as the CLI reads them: every one of their bash blocks' commands
(`.venv/bin/pluralign eval --model bt ...`) whole, with its options' values and choices, and every one named in prose
(`pluralign keys create|list|revoke`, `pluralign serve --data-dir`) down to its command and the options it names.
Parsing runs nothing: well under a second once the command modules are imported."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex

import pytest

from tests.conftest import REPO
from training.cli import make_parser

DOCS = ("README.md", "docs/api.md", "docs/admin.md", "docs/operations.md", "docs/library.md", "deploy/README.md")
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`(?:\.venv/bin/)?pluralign ([^`]+)`")
_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=\S*")
# what prose names on purpose that no command has: the README's misspelt option its error message answers, a
# trainer left to the reader, and a line `pluralign serve-embeddings` prints
NOT_COMMANDS = {"serve --prot 8000", "train ...", "serve-embeddings: sentence-transformers/all-MiniLM-L6-v2 (384 dimensions) "
                "at http://127.0.0.1:8001/v1/embeddings"}


def block_commands(doc: str) -> list[tuple[int, list[str]]]:
    """(line, words after `pluralign`) of each command line of `doc`'s bash blocks that runs pluralign (after
    `VAR=value` assignments, or inside `$(...)`), continuation lines joined, comments and what follows `|`, `&&`,
    `>` left out."""
    text = (REPO / doc).read_text()
    found = []
    for m in _BLOCK.finditer(text):
        if m[1] not in ("bash", "sh", ""):
            continue
        first, lines, i = text[: m.start()].count("\n") + 2, m[2].splitlines(), 0
        while i < len(lines):
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
            line = line.replace("$(", " ").replace(")", " ")
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # an output line with an odd quote: not a command
                continue
            while words and _ASSIGNMENT.fullmatch(words[0]):
                words = words[1:]
            if not words or not (words[0] == "pluralign" or words[0].endswith("/bin/pluralign")):
                continue
            words = list(itertools.takewhile(lambda w: w not in {"|", "&&", ";", ">", "2>", "&", "||"}, words[1:]))
            found.append((first + start, words))
    return found


def _command(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)command parser `words` lead to, and the command words taken."""
    parser, taken = make_parser(), []
    for word in words:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        parser, taken = sub.choices[word], [*taken, word]
    return parser, taken


def prose_problems(doc: str) -> list[str]:
    """What is wrong with each `pluralign ...` named in `doc`'s prose: a command it lacks (each of `a|b|c`), an option
    that command lacks."""
    text = (REPO / doc).read_text()
    problems = []
    for m in _INLINE.finditer(text):
        if m[1] in NOT_COMMANDS:
            continue
        where = f"{doc}:{text[: m.start()].count(chr(10)) + 1}: `pluralign {m[1]}`"
        words = m[1].split()
        names = list(itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z0-9|-]*", w), words))
        options = [w.split("=")[0] for w in words if w.startswith("--")]
        for combo in itertools.product(*(name.split("|") for name in names)):
            parser, taken = _command(list(combo))
            has_commands = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
            if not taken or (len(taken) < len(combo) and has_commands):
                problems.append(f"{where}: no command `pluralign {' '.join(combo)}`")
                continue
            have = {s for a in parser._actions for s in a.option_strings}
            problems += [f"{where}: `pluralign {' '.join(taken)}` has no {option}" for option in options if option not in have]
    return problems


def parse(words: list[str]) -> str | None:
    """None when the CLI's parser takes `words` (or shows their --help), else its error line."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            make_parser().parse_args(words)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def test_every_command_line_of_the_docs_parses():
    commands = [(f"{doc}:{line}", words) for doc in DOCS for line, words in block_commands(doc)]
    assert len(commands) > 20, commands  # the reading still finds the docs' commands
    wrong = [f"{where}: pluralign {shlex.join(words)}\n  {error}" for where, words in commands if (error := parse(words))]
    assert not wrong, "\n".join(wrong)


def test_every_command_and_option_named_in_the_docs_prose_exists():
    problems = [p for doc in DOCS for p in prose_problems(doc)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("doc", "error"), [
    ("```bash\n.venv/bin/pluralign eval --model bt --protocol nope\n```\n", "invalid choice: 'nope'"),
    ("```bash\nOMP_NUM_THREADS=2 pluralign train pal --protocl persona --out x\n```\n", "unrecognized arguments: --protocl"),
])
def test_a_command_line_the_cli_refuses_is_found(tmp_path, monkeypatch, doc, error):
    monkeypatch.setattr("tests.unit.test_docs_cli.REPO", tmp_path)
    (tmp_path / "doc.md").write_text(f"# A doc\n\n{doc}")
    [(line, words)] = block_commands("doc.md")
    assert line == 4 and error in (parse(words) or "")


def test_a_command_or_option_the_cli_lacks_named_in_prose_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.unit.test_docs_cli.REPO", tmp_path)
    (tmp_path / "doc.md").write_text("Run `pluralign keys create|lst` or `pluralign serve --prot 8001`.\n")
    assert prose_problems("doc.md") == ["doc.md:1: `pluralign keys create|lst`: no command `pluralign keys lst`",
                                        "doc.md:1: `pluralign serve --prot 8001`: `pluralign serve` has no --prot"]
