"""A second SIGTERM a moment after the first (or a Ctrl-C pressed twice), through `main()` (training/cli.py):
startup41 put `pluralign serve`'s start under main's handler, where a stop's undoing is quick; a second SIGTERM
that came while the stop's error line was written, or as main() ended the command, was raised there, outside
every `except`: a traceback of `Stopped` and exit 1 (reviewt41, measured on a real serve: SIGTERM twice 30 ms
apart during its start). Now the command has ended once it is stopped: the second is held, and the stop exits
143 with its one line."""

from __future__ import annotations

import argparse
import signal

import pytest

import training.cli as cli


def stopped(args) -> int:
    signal.raise_signal(signal.SIGTERM)  # the first: raised here as Stopped
    return 0


def one_command() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pluralign")
    parser.add_subparsers(dest="command", required=True).add_parser("run").set_defaults(func=stopped)
    return parser


@pytest.mark.parametrize("where", ["the error line", "main's end"])
def test_a_second_sigterm_as_a_stopped_command_ends_exits_143_with_one_error_line(where, monkeypatch, capsys):
    monkeypatch.setattr(cli, "make_parser", one_command)
    if where == "the error line":
        error = cli._error

        def again(line: str) -> None:
            signal.raise_signal(signal.SIGTERM)
            error(line)

        monkeypatch.setattr(cli, "_error", again)
    else:
        end = cli._Held.end

        def again(self):
            signal.raise_signal(signal.SIGTERM)
            return end(self)

        monkeypatch.setattr(cli._Held, "end", again)
    caller = signal.getsignal(signal.SIGTERM)
    assert cli.main(["run"]) == 143
    assert signal.getsignal(signal.SIGTERM) is caller
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "pluralign: error: stopped by SIGTERM" and lines.count(lines[-1]) == 1, lines
