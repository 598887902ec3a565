"""A DELETE through one replica while another streams the user's answer from their adapter on one vLLM-like server
(session remote51). Two replicas of the real app over HTTP on one store (`replicas` 2) and one adapters folder, each
generating on `tests.vllm_like --slow-stream` (a stream's events 0.4 s apart: a long generation), real LanceDB."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from service.users.services import register_adapter
from tests.service.test_remote49_generation_server import CHAT, GenerationServer
from tests.service.test_remote50_replicas import answer, peft_folder, replicas_generating_on
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.vllm_like import digest

pytestmark = [pytest.mark.slow,  # two replicas on one store and a slow generation server (~10 s): `make test-scaleout`
              pytest.mark.usefixtures("short_read_margin")]

SYNC_MS = 200


@contextlib.contextmanager
def replicas_on_one_store(tmp_path: Path, tiny_pal_dir: Path, minilm, *flags: str) -> Iterator[tuple[Service, Service, GenerationServer]]:  # noqa: F811
    server = GenerationServer(tmp_path / "generation.log", *flags)
    with replicas_generating_on(server, minilm, lambda index: Settings(
            data_dir=str(tmp_path / f"replica{index}"), adapters_dir=str(tmp_path / "adapters"), store_uri=str(tmp_path / "store"),
            replicas=2, replica_index=index, store_sync_ms=SYNC_MS, deletion_sweep_s=3600,  # b's sweep is run by hand
            generator=f"openai:{server.url}", pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1)) as replicas:
        yield replicas


def test_a_stream_from_a_deleted_users_adapter_on_another_replica_stops_at_that_replicas_next_sweep(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Replica b streams rae's answer from her adapter (an event every 0.4 s) when her DELETE through replica a answers.
    Before (remote51) b's stream went on to its end from her adapter, [DONE] and all, however long after the DELETE
    answered. Now b's deletion sweep (every `deletion_sweep_s`; here run by hand once the record is readable) stops it:
    its client gets the 409 `user_deleted` error event and [DONE], the generation server's stream is closed before its
    end (vLLM aborts the request), and nothing of it is stored."""
    with replicas_on_one_store(tmp_path, tiny_pal_dir, minilm, "--slow-stream", "0.4") as (a, b, server):
        register_adapter(a.runtime, "acme", "rae", peft_folder(tmp_path / "trained" / "rae", 1.0))
        rae = digest(str(a.runtime.adapters.registry.folder("acme", "rae")))
        assert answer(a, "rae").endswith(f"with weights {rae}")  # her chat, stored: she is a user to DELETE
        lines: list[tuple[float, str]] = []
        first = threading.Event()

        def stream_on_b() -> None:
            with b.client("acme") as c, c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as got:
                assert got.status_code == 200
                for line in got.iter_lines():
                    if line.startswith("data: "):
                        lines.append((time.monotonic(), line.removeprefix("data: ")))
                        if '"content"' in line:
                            first.set()

        streaming = threading.Thread(target=stream_on_b)
        streaming.start()
        try:
            assert first.wait(10), lines
            with a.client("acme") as c:
                deleted = c.delete("/v1/users/rae")
            assert deleted.status_code == 200, deleted.text
            time.sleep(SYNC_MS / 1000 + 0.1)  # b's reads see the record
            swept = time.monotonic()
            assert b.runtime.deletion_sweep.run_once() == 1
        finally:
            streaming.join(15)
        assert not streaming.is_alive()
        assert lines[-1][1] == "[DONE]", lines
        error = json.loads(lines[-2][1])["error"]  # before: the last piece of her adapter's answer, then [DONE]
        assert error["code"] == "user_deleted" and error["param"] == "user", error
        assert lines[-1][0] - swept < 2, (lines[-1][0] - swept, lines)  # at its next piece, not the stream's end
        deadline = time.monotonic() + 30  # the server sees it closed at its next write
        while "closed after" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        assert b.runtime.store.count_interactions("acme", "rae") == 0
