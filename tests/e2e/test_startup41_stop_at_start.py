"""`pluralign serve` stopped while it starts (startup41): a SIGTERM (a rolling update, `systemctl stop`) or a Ctrl-C
that comes before uvicorn has put its own handlers in place. Before, SIGTERM met the default action there: the
process was killed outright, its generation process (`pluralign.policy.process.ProcessGenerator`) left orphaned,
loading the whole model before it failed on the broken pipe, and the data folder the start had made left behind.
Now the CLI's held-signal handler (`training.cli._stopped`) covers the start too: the start is undone (the child
killed and reaped, what it made removed) and the command ends as the CLI's other commands do, 143 / 130 with one
error line. Slow (a real `pluralign serve` each, ~10 s): `make test-all` runs them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.test_e2e_serve import ServeProcess

# the served process: the generation child's pid said as soon as it is started (its model still loading)
SAYS_ITS_CHILD = """
import sys
from pluralign.policy.process import ProcessGenerator

awaited = ProcessGenerator._await_ready

def await_ready(self):
    print(f"generation child {self._process.pid} loading", file=sys.stderr, flush=True)
    awaited(self)

ProcessGenerator._await_ready = await_ready
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def child_of(proc: ServeProcess) -> int:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.proc.poll() is None, proc.log.read_text()
        for line in proc.log.read_text().splitlines():
            if line.startswith("generation child "):
                return int(line.split()[2])
        time.sleep(0.02)
    raise AssertionError("no generation child started:\n" + proc.log.read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGTERM, 143, "pluralign: error: stopped by SIGTERM"),
                                                      (signal.SIGINT, 130, "pluralign: error: interrupted (SIGINT)")])
def test_a_stop_while_the_generation_process_loads_ends_it_and_leaves_nothing(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                               signum, code, said):
    data = tmp_path / "data"
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=SAYS_ITS_CHILD, wait=False, PLURALIGN_GENERATION_PROCESS="true",
                        PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        child = child_of(proc)
        proc.proc.send_signal(signum)
        assert proc.proc.wait(timeout=60) == code, proc.log.read_text()
        alive = os.path.exists(f"/proc/{child}")  # ended and reaped by the service before it exited: no such process
        assert not alive, f"generation process {child} left running:\n" + proc.log.read_text()
        log = proc.log.read_text().strip().splitlines()
        assert log[-1] == said, log[-5:]
        assert not data.exists()  # made by this start: removed with what it held
    finally:
        proc.stop()
