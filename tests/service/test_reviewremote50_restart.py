"""A service restarted on a remote generation server (`PLURALIGN_GENERATOR=openai:URL`): the adapters it loads there.

Since remote50 an adapter's name on the server carries the replica's part (`RemoteGenerator.served_name`), which was
random, new at each start: each restart loaded a new copy of every user's adapter it met again, and the copies of the
starts before stayed registered on the server (vLLM keeps run-time adapters until it restarts) however often the
service restarted (a rolling update, a crash loop). Now the part is the service's own, stable across its starts (its
store and `replica_index`): a start loads no second copy of what its earlier start loaded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pluralign.policy.adapters import AdapterRegistry, adapter_name
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_remote49_generation_server import CHAT, GenerationServer, user_adapter
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.vllm_like import BASE


def chat_once(config: Settings, minilm) -> str:  # noqa: F811
    """A start of the service (its generator made from `config`, as `pluralign serve` makes it), rae's chat, a stop."""
    runtime = Runtime.build(config, encoder=minilm)
    try:
        service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
        with service.server, service.client("acme") as c:
            answer = c.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["message"]["content"]
    finally:
        runtime.close()


@pytest.mark.slow  # two starts of the app (~3 s on two busy cores): `make test-scaleout`
def test_a_restarted_service_loads_no_second_copy_of_an_adapter_it_loaded_before(tmp_path: Path, tiny_pal_dir, minilm):  # noqa: F811
    server = GenerationServer(tmp_path / "generation.log")
    try:
        config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{server.url}", generator_model=BASE, generator_retries=0,
                          generator_timeout_s=10, pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1)
        user_adapter(AdapterRegistry(config.adapters_path), "acme", "rae")
        first, second = chat_once(config, minilm), chat_once(config, minilm)
        assert first.startswith(f"answered by {adapter_name('acme', 'rae')}-"), first
        assert second == first  # before: another served name (another replica part)
        listed = [m["id"] for m in httpx.get(f"{server.url}/models").json()["data"]]
        copies = [m for m in listed if m.startswith(f"{adapter_name('acme', 'rae')}-")]
        assert len(copies) == 1, listed  # before: one a start
    finally:
        server.stop()
