"""`pluralign serve` started ignoring SIGINT (`pluralign serve &` or `nohup pluralign serve &` in a script, whose
Ctrl-C then reaches it too): the start left SIGINT ignored (startup41), but once serving, uvicorn's handler stopped
it on the first SIGINT. Now it serves on, and SIGTERM stops it as before (exit 0). Slow (a real `pluralign serve`,
~10 s): `make test-all`; tests/service/test_reviewt41_nohup_serving.py checks the handler in the default suite."""

from __future__ import annotations

import signal
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess

NOHUP = """
import signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell without job control starts `pluralign serve &`
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_server_started_ignoring_sigint_serves_on_after_one_and_stops_on_sigterm(tmp_path, tiny_generator_dir, tiny_pal_dir):
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, code=NOHUP, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        sent = time.time()
        proc.proc.send_signal(signal.SIGINT)
        # uvicorn looks at its stop flag at each tick, where it dates its answers once a second: an answer dated 2 s past
        # the signal's second came after a tick that looked (a SIGINT it took stopped it there), where a sleep of 1 s
        # may have ended before any tick on a busy machine
        deadline = time.monotonic() + 60
        while parsedate_to_datetime(httpx.get(proc.url + "/health", timeout=10).headers["date"]).timestamp() < int(sent) + 2:
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log.read_text()
            time.sleep(0.1)
        assert proc.proc.poll() is None, proc.log.read_text()
        assert httpx.get(proc.url + "/health", timeout=10).status_code == 200
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=60) == 0, proc.log.read_text()
    finally:
        proc.stop()
