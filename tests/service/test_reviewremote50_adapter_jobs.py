"""A user's adapter job on a service that generates on a remote server (`PLURALIGN_GENERATOR=openai:URL`, vLLM).

Until review remote50 the job's `base` was the `openai:` URL itself (since remote50 with its credentials hidden), which
every worker refused ("--base must be `smollm2` or a transformers model folder"): no adapter job of such a service could
succeed, the automatic trigger's neither. Now the job trains on the model the server runs: SmolLM2 when that is it
(`generator_model` unset or SmolLM2's name), else the folder `generator_base` names, the adapter recording the server's
name for it; when neither can be known the job is refused at submission (409) naming the setting to set, nothing
written. The jobs here run whole: a worker trains, the adapter is promoted, and the user's next chat loads it onto the
server (`tests.vllm_like`) and is answered by it."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pluralign.embed.models import SMOLLM2_ID
from pluralign.policy.adapters import adapter_name, read_meta
from service.admin.controllers import ADMIN_HANDLERS
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_admin import wait_job
from tests.service.test_remote49_generation_server import CHAT, GenerationServer
from tests.service.tiny import LiveServer, Service, minilm, tiny_generator_dir, tiny_pal_dir  # noqa: F401
from tests.vllm_like import BASE


@contextlib.contextmanager
def service_on(tmp_path: Path, tiny_pal_dir: Path, minilm, url: str, **settings) -> Iterator[Service]:  # noqa: F811
    """The real app (its admin area too) generating on `url` as `PLURALIGN_GENERATOR=openai:URL` makes it."""
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{url}", generator_retries=0, generator_timeout_s=10,
                      pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1, **settings)
    runtime = Runtime.build(config, encoder=minilm)
    service = Service(LiveServer(create_app(runtime=runtime, admin_handlers=ADMIN_HANDLERS)), runtime,
                      {"acme": runtime.keys.issue("acme"), "admin": runtime.keys.issue("ops", admin=True)})
    with service.server:
        yield service


def give(service: Service, user: str, n: int = 5) -> None:
    with service.client("acme") as c:
        for i in range(n):
            body = {"type": "comparison", "user": user, "prompt": f"Question {i}?", "chosen": f"Helpful answer {i}.",
                    "rejected": f"Rude answer {i}."}
            assert c.post("/v1/feedback", json=body).status_code == 201


def closed_url() -> str:
    with socket.socket() as closed:  # a port nothing listens on: no chat is sent in these tests
        closed.bind(("127.0.0.1", 0))
        return f"http://pluralign:hunter2-pw@127.0.0.1:{closed.getsockname()[1]}/v1"


def train(service: Service) -> dict:
    """User rae's adapter job (1 step) run to its end."""
    give(service, "rae")
    with service.client("admin") as admin:
        created = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "rae", "steps": 1, "batch_size": 1}})
        assert created.status_code == 201, created.text
        return wait_job(admin, created.json()["id"], timeout=300)


def chat(service: Service) -> str:
    """User rae's chat's answer."""
    with service.client("acme") as c:
        answer = c.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    return answer.json()["choices"][0]["message"]["content"]


def test_an_adapter_job_of_a_server_running_a_model_no_setting_names_is_refused_naming_the_setting(tmp_path, tiny_pal_dir, minilm, capfd):  # noqa: F811
    """`generator_model` another model than SmolLM2, `generator_base` unset: the weights the server runs are nowhere a
    worker can read. Before: 201, the job queued (its snapshot written) and failed at its worker's start; the trigger's
    the same. Now: a 409 naming PLURALIGN_GENERATOR_BASE, nothing queued or written; the trigger logs it, no traceback."""
    with service_on(tmp_path, tiny_pal_dir, minilm, closed_url(), generator_model="Qwen/Qwen2.5-0.5B-Instruct", adapter_every=3) as service:
        give(service, "rae", 3)  # the trigger's count: its rows moved now, or by the ingest worker meanwhile
        service.runtime.ingest.flush_user("acme", "rae")
        with service.client("admin") as admin:
            refused = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "rae"}})
            assert refused.status_code == 409, refused.text
            error = refused.json()["error"]
            assert error["code"] == "no_adapter_base" and "PLURALIGN_GENERATOR_BASE (setting generator_base)" in error["message"], error
            assert "'Qwen/Qwen2.5-0.5B-Instruct'" in error["message"] and "hunter2" not in error["message"], error
            assert admin.get("/admin/jobs").json()["jobs"] == []
    snapshots = tmp_path / "data" / "jobs" / "data"
    assert not snapshots.exists() or [p for p in snapshots.rglob("*") if p.is_file()] == []
    logged = capfd.readouterr().err
    assert re.search(r"adapter trigger queued no job for a user of tenant acme: .*set PLURALIGN_GENERATOR_BASE", logged), logged
    assert "Traceback" not in logged and "hunter2" not in logged, logged


@pytest.mark.slow  # a worker trains SmolLM2 one step (~15 s on two busy cores): `make test-scaleout`
def test_an_adapter_job_of_a_server_running_smollm2_trains_it_and_the_users_chat_is_answered_by_the_adapter(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """`PLURALIGN_GENERATOR=openai:URL` alone (the server runs SmolLM2: `generator_model`'s default). Before: the job
    failed, "--base must be `smollm2` or a transformers model folder, got openai:http://..."."""
    server = GenerationServer(tmp_path / "generation.log")
    try:
        with service_on(tmp_path, tiny_pal_dir, minilm, server.url) as service:
            ended = train(service)
            assert ended["state"] == "succeeded" and ended["promoted"] is True, ended
            assert ended["params"]["base"] == "smollm2" and "base_model_id" not in ended["params"], ended["params"]
            assert read_meta(service.runtime.adapters.registry.folder("acme", "rae")).base_model == SMOLLM2_ID
            text = chat(service)
        assert re.fullmatch(rf"answered by {adapter_name('acme', 'rae')}-[0-9a-f]{{8}}-[0-9a-f]{{12}} with weights [0-9a-f]{{8}}", text), text
    finally:
        server.stop()


@pytest.mark.slow  # a worker trains a tiny model one step (~10 s on two busy cores): `make test-scaleout`
def test_an_adapter_job_trains_on_generator_base_and_records_the_servers_name_for_it(tmp_path, tiny_pal_dir, tiny_generator_dir, minilm):  # noqa: F811
    """The server runs another model (`generator_model` "base"); `generator_base` names a folder holding it. The job
    trains on that folder and the adapter records the server's name, which the service's checks (the promotion, the
    adapter pool) compare with the generator's: the user's chat loads it. Before: the job failed at its worker's start."""
    server = GenerationServer(tmp_path / "generation.log")
    try:
        with service_on(tmp_path, tiny_pal_dir, minilm, server.url, generator_model=BASE, generator_base=str(tiny_generator_dir)) as service:
            ended = train(service)
            assert ended["state"] == "succeeded" and ended["promoted"] is True, ended
            assert ended["params"]["base_model_id"] == BASE, ended["params"]
            assert read_meta(service.runtime.adapters.registry.folder("acme", "rae")).base_model == BASE
            text = chat(service)
        assert re.fullmatch(rf"answered by {adapter_name('acme', 'rae')}-[0-9a-f]{{8}}-[0-9a-f]{{12}} with weights [0-9a-f]{{8}}", text), text
    finally:
        server.stop()


def test_a_generator_base_that_holds_no_model_is_refused_at_start_naming_the_setting(tmp_path):
    """`pluralign serve`'s check before anything loads (`Settings.check_models`): a folder without config.json (a typo,
    a volume not mounted) would fail every adapter job at its worker's start; it is refused up front."""
    settings = Settings(data_dir=str(tmp_path / "data"), generator="openai:http://vllm:8000/v1", generator_model="org/m",
                        generator_base=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"PLURALIGN_GENERATOR_BASE \(setting generator_base\): expected a folder holding the model"):
        settings.check_models()
