"""Review of session remote51's stop of a deleted user's adapter chats on another replica: a chat whose plan (its
adapter taken) began before the DELETE's record, but which registered as generating only after this replica's sweep
applied that record. Replica 1 of 2 of the real app over HTTP on real LanceDB, generating on `tests.vllm_like`
(`--hold-load`: the load of the user's adapter, during the chat's plan, held until a file exists; `--slow-stream`); the
DELETE through replica 0 is its deletion record in the store they share."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pluralign.policy.adapters import adapter_name
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from pluralign.store.deletions import new_deletion
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from service.users.services import register_adapter
from tests.service.test_remote49_generation_server import CHAT, GenerationServer
from tests.service.test_remote50_replicas import peft_folder
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.vllm_like import BASE

pytestmark = [pytest.mark.slow,  # an app and a generation server of its own (~5 s on two busy cores): `make test-scaleout`
              pytest.mark.usefixtures("short_read_margin")]

SYNC_MS = 200


def test_a_chat_planned_before_the_record_and_registered_after_the_sweep_applied_it_is_stopped(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Rae's stream on replica 1 takes her adapter (its load held on the server) when her DELETE through replica 0 is
    recorded, and replica 1's sweep applies the record before the chat registers as generating. Before this review the
    sweep stopped only the chats registered then, and a chat registering later counted as begun then (after the
    record): it streamed her adapter's answer to its end, [DONE] and all. Now a chat registering checks the records
    applied lately, as begun when its plan began: stopped before its first event, it is the plain 409 `user_deleted`
    naming `user`, and nothing was sent to the generation server for it."""
    server = GenerationServer(tmp_path / "generation.log")
    held = tmp_path / "release"
    try:
        config = Settings(data_dir=str(tmp_path / "replica1"), adapters_dir=str(tmp_path / "adapters"), store_uri=str(tmp_path / "store"),
                          replicas=2, replica_index=1, store_sync_ms=SYNC_MS, deletion_sweep_s=3600,  # its sweep is run by hand
                          generator=f"openai:{server.url}", pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1)
        runtime = Runtime.build(config, generator=RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=20, max_retries=0)),
                                encoder=minilm)
        b = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
        with b.server:
            register_adapter(runtime, "acme", "rae", peft_folder(tmp_path / "trained" / "rae", 1.0))
            name = runtime.generator.served_name(adapter_name("acme", "rae"), runtime.adapters.registry.folder("acme", "rae"))
            server.restart("--slow-stream", "0.4", "--hold-load", f"{name}:{held}")
            lines: list[str] = []

            def stream() -> None:
                with b.client("acme") as c, c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as got:
                    if got.status_code != 200:  # stopped before its first event: a plain answer
                        got.read()
                        lines.extend((str(got.status_code), got.text))
                        return
                    lines.append("200")
                    lines.extend(line.removeprefix("data: ") for line in got.iter_lines() if line.startswith("data: "))

            streaming = threading.Thread(target=stream)
            streaming.start()
            try:
                deadline = time.monotonic() + 20
                while f"holding the load of {name}" not in server.log.read_text():  # her chat's plan took her adapter
                    assert streaming.is_alive() and time.monotonic() < deadline, (lines, server.log.read_text())
                    time.sleep(0.02)
                runtime.store.record_deletion(new_deletion("acme", "rae", time.time(), 0, began_at=time.time() - 0.05))
                time.sleep(SYNC_MS / 1000 + 0.1)  # replica 1's reads see the record
                assert runtime.deletion_sweep.run_once() == 1  # no chat registered yet: none stopped by it
            finally:
                held.touch()  # the load goes on: the chat registers and streams
                streaming.join(20)
            assert not streaming.is_alive()
        # stopped as it registered, before its first event: the plain 409 (before: 200, her adapter's answer, [DONE])
        assert lines[0] == "409", lines
        error = json.loads(lines[1])["error"]
        assert error["code"] == "user_deleted" and error["param"] == "user", lines
        assert "closed after" not in server.log.read_text() and "chat " not in server.log.read_text(), server.log.read_text()
        assert runtime.store.count_interactions("acme", "rae") == 0
    finally:
        held.touch()
        server.stop()

