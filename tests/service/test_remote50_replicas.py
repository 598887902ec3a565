"""Two API replicas generating on one vLLM-like server (`PLURALIGN_GENERATOR=openai:URL`), and a server that does not
keep the adapters it loads (session remote50). The server is `tests.vllm_like` in a process of its own (its answers
say which weights wrote them, read at the load as vLLM reads them; its stdout says each load, unload and chat); each
replica is the real app over HTTP with its own data folder, both reading one adapters folder (deploy/README.md)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from pluralign.policy.adapters import AdapterMeta, adapter_name, write_meta
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from service.users.services import register_adapter
from tests.service.test_remote49_generation_server import CHAT, GenerationServer, front_on
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.vllm_like import BASE, digest

WEIGHTS = 150_000  # float32s of an adapter here: 600 kB, two of them beyond a budget of 1 MB


def peft_folder(folder: Path, fill: float, base: str = BASE) -> Path:
    """A LoRA adapter folder as peft saves one (its two files, our metadata), its weights all `fill`."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                                                            "base_model_name_or_path": base}))
    save_file({"base_model.model.q_proj.lora_A.weight": np.full((WEIGHTS,), fill, dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    write_meta(folder, AdapterMeta(kind="user", base_model=base, shots=0, data_version="test"))
    return folder


@contextlib.contextmanager
def two_replicas(tmp_path: Path, tiny_pal_dir: Path, minilm) -> Iterator[tuple[Service, Service, GenerationServer]]:  # noqa: F811
    """Replicas a and b of the app on one `tests.vllm_like` server and one adapters folder, each with room for one
    adapter (`adapter_budget_mb` 1)."""
    server = GenerationServer(tmp_path / "generation.log")
    with replicas_generating_on(server, minilm, lambda index: Settings(
            data_dir=str(tmp_path / ("a", "b")[index]), adapters_dir=str(tmp_path / "adapters"), generator=f"openai:{server.url}",
            pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1, adapter_budget_mb=1)) as replicas:
        yield replicas


@contextlib.contextmanager
def replicas_generating_on(server: GenerationServer, encoder, config: Callable[[int], Settings]) -> Iterator[tuple[Service, Service, GenerationServer]]:
    """Replicas 0 and 1 of the real app over HTTP, each built from `config(index)` and `encoder`, generating on `server`
    (`RemoteGenerator`: 10 s a request, no retry), each with a key of tenant acme: yields (replica 0, replica 1, server).
    The server is stopped on the way out, the replicas first."""
    try:
        replicas = []
        for index in (0, 1):
            runtime = Runtime.build(config(index), generator=RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0)),
                                    encoder=encoder)
            replicas.append(Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")}))
        with replicas[0].server, replicas[1].server:
            yield replicas[0], replicas[1], server
    finally:
        server.stop()


def said(server: GenerationServer, since: int = 0) -> list[str]:
    """The server's lines about loads, unloads and chats, from the `since`-th on."""
    return [line for line in server.log.read_text().splitlines() if re.match(r"(load|unload|chat) ", line)][since:]


def answer(service: Service, user: str) -> str:
    with service.client("acme") as c:
        got = c.post("/v1/chat/completions", json={**CHAT, "user": user})
    assert got.status_code == 200, got.text
    return got.json()["choices"][0]["message"]["content"]


@pytest.mark.slow  # two apps on one generation server (~5 s a test on two busy cores): `make test-scaleout`
def test_one_replicas_eviction_leaves_the_adapter_another_replica_serves_loaded(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Replicas a and b both serve user rae; a's next user, sam, evicts rae's adapter there. Before (remote50) both
    named it alike on the server (`adapter_name`), and a's eviction unloaded the one b served with: b's next chat for rae
    was answered 404 and loaded it again (a second unload in between left b's chat to the fallback). Now each replica
    loads its own: a's unload leaves b's, and b's chat is answered at once by rae's weights."""
    with two_replicas(tmp_path, tiny_pal_dir, minilm) as (a, b, server):
        for user, fill in (("rae", 1.0), ("sam", 2.0)):
            register_adapter(a.runtime, "acme", user, peft_folder(tmp_path / "trained" / user, fill))
        rae = digest(str(a.runtime.adapters.registry.folder("acme", "rae")))
        assert answer(a, "rae").endswith(f"with weights {rae}") and answer(b, "rae").endswith(f"with weights {rae}")
        mark = len(said(server))
        answer(a, "sam")  # a's budget holds one adapter: rae's is unloaded there
        assert adapter_name("acme", "rae") not in a.runtime.generator.adapters
        assert any(line.startswith("unload ") for line in said(server, mark)), said(server, mark)
        mark = len(said(server))
        assert answer(b, "rae").endswith(f"with weights {rae}")
        assert [line.split()[0] for line in said(server, mark)] == ["chat"] and said(server, mark)[0].endswith(" 200"), said(server, mark)


@pytest.mark.slow  # two apps on one generation server (~5 s a test on two busy cores): `make test-scaleout`
def test_an_adapter_retrained_on_another_replica_is_served_with_its_new_weights(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Replica a serves rae with her adapter; a retrained one is registered on replica b, whose next chat for rae loads
    it. Before (remote50) b's load was answered "has already been loaded" (a's, under the same name), counted as loaded,
    and b served rae with the old weights until a unloaded them. Now the server's name of an adapter carries its weights'
    version: b's load is of the new weights, and so is a's once its pool sees the new adapter."""
    with two_replicas(tmp_path, tiny_pal_dir, minilm) as (a, b, server):
        register_adapter(a.runtime, "acme", "rae", peft_folder(tmp_path / "trained" / "v1", 1.0))
        old = digest(str(a.runtime.adapters.registry.folder("acme", "rae")))
        assert answer(a, "rae").endswith(f"with weights {old}")
        register_adapter(b.runtime, "acme", "rae", peft_folder(tmp_path / "trained" / "v2", 3.0))
        new = digest(str(b.runtime.adapters.registry.folder("acme", "rae")))
        assert new != old
        assert answer(b, "rae").endswith(f"with weights {new}")  # before: the old weights
        assert answer(a, "rae").endswith(f"with weights {new}")
        shutil.rmtree(tmp_path / "trained")


def test_a_server_that_keeps_no_adapter_loaded_again_is_left_for_the_fallback_after_one_load(tmp_path, tiny_pal_dir, minilm, capfd):  # noqa: F811
    """The server restarts into one whose loads do not take (answered 200, the adapter still unknown to its chats).
    Before (remote50) rae's chat made 3 loads and 4 chats there before the fallback answered it, and the warning said her
    adapter "was dropped twice before chat ... began" (no one dropped it). Now the one load again that a chat's 404 makes,
    answered 404 again, sends the chat to the fallback at once: 1 load and 2 chats, then the fallback's chat, and the
    warning says the server did not keep the adapter it loaded."""
    with front_on(tmp_path, tiny_pal_dir, minilm) as (service, server):
        assert "with weights" in answer(service, "rae")
        server.restart("--lose-adapters")
        capfd.readouterr()
        mark = len(said(server))
        assert answer(service, "rae") == f"answered by {BASE}"
        asked = [" ".join(line.split()[:2]) for line in said(server, mark)]
        name = asked[0].split()[1]
        assert asked == [f"chat {name}", f"load {name}", f"chat {name}", f"chat {BASE}"], asked  # before: 3 loads, 5 chats
        logged = capfd.readouterr().err
        assert "dropped twice" not in logged, logged
        assert re.search(r"the generation server did not keep the adapter of user 'rae' of tenant 'acme'.*answered by the fallback", logged), logged


@pytest.mark.slow  # a start of its own (~6 s on two busy cores): `make test-scaleout`
def test_an_adapter_jobs_record_shows_no_password_of_the_generation_servers_url(tmp_path, tiny_pal_dir, minilm, capfd):  # noqa: F811
    """`PLURALIGN_GENERATOR=openai:http://user:PASSWORD@host/v1`: an adapter job's `base` is the generator setting (the
    model the service generates with). Before (remote50) the job's record kept the URL whole: the record on disk, the
    admin routes' answers and the job's error and log lines (its worker's `--base=...`) all named the password. Now the
    record is written with it hidden (`pluralign.urls.redacted`), and so are what the routes show of records written
    before. Since review remote50 the base is the model the server runs (tests/service/test_reviewremote50_adapter_jobs.py)."""
    import socket

    from service.admin.controllers import ADMIN_HANDLERS

    with socket.socket() as closed:  # a port nothing listens on: the job never reaches the server
        closed.bind(("127.0.0.1", 0))
        url = f"http://pluralign:hunter2-pw@127.0.0.1:{closed.getsockname()[1]}/v1"
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{url}", generator_model=BASE, generator_retries=0,
                      generator_timeout_s=5, pal_dir=str(tiny_pal_dir), max_tokens=4)
    runtime = Runtime.build(config, encoder=minilm)
    service = Service(LiveServer(create_app(runtime=runtime, admin_handlers=ADMIN_HANDLERS)), runtime,
                      {"acme": runtime.keys.issue("acme"), "admin": runtime.keys.issue("ops", admin=True)})
    with service.server, service.client("acme") as c, service.client("admin") as admin:
        feedback = {"type": "comparison", "user": "rae", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
        assert c.post("/v1/feedback", json=feedback).status_code == 201
        # since review remote50 a job's base is the model the server runs, never the URL: here one no setting names
        # (`generator_model` "base", no `generator_base`), so the job is refused, the message naming no password
        refused = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"user": "rae", "tenant": "acme"}})
        assert refused.status_code == 409 and "PLURALIGN_GENERATOR_BASE" in refused.text, refused.text
        records = "".join(p.read_text() for p in (tmp_path / "data" / "jobs").glob("*.json"))
        shown = admin.get("/admin/jobs").text
        assert "hunter2-pw" not in records + shown + refused.text + capfd.readouterr().err, (refused.text, records)


def test_a_prompt_beyond_max_prefill_tokens_is_refused_before_the_generation_server_is_asked(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """Before (remote50) the remote generator counted no prompt tokens up front: `max_prefill_tokens` bounded nothing,
    and a prompt of any length was sent to the server. Now it asks the server's tokenizer (vLLM's `/tokenize`): a prompt
    beyond the bound is the 400 naming `messages` that a local generator's is, and no chat reaches the server."""
    with front_on(tmp_path, tiny_pal_dir, minilm, max_prefill_tokens=40) as (service, server), service.client("acme") as c:
        mark = len(said(server))
        long = c.post("/v1/chat/completions", json={**CHAT, "user": None, "messages": [{"role": "user", "content": "word " * 60}]})
        assert long.status_code == 400, long.text  # before: 200, sent to the server
        assert long.json()["error"]["param"] == "messages" and "max_prefill_tokens" in long.json()["error"]["message"], long.text
        assert said(server, mark) == [], said(server, mark)
        short = c.post("/v1/chat/completions", json={**CHAT, "user": None, "n": 3})  # 3 candidates share one prefill
        assert short.status_code == 200 and len(short.json()["choices"]) == 3, short.text
