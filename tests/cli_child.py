"""What the child scripts of the CLI's signal tests run (tests/unit/test_jobs40_cli_sigterm.py,
tests/unit/test_sig40_cli_stray_signal.py; their children have this repository on PYTHONPATH): a module started the way
an extension module's C code starts one, and `training.cli.main` over a parser of one command."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import time
import types
from collections.abc import Callable


def start_as_native_code(signum: int, hold_s: float) -> types.ModuleType:
    """Start a module as an extension module's C code does (torch's import of numpy): `signum` reaches this process
    meanwhile (a job's cancel, a Ctrl-C) and the exception its handler raises is cleared, with `hold_s` seconds more
    spent inside the start."""

    class Native(importlib.machinery.ExtensionFileLoader):
        def create_module(self, spec):
            try:
                os.kill(os.getpid(), signum)
                time.sleep(hold_s)
            except BaseException:
                pass
            return types.ModuleType(spec.name)

        def exec_module(self, module):
            pass

    return importlib.util.module_from_spec(importlib.util.spec_from_loader("native", Native("native", "/nonexistent.so")))


def main_of_one_command(run: Callable[[argparse.Namespace], int]) -> int:
    """`training.cli.main(["run"])` with a parser (prog `pluralign`) whose one command, `run`, calls `run`: its exit code."""
    import training.cli as cli

    def make_parser():
        parser = argparse.ArgumentParser(prog="pluralign")
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("run").set_defaults(func=run)
        return parser

    cli.make_parser = make_parser
    return cli.main(["run"])
