"""Two replicas' adapter pools, each on its own RemoteGenerator, on one `tests.vllm_like` server and one adapters
folder (session remote50): the pools' own evictions and loads, without the apps around them
(tests/service/test_remote50_replicas.py drives the same through two apps over HTTP, slow-marked)."""

from __future__ import annotations

import time

import pytest

from pluralign.policy.adapters import AdapterPool, AdapterRegistry
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.service.test_remote49_generation_server import GenerationServer
from tests.service.test_remote50_replicas import WEIGHTS, peft_folder, said
from tests.vllm_like import BASE, digest

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def server(tmp_path):
    server = GenerationServer(tmp_path / "generation.log")
    yield server
    server.stop()


def pools(server: GenerationServer, registry: AdapterRegistry) -> list[AdapterPool]:
    """Replicas a and b: each pool's budget holds one adapter."""
    return [AdapterPool(RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0)), registry, BASE,
                        budget_bytes=WEIGHTS * 4 + 4096) for _ in range(2)]


def registered(registry: AdapterRegistry, user: str, fill: float) -> str:
    """`user`'s adapter of weights `fill`, saved where the registry reads it (over an earlier one); its weights' digest."""
    folder = registry.folder("acme", user)
    if folder.exists():
        registry.delete("acme", user)
    peft_folder(folder, fill)
    return digest(str(folder))


def text(pool: AdapterPool, name: str) -> str:
    return pool.host.generate(HI, adapter=name)[0][0].text


def test_an_eviction_on_one_replica_unloads_nothing_another_uses(server, tmp_path):
    """a and b both hold rae's adapter; a's load of sam's evicts rae's there. Before (remote50) a's unload was of the
    name b used too: b's next chat for rae was answered 404, and b loaded it again (the fallback when that happened twice
    in a row). Now a unloads its own: b's chat is answered at once."""
    registry = AdapterRegistry(tmp_path / "adapters")
    rae, _ = registered(registry, "rae", 1.0), registered(registry, "sam", 2.0)
    a, b = pools(server, registry)
    on_a, on_b = a.adapter_for("acme", "rae"), b.adapter_for("acme", "rae")
    assert text(a, on_a).endswith(rae) and text(b, on_b).endswith(rae)
    mark = len(said(server))
    a.adapter_for("acme", "sam")
    deadline = time.monotonic() + 10
    while a._dropping:  # the eviction's drop runs on a thread of its own
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert any(line.startswith("unload ") for line in said(server, mark)), said(server, mark)
    mark = len(said(server))
    assert text(b, on_b).endswith(rae)
    assert [line.split()[0] for line in said(server, mark)] == ["chat"] and said(server, mark)[0].endswith(" 200"), said(server, mark)


def test_an_adapter_retrained_after_another_replica_loaded_it_is_loaded_with_its_new_weights(server, tmp_path):
    """a serves rae's adapter; it is retrained; b, which had not loaded it, loads it for rae's next chat there. Before
    (remote50) the server answered b's load "has already been loaded" (a's, under the same name), b counted it as loaded
    and served the old weights. Now the server's name carries the weights' version: b serves the new ones, and so does a
    once its pool sees the retrained adapter."""
    registry = AdapterRegistry(tmp_path / "adapters")
    old = registered(registry, "rae", 1.0)
    a, b = pools(server, registry)
    assert text(a, a.adapter_for("acme", "rae")).endswith(old)
    new = registered(registry, "rae", 3.0)
    assert new != old
    assert text(b, b.adapter_for("acme", "rae")).endswith(new)  # before: the old weights
    assert text(a, a.adapter_for("acme", "rae")).endswith(new)


def test_a_users_delete_on_one_replica_unloads_every_replicas_copy_of_their_adapter(server, tmp_path):
    """Since each replica loads its own copy of an adapter (remote50), a DELETE answered by a unloaded a's copy alone: b's
    stayed on the server until b's pool met the user again or evicted it. Now a's `forget` of the deleted adapter has
    the server unload every copy of it (its list of models), and b, meeting the user next, answers with the fallback and
    forgets its own (the server's 404 for it)."""
    import httpx

    registry = AdapterRegistry(tmp_path / "adapters")
    registered(registry, "rae", 1.0)
    registered(registry, "sam", 2.0)
    a, b = pools(server, registry)
    name = a.adapter_for("acme", "rae")
    assert b.adapter_for("acme", "rae") == name and b.adapter_for("acme", "sam") != name  # b's budget: sam's evicts rae's there
    b.adapter_for("acme", "rae")  # rae's loaded on b again, sam's evicted
    held = lambda: {m["id"] for m in httpx.get(f"{server.url}/models").json()["data"]}  # noqa: E731
    assert sum(model.startswith(f"{name}-") for model in held()) == 2, held()
    registry.delete("acme", "rae")  # the DELETE answered by a: the files, then the adapter in memory
    a.forget("acme", "rae")
    deadline = time.monotonic() + 10
    while any(model.startswith(f"{name}-") for model in held()):  # before: b's copy stayed
        assert time.monotonic() < deadline, held()
        time.sleep(0.01)
    assert b.adapter_for("acme", "rae") == b.fallback
    assert text(b, b.adapter_for("acme", "sam")).endswith(digest(str(registry.folder("acme", "sam"))))


def test_a_stream_sent_again_after_a_load_again_names_the_adapter_as_loaded_again(server, tmp_path):
    """The server restarted, and the adapter's files changed since it was loaded (retrained: the pool has not met the
    user since): a streamed chat's 404 loads it again, under its new weights' name. Before (remote50, served names) the
    stream's request was made once, and sent again naming the old weights' name: a second 404, and the fallback."""
    registry = AdapterRegistry(tmp_path / "adapters")
    registered(registry, "rae", 1.0)
    remote = RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0))
    remote.load_adapter("rae", registry.folder("acme", "rae"))
    server.restart()
    new = registered(registry, "rae", 4.0)
    *_, final = remote.stream(HI, adapter="rae")
    assert final.text.endswith(f"with weights {new}"), final.text


def test_the_prompt_is_counted_by_the_servers_tokenizer_and_a_server_without_one_is_asked_once(server):
    """Before (remote50) `prompt_tokens` was 0 for any conversation not streamed yet: nothing bounded a remote chat's
    prompt up front. Now vLLM's `/tokenize` counts it; a server without that route (404: the OpenAI API) is asked once,
    then counts none (0), as before."""
    import http.server
    import threading

    remote = RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0))
    assert remote.prompt_tokens([{"role": "user", "content": "word " * 20}]) == 25 and remote.shared_prefill
    asked: list[str] = []

    class NoTokenizer(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoTokenizer)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        plain = RemoteGenerator(f"http://127.0.0.1:{other.server_port}/v1", BASE, policy=RemotePolicy(timeout_s=10, max_retries=0))
        assert [plain.prompt_tokens(HI) for _ in range(3)] == [0, 0, 0] and asked == ["/tokenize"], asked
    finally:
        other.shutdown()
        other.server_close()
