"""Session 33 (operations): what an operator meets when `pluralign serve` starts on a fresh checkout.
The shared data folder a PAL checkpoint is bootstrapped from is found beside the checkout, wherever the
service is started from (PLURALIGN_SHARED_DATA overrides it), and a service that starts without a
trained population model says so in one loud line on stderr, with how to train one (it still starts)."""

from __future__ import annotations

import re
import time

import httpx

from tests.conftest import REPO
from tests.e2e.test_e2e_serve import ServeProcess

UNTRAINED = re.compile(r"^pluralign: warning: .*UNTRAINED", re.M)


def test_a_start_without_persona_data_prints_one_loud_untrained_line_and_serves(tmp_path, tiny_generator_dir):
    """Before: only a timestamped log line among the start's others ("UNTRAINED reward model: no persona
    data ...; set PLURALIGN_SHARED_DATA"), saying neither what it means for users nor how to train."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = tmp_path / "no-shared-data"
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tmp_path / "data" / "pal", cwd=elsewhere,
                        PLURALIGN_SHARED_DATA=str(missing), PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        log = proc.log.read_text()
        lines = UNTRAINED.findall(log)
        assert len(lines) == 1, log
        line = next(x for x in log.splitlines() if UNTRAINED.match(x))
        assert str(missing) in line and "PLURALIGN_SHARED_DATA" in line and "pluralign train pal" in line, line
        assert not re.search(r"WARNING .*UNTRAINED", log), log  # one warning, not a second saying it again
        assert httpx.get(proc.url + "/health").status_code == 200  # it started and serves
    finally:
        proc.stop()


def test_the_shared_data_is_found_beside_the_checkout_from_any_working_folder(tmp_path, tiny_generator_dir, monkeypatch):
    """Before: the default `../shared/data` was read from the working folder: `pluralign serve` started
    anywhere but the checkout's root served an untrained model although the data lay beside the checkout."""
    monkeypatch.delenv("PLURALIGN_SHARED_DATA", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    beside = REPO.parent / "shared" / "data"
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tmp_path / "data" / "pal", cwd=elsewhere, wait=False,
                        PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:  # the start names the folder it bootstraps from (or, without data there, the one it looked in)
        deadline = time.time() + 120
        while not re.search(r"persona data from |UNTRAINED", log := proc.log.read_text()):
            assert proc.proc.poll() is None and time.time() < deadline, log
            time.sleep(0.2)
        time.sleep(0.5)
        log = proc.log.read_text()
        assert str(beside) in log and str(elsewhere.parent / "shared") not in log, log
    finally:
        proc.stop()
