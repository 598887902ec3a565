"""How `pluralign serve` ends on SIGTERM (a rolling update, `docker stop`, `systemctl stop`): exit status 0
once every request in flight was answered (uvicorn left alone would end it by the signal it re-raises:
status 143, which Kubernetes and Docker report as an error), and 4, with a log line, when its graceful
wait cut requests off; a stream still generating then ends with an error event and `[DONE]`, not a body
cut mid-way. Slow (a real service start each, about 30 s). The app's side of it, fast:
tests/service/test_stop_chats.py."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess

# the served process: a stream that generates until it is closed (one piece every 10 ms)
ENDLESS_STREAM = """
import sys, time
from pluralign.policy.generator import Generator

def endless(self, messages, sampling=None, adapter=None):
    while True:
        time.sleep(0.01)
        yield " more"

Generator.stream = endless
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "Tell me a long story."}]}


@pytest.mark.slow
def test_sigterm_of_an_idle_service_exits_0(tmp_path, tiny_generator_dir, tiny_pal_dir):
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}
        assert httpx.post(f"{proc.url}/v1/chat/completions", headers=headers, json={**CHAT, "max_tokens": 4}).status_code == 200
        proc.proc.terminate()
        assert proc.proc.wait(timeout=30) == 0, proc.log.read_text()
    finally:
        proc.stop()


@pytest.mark.slow
def test_sigterm_during_a_stream_ends_it_with_an_error_event_and_exits_4(tmp_path, tiny_generator_dir, tiny_pal_dir):
    proc = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, code=ENDLESS_STREAM,
                        PLURALIGN_CACHE_DIR=str(tmp_path / "cache"), PLURALIGN_RERANK="false", PLURALIGN_CANDIDATES="1",
                        PLURALIGN_GENERATION_PROCESS="false")  # the patched generator: in this process
    lines: list[str] = []
    generating = threading.Event()

    def read_stream() -> None:
        with httpx.stream("POST", f"{proc.url}/v1/chat/completions", headers=headers, json={**CHAT, "stream": True}, timeout=60) as r:
            for line in r.iter_lines():
                lines.append(line)
                if '" more"' in line:
                    generating.set()

    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}
        reader = threading.Thread(target=read_stream, daemon=True)
        reader.start()
        assert generating.wait(60), proc.log.read_text()
        proc.proc.terminate()
        reader.join(30)
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]  # the body ended whole: no read error in the reader
        assert "the service is stopping" in json.loads(events[-2])["error"]["message"], events[-3:]
        assert proc.proc.wait(timeout=30) == 4, proc.log.read_text()
        assert "stopped with 1 request(s) cut off" in proc.log.read_text()
    finally:
        proc.stop()
