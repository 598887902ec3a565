"""`pluralign serve` stopped (SIGTERM) while a chat's thread the stop cut off still calls the generator: no generation
process outlives the service (session 46). Slow (a real `pluralign serve`, ~20 s): `make test-all` runs it."""

from __future__ import annotations

import os
import signal

import pytest

from tests.e2e.test_e2e_serve import ServeProcess

# the served process: each generation child's pid said once started; the app's last stop step starts a thread that,
# once the generation process has ended (the stop's, or the interpreter's exit's), calls the generator as a chat's
# thread the stop cut off would (uvicorn's graceful wait over, the scheduler's daemon threads still running)
LATE_CALL = """
import sys, threading, time
import service.app
from pluralign.policy.process import ProcessGenerator

launch = ProcessGenerator._launch

def said(self):
    launch(self)
    print(f"generation child {self._process.pid} started", file=sys.stderr, flush=True)

ProcessGenerator._launch = said
last_step = service.app._thaw_heap

def then_a_late_call(app):
    generator = app.state.runtime.generator

    def late():
        while generator._process.is_alive():
            time.sleep(0.002)
        try:
            generator.generate([{"role": "user", "content": "Hi"}])
        except Exception as exc:
            print(f"late call: {type(exc).__name__}", file=sys.stderr, flush=True)

    threading.Thread(target=late, daemon=True).start()
    last_step(app)

service.app._thaw_heap = then_a_late_call
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (an orphan's zombie is reaped by init at once)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_call_after_the_service_stopped_leaves_no_generation_process(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """Before (session 45): the app's stop left the child to the interpreter's exit (multiprocessing terminates it),
    and a call then started a new child that no one ended: `ps` showed it loading the model after the service had
    exited. Now the stop closes the generator first, and the late call is refused (GeneratorClosed)."""
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, code=LATE_CALL, PLURALIGN_GENERATION_PROCESS="true",
                        PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    children: list[int] = []
    try:
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0, proc.log.read_text()
        # the service has exited: its log is whole, and every child it started exists (its pid said once started); the
        # late call has run when it said how it ended (a sleep of 0.5 s here waited for neither)
        log = proc.log.read_text()
        assert "late call: GeneratorClosed" in log, log
        children = [int(line.split()[2]) for line in log.splitlines() if line.startswith("generation child ")]
        left = [pid for pid in children if _running(pid)]
        assert not left, f"generation process(es) {left} outlived the service:\n{log}"
    finally:
        proc.stop()
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
