"""Session 33 (operations): what an operator meets when `pluralign serve` starts on a fresh checkout.
The shared data folder a PAL checkpoint is bootstrapped from is found beside the checkout, wherever the
service is started from (PLURALIGN_SHARED_DATA overrides it), and a service that starts without a
trained population model says so in one loud line on stderr, with how to train one (it still starts)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.test_crash39_kills import NO_GENERATOR
from tests.e2e.test_e2e_serve import ServeProcess

UNTRAINED = re.compile(r"^pluralign: warning: .*UNTRAINED", re.M)


@pytest.mark.slow  # ~12 s, a real serve (the default suite keeps the shared-data test below)
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


def test_the_shared_data_is_found_beside_the_checkout_from_any_working_folder(tmp_path, monkeypatch, caplog, minilm):
    """Before: the default `../shared/data` was read from the working folder: `pluralign serve` started
    anywhere but the checkout's root served an untrained model although the data lay beside the checkout.
    The start's own steps in this process (`Runtime.build`, as `pluralign serve` runs it, from another working folder)
    up to the line naming the folder it bootstraps from, the training stopped there: a `pluralign serve` process of its
    own (torch's imports, ~7 CPU-s) checked nothing more."""
    import logging

    import service.rewards
    from service.runtime import Runtime
    from service.settings import Settings

    class Bootstrapping(Exception):
        """The start reached the bootstrap's training: its line is written, the folder it reads is known."""

    def bootstrap(folder, encoder, shared):
        raise Bootstrapping(shared)

    for name in ("PLURALIGN_SHARED_DATA", "PLURALIGN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"PLURALIGN_DATA_DIR": tmp_path / "data", "PLURALIGN_PAL_DIR": tmp_path / "data" / "pal",
                        "PLURALIGN_GENERATOR": NO_GENERATOR, "PLURALIGN_CACHE_DIR": tmp_path / "cache"}.items():
        monkeypatch.setenv(name, str(value))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    beside = REPO.parent / "shared" / "data"
    monkeypatch.setattr(service.rewards, "bootstrap", bootstrap)
    # no chat here: a generator loading no model (NO_GENERATOR) lets the start reach the population model without
    # loading one (transformers imported and the tiny model read)
    with caplog.at_level(logging.INFO, logger="pluralign.service"), pytest.raises(Bootstrapping) as stopped:
        Runtime.build(Settings.load(), encoder=minilm)
    assert Path(stopped.value.args[0]) == beside, stopped.value
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(r"persona data from .*", log) and str(beside) in log and str(elsewhere.parent / "shared") not in log, log


@pytest.mark.slow  # ~35 s: a real serve, its drain and uvicorn's shutdown (PLURALIGN_STOP_DRAIN_S is opt-in)
def test_requests_arriving_while_it_stops_get_503_with_retry_after_and_their_id(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """Before: uvicorn's shutdown closed the listening socket and idle connections at once: a request a
    load balancer still sent met a refused or dropped connection. With PLURALIGN_STOP_DRAIN_S it keeps
    listening that long, answering 503 with Retry-After and X-Request-Id (then stops as before: exit 0)."""
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, PLURALIGN_STOP_DRAIN_S="4",
                        PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        with httpx.Client(base_url=proc.url, timeout=5) as c:
            assert c.get("/health").status_code == 200
            proc.proc.terminate()
            deadline = time.time() + 3
            while (r := c.get("/v1/models", headers={"X-Request-Id": "ops33-drain"})).status_code != 503:
                assert time.time() < deadline, r.status_code
                time.sleep(0.05)
        assert r.headers["Retry-After"] == "5" and r.headers["X-Request-Id"] == "ops33-drain", r.headers
        assert r.json()["error"]["request_id"] == "ops33-drain" and "stopping" in r.json()["error"]["message"], r.text
        again = httpx.get(proc.url + "/health", timeout=5)  # a new connection too, not refused
        assert again.status_code == 503 and again.headers["Retry-After"] == "5"
        assert proc.proc.wait(timeout=30) == 0, proc.log.read_text()
    finally:
        proc.stop()
