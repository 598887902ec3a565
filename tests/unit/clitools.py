"""Helpers for tests that run the `pluralign` CLI in-process, as a user runs it."""

from __future__ import annotations

import json
import os

from training.cli import main


def write_jsonl(path, items) -> str:
    """Write `items` (dicts as JSON, strings as they are) one per line; returns the path as a string."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in items))
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...`; a usage error's SystemExit counts as its code. The process's
    umask is put back afterwards: `pluralign serve` sets its own (0077, `training.commands.serve.run`), which a refused
    start in this process left to every later test of the worker (a file made 0644 was then 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    finally:
        os.umask(umask)
    out, err = capsys.readouterr()
    return code, out, err
