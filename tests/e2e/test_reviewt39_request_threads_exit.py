"""Review of session 39's request threads (`service.scheduler.TenantThreads`, the event loop's default
executor since 4116d66): at exit, the work a request thread is still doing is finished before the
process ends, as it was with the loop's own ThreadPoolExecutor (`asyncio.run` waits for it:
`shutdown(wait=True)`). TenantThreads' threads are daemon threads and its `shutdown` ignored `wait`: a
request whose client the graceful wait cut off (a store write, an import's rows) was killed mid-way
when the interpreter ended. Slow: a real `pluralign serve` (about 30 s)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess

# the served process: GET /v1/users/slowpoke takes 8 s (past the 5 s graceful wait), marking its start and end
SLOW_PROFILE = """
import os, sys, time
from pathlib import Path
import service.users.services as users

marks = Path(os.environ["REVIEWT39_MARKS"])
profile = users.profile

def slow_profile(rt, tenant, user_id):
    if user_id == "slowpoke":
        (marks / "started").touch()
        time.sleep(8)
        (marks / "finished").touch()
    return profile(rt, tenant, user_id)

users.profile = slow_profile
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_waits_for_the_work_a_request_thread_is_doing(tmp_path, tiny_generator_dir, tiny_pal_dir):
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, code=SLOW_PROFILE,
                        PLURALIGN_CACHE_DIR=str(tmp_path / "cache"), REVIEWT39_MARKS=str(marks))
    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}

        def ask() -> None:
            try:
                httpx.get(f"{proc.url}/v1/users/slowpoke", headers=headers, timeout=30)
            except httpx.HTTPError:
                pass  # cut off by the graceful wait's end: expected

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        deadline = time.monotonic() + 30
        while not (marks / "started").exists():
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log.read_text()
            time.sleep(0.05)
        proc.proc.terminate()
        status = proc.proc.wait(timeout=60)
        assert (marks / "finished").exists(), f"exit {status} while a request thread was still working:\n{proc.log.read_text()[-3000:]}"
    finally:
        proc.stop()
