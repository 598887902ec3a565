"""SIGTERM that reaches a command while an extension module starts still stops it (training/cli.py `_stopped`).

The CLI raises SIGTERM as an exception (`Stopped`) where the command is. In a job worker's first seconds
that was often inside torch's C import of numpy, which clears the exception: the worker trained on after
its job's cancel (test_main34_trigger_quota, once in a full-suite run; reproduced under load). Here an
ExtensionFileLoader whose module start swallows every exception stands for that C code (tests/cli_child.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

COMMAND = """
import signal, sys, time
from tests.cli_child import start_as_native_code
from training.cli import Stopped, _stopped
signal.signal(signal.SIGTERM, _stopped)  # as main() installs it

try:
    start_as_native_code(signal.SIGTERM, 0.5)  # the job's cancel comes while it starts
    print("imported", flush=True)
    time.sleep(30)  # training
    print("ran on", flush=True)
except Stopped:
    print("stopped", flush=True)
    sys.exit(143)
"""


def test_a_sigterm_while_an_extension_module_starts_stops_the_command_once_it_has_started():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-c", COMMAND], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.split()) == (143, ["imported", "stopped"]), run.stderr[-2000:]
    assert time.monotonic() - began < 20  # not the 30 s it would have run on


PROXY = """
import os, signal, sys, time
from training.cli import Stopped, _stopped
signal.signal(signal.SIGTERM, _stopped)  # as main() installs it


class Proxy:
    \"\"\"A stand-in for another object (a lazy module, a context-local proxy): reading its `__class__` runs code.\"\"\"

    @property
    def __class__(self):
        print("proxy read", flush=True)
        raise RuntimeError("working outside of its context")

    def run(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the SIGTERM comes while a method of it runs
        time.sleep(30)


try:
    Proxy().run()
    print("ran on", flush=True)
except Stopped:
    print("stopped", flush=True)
    sys.exit(143)
"""


def test_the_handler_reads_no_attribute_of_the_objects_below_it():
    """reviewj40: `_in_extension_start` asked each frame's `self` isinstance(), which reads `__class__` of an object
    that is not an ExtensionFileLoader: code of that object, run inside the signal handler (its exception came out
    of the handler instead of Stopped: a traceback, exit 1, for a SIGTERM)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", PROXY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout.split()) == (143, ["stopped"]), (run.stdout, run.stderr[-2000:])
