"""Review of session remote51's stop of a deleted user's adapter chats on another replica: a chat whose plan (its
adapter taken) began before the DELETE's record, but which registered as generating only after this replica's sweep
applied that record. Replica 1 of 2 of the real app over HTTP on real LanceDB, generating on `tests.vllm_like`
(`--hold-load`: the load of the user's adapter, during the chat's plan, held until a file exists; `--slow-stream`); the
DELETE through replica 0 is its deletion record in the store they share."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
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


@contextlib.contextmanager
def replica_holding_raes_load(tmp_path: Path, tiny_pal_dir: Path, minilm) -> Iterator[tuple[Service, GenerationServer, str, Path]]:  # noqa: F811
    """Replica 1 of 2 (its sweep run by hand) on a `tests.vllm_like --slow-stream 0.4` server that holds the load of
    rae's adapter (served name `name`) until file `held` exists."""
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
            yield b, server, name, held
    finally:
        held.touch()
        server.stop()


def delete_rae_while_her_load_is_held(b: Service, server: GenerationServer, name: str, asking: threading.Thread) -> None:
    """Once her chat's plan holds at her adapter's load: her DELETE through replica 0 (its record), then replica 1's
    sweep applies it (no chat of hers registered yet: none stopped by the pass)."""
    deadline = time.monotonic() + 20
    while f"holding the load of {name}" not in server.log.read_text():  # her chat's plan took her adapter
        assert asking.is_alive() and time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.02)
    b.runtime.store.record_deletion(new_deletion("acme", "rae", time.time(), 0, began_at=time.time() - 0.05))
    time.sleep(SYNC_MS / 1000 + 0.1)  # replica 1's reads see the record
    assert b.runtime.deletion_sweep.run_once() == 1


def test_a_chat_planned_before_the_record_and_registered_after_the_sweep_applied_it_is_stopped(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Rae's stream on replica 1 takes her adapter (its load held on the server) when her DELETE through replica 0 is
    recorded, and replica 1's sweep applies the record before the chat registers as generating. Before this review the
    sweep stopped only the chats registered then, and a chat registering later counted as begun then (after the
    record): it streamed her adapter's answer to its end, [DONE] and all. Now a chat registering checks the records
    applied lately, as begun when its plan began: stopped before its first event, it is the plain 409 `user_deleted`
    naming `user`, and nothing was sent to the generation server for it."""
    with replica_holding_raes_load(tmp_path, tiny_pal_dir, minilm) as (b, server, name, held):
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
            delete_rae_while_her_load_is_held(b, server, name, streaming)
        finally:
            held.touch()  # the load goes on: the chat registers
            streaming.join(20)
        assert not streaming.is_alive()
        # stopped as it registered, before its first event: the plain 409 (before: 200, her adapter's answer, [DONE])
        assert lines[0] == "409", lines
        error = json.loads(lines[1])["error"]
        assert error["code"] == "user_deleted" and error["param"] == "user", lines
        assert "closed after" not in server.log.read_text() and "chat " not in server.log.read_text(), server.log.read_text()
        assert b.runtime.store.count_interactions("acme", "rae") == 0


def test_the_openai_client_does_not_send_a_chat_stopped_by_its_users_delete_again(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """The openai client sends a request answered 409 again (its `_should_retry`: "lock timeouts"), twice by default,
    unless the answer says `x-should-retry: false`. Rae's plain chat through the openai client is stopped by her DELETE
    (as above). Before this review its 409 `user_deleted` was sent again by the client: the copy, planned after the
    record, was answered 200 and stored as her interaction, her words from before her DELETE kept after it answered.
    Now the 409 says not to: the client raises it (ConflictError naming `user_deleted`), and nothing of her is stored."""
    with replica_holding_raes_load(tmp_path, tiny_pal_dir, minilm) as (b, server, name, held):
        client = openai.OpenAI(base_url=f"{b.url}/v1", api_key=b.keys["acme"], max_retries=2, timeout=30)
        got: list[object] = []

        def chat() -> None:
            try:
                got.append(client.chat.completions.create(model=CHAT["model"], messages=CHAT["messages"], user="rae", max_tokens=4))
            except openai.APIStatusError as exc:
                got.append(exc)

        asking = threading.Thread(target=chat)
        asking.start()
        try:
            delete_rae_while_her_load_is_held(b, server, name, asking)
        finally:
            held.touch()
            asking.join(30)
        assert not asking.is_alive()
        assert isinstance(got[0], openai.ConflictError), got  # before: a ChatCompletion, the copy's answer
        assert got[0].response.json()["error"]["code"] == "user_deleted", got[0].response.text
        assert b.runtime.store.count_interactions("acme", "rae") == 0  # before: 1
