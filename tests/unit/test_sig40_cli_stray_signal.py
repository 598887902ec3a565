"""A SIGTERM or Ctrl-C that reaches a command while an extension module starts, through `main()` (training/cli.py).

Sig session 40. `_stopped` sends a SIGTERM that came during an extension module's start (whose C code would
clear the exception) again STOP_RETRY_S later, from a threading.Timer. Before: when the command ended within
that time, the timer's SIGTERM hit the handler main() had put back: the process died of it (-15, not exit 143),
and a script calling main() in-process got a stray SIGTERM after main() had returned. Now main() cancels the
pending send when the command ends and reports the stop itself (143). And SIGINT's KeyboardInterrupt, raised
inside such C code, was cleared the same way: the command ran on after Ctrl-C; now it gets the same treatment.

As in test_jobs40_cli_sigterm.py, an ExtensionFileLoader whose module start swallows every exception stands
for that C code (torch's import of numpy); main() runs a one-command parser whose command imports it
(tests/cli_child.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import AS_FROM_A_TERMINAL

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import signal, sys, time
import training.cli as cli
from tests.cli_child import main_of_one_command, start_as_native_code

SIGNAL, AFTER = signal.{signal}, {after}
cli.STOP_RETRY_S = {retry}  # the command's end comes well before the signal's send again, however loaded the machine


def run(args):
    start_as_native_code(SIGNAL, 0.2)  # the job's cancel (or Ctrl-C) comes while it starts
    sys.stdout.write("imported\\n")  # one write: print writes its end of line apart, and the signal raised between them
    sys.stdout.flush()  # left "importedreturned 143" (a full run, under load)
    time.sleep(AFTER)  # the rest of the command: over at once, or training on
    print("ran on", flush=True)
    return 0


code = main_of_one_command(run)
print("returned", code, flush=True)
time.sleep(2 * cli.STOP_RETRY_S)  # a script that called main() goes on: no stray signal may reach it now
print("after", flush=True)
sys.exit(code)
"""

def _run(signal_name: str, after: float, retry: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = SCRIPT.format(signal=signal_name, after=after, retry=retry)
    return subprocess.run([sys.executable, *AS_FROM_A_TERMINAL, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("signal_name,code,words", [("SIGTERM", 143, "stopped by SIGTERM"), ("SIGINT", 130, "interrupted (SIGINT)")])
def test_a_command_that_ends_just_after_the_signal_exits_stopped_and_leaves_no_stray_signal(signal_name, code, words):
    """The command ends 0 s after the extension module has started: well within STOP_RETRY_S (0.5 s here)."""
    run = _run(signal_name, 0, retry=0.5)
    assert (run.returncode, run.stdout.split()) == (code, ["imported", "ran", "on", "returned", str(code), "after"]), \
        (run.returncode, run.stdout, run.stderr[-2000:])
    assert run.stderr.strip().splitlines()[-1] == f"pluralign: error: {words}", run.stderr[-2000:]


@pytest.mark.parametrize("signal_name,code,words", [("SIGTERM", 143, "stopped by SIGTERM"), ("SIGINT", 130, "interrupted (SIGINT)")])
def test_a_command_that_runs_on_after_the_signal_is_stopped_once_the_module_has_started(signal_name, code, words):
    began = time.monotonic()
    run = _run(signal_name, 30, retry=0.05)  # STOP_RETRY_S as it is
    assert (run.returncode, run.stdout.split()) == (code, ["imported", "returned", str(code), "after"]), \
        (run.returncode, run.stdout, run.stderr[-2000:])
    assert run.stderr.strip().splitlines()[-1] == f"pluralign: error: {words}", run.stderr[-2000:]
    assert time.monotonic() - began < 20  # not the 30 s it would have run on


IGNORED = """
import os, signal, sys
from tests.cli_child import main_of_one_command

signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nohup, or a shell's background job, starts a command


def run(args):
    os.kill(os.getpid(), signal.SIGINT)
    print("ran on", flush=True)
    return 0


code = main_of_one_command(run)
print("returned", code, signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
sys.exit(code)
"""

def test_an_ignored_sigint_stays_ignored():
    """main() handles SIGINT only where it has Python's default handler: a command started with SIGINT ignored
    runs on through one, and main() leaves the caller's handler in place."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", IGNORED], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.split()) == (0, ["ran", "on", "returned", "0", "True"]), (run.stdout, run.stderr[-2000:])
