"""The service on a remote generation server (`PLURALIGN_GENERATOR=openai:URL`) that restarts, and that refuses a
request as the client's fault (session remote49). The server is `tests.vllm_like` in a process of its own (vLLM's
answers where they matter here: run-time adapters forgotten on restart, 404 for a model it does not hold, 400 for a
context too long), stopped and started again on its port mid-test; the front is the real app over HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save_file

from pluralign.policy.adapters import AdapterMeta, AdapterRegistry, adapter_name, write_meta
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.processes import REPO
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.vllm_like import BASE, CONTEXT


class GenerationServer:
    """`python -m tests.vllm_like 0` in a process of its own, its output in `log`, on the port it says it bound;
    `restart()` stops it (SIGTERM: whatever it loaded is gone) and starts it again on that port."""

    def __init__(self, log: Path, *flags: str):
        self.log = log
        self.proc = self._start(0, *flags)
        try:  # a server that never said its port or never answered is not left running (review remote49)
            deadline = time.monotonic() + 30
            while (said := re.search(r"listening on port (\d+)", log.read_text())) is None:
                assert self.proc.poll() is None and time.monotonic() < deadline, f"no port said:\n{log.read_text()}"
                time.sleep(0.01)
            self.port = int(said[1])
            self.url = f"http://127.0.0.1:{self.port}/v1"
            self._wait_healthy()
        except BaseException:
            self.proc.kill()
            self.proc.wait(timeout=15)
            raise

    def _start(self, port: int, *flags: str) -> subprocess.Popen:
        with open(self.log, "ab") as out:  # -S: stdlib only, no site-packages to read
            return subprocess.Popen([sys.executable, "-S", "-m", "tests.vllm_like", str(port), *flags], cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)

    def restart(self, *flags: str) -> None:
        self.stop()
        self.proc = self._start(self.port, *flags)
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while True:  # polled closely (`tests.processes.wait_listening` waits 0.2 s a try): a restart is tens of ms
            assert self.proc.poll() is None, f"exited {self.proc.returncode} (its port taken meanwhile?):\n{self.log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"/health not 200 after 30 s:\n{self.log.read_text()}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


@contextlib.contextmanager
def front_on(tmp_path: Path, tiny_pal_dir: Path, minilm, *flags: str,  # noqa: F811
             policy: RemotePolicy = RemotePolicy(timeout_s=10, max_retries=0), **settings) -> Iterator[tuple[Service, GenerationServer]]:
    """The real app generating on a `tests.vllm_like` server (started with `flags`), tenant acme's user rae holding a
    LoRA adapter."""
    server = GenerationServer(tmp_path / "generation.log", *flags)
    try:
        config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{server.url}", pal_dir=str(tiny_pal_dir),
                          max_tokens=4, **{"rerank": False, "candidates": 1, **settings})  # one candidate: no reranking to wait for
        runtime = Runtime.build(config, generator=RemoteGenerator(server.url, BASE, policy=policy), encoder=minilm)
        user_adapter(runtime.adapters.registry, "acme", "rae")
        service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
        with service.server:
            yield service, server
    finally:
        server.stop()


def user_adapter(registry: AdapterRegistry, tenant: str, user: str) -> None:
    """A small LoRA adapter folder of `user`'s, as a registration leaves it (peft's two files and our metadata)."""
    folder = registry.folder(tenant, user)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                                                            "base_model_name_or_path": BASE}))
    save_file({"base_model.model.q_proj.lora_A.weight": np.zeros((4, 8), dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    write_meta(folder, AdapterMeta(kind="user", base_model=BASE, shots=0, data_version="test", tenant=tenant, user=user))


CHAT = {"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": [{"role": "user", "content": "Plan my weekend"}]}


def streamed_text(answer) -> str:
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
    assert all("error" not in e for e in events), events
    return "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])


def test_a_restarted_generation_server_is_given_the_users_adapter_again(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """The generation server restarts and forgets the adapters the service loaded at run time: it answers a chat naming
    one 404 ("The model ... does not exist"). Before (remote49) the remote generator took that for the server's failure
    and every chat of the user was a 503 (a 500 before small48) until the service restarted, since the adapter pool
    still counted the adapter as loaded. Now the remote generator loads the adapter again and sends the chat once more:
    the user is served by their own adapter, plain and streamed. A server that comes back refusing adapter loads (500)
    makes the chat the 503 with Retry-After of a server's failure; once it loads adapters again, they are served. One
    whose loads do not take (answered 200, the adapter still unknown) has the chat answered by the fallback (the base
    model here), as an adapter dropped twice before its chat began is."""
    with front_on(tmp_path, tiny_pal_dir, minilm) as (service, server), service.client("acme") as c:
        name = adapter_name("acme", "rae")
        first = c.post("/v1/chat/completions", json=CHAT)
        # the server's name of the adapter: `name`, the replica's and the weights' version (remote50)
        assert first.status_code == 200 and first.json()["choices"][0]["message"]["content"].startswith(f"answered by {name}-"), first.text
        server.restart()
        streamed = c.post("/v1/chat/completions", json={**CHAT, "pluralign": {"candidates": 1}, "stream": True})
        assert streamed.status_code == 200 and streamed_text(streamed).startswith(f"answered by {name}-"), streamed.text  # before: an error event
        server.restart("--refuse-loads")
        refused = c.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "10", refused.text
        server.restart()
        again = c.post("/v1/chat/completions", json=CHAT)
        assert again.status_code == 200, again.text  # before: 503 "generation is unavailable for now"
        assert again.json()["choices"][0]["message"]["content"].startswith(f"answered by {name}-") and again.json()["pluralign"]["adapter"] == name
        server.restart("--lose-adapters")
        fallback = c.post("/v1/chat/completions", json=CHAT)
        assert fallback.status_code == 200, fallback.text
        assert fallback.json()["choices"][0]["message"]["content"] == f"answered by {BASE}" and fallback.json()["pluralign"]["adapter"] is None

def test_a_prompt_the_generation_server_finds_too_long_is_a_400_naming_messages(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """The generation server refuses the chat as the client's fault (400: the messages and max_tokens exceed its
    context; the service, not told the model's context, let it through). Before (remote49) that was the 503 "send it
    again" of a server's failure, which a client retries for ever; now it is a 400 naming `messages`, the server's
    words with it, and no Retry-After (a stream whose headers went: its error event says the same)."""
    with front_on(tmp_path, tiny_pal_dir, minilm) as (service, server), service.client("acme") as c:
        for stream in (False, True):
            long = {**CHAT, "pluralign": {"candidates": 1}, "stream": stream,
                    "messages": [{"role": "user", "content": "word " * (CONTEXT * 4 // 5)}]}
            answer = c.post("/v1/chat/completions", json=long)
            if stream and answer.status_code == 200:  # its headers went before the generation began: the error event
                error = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")][-1]["error"]
                assert error["type"] == "invalid_request_error", error  # before: service_unavailable_error
            else:
                assert answer.status_code == 400, answer.text  # before: 503
                error = answer.json()["error"]
                assert "Retry-After" not in answer.headers
            assert error["param"] == "messages" and "maximum context length" in error["message"], error
            assert server.url not in error["message"] and str(server.port) not in error["message"]


def test_a_start_and_a_failed_chat_log_no_password_of_the_generation_servers_url(tmp_path, tiny_pal_dir, minilm, caplog, capfd):  # noqa: F811
    """`PLURALIGN_GENERATOR=openai:http://user:PASSWORD@host/v1`, as `make serve` starts it (the generator made from
    the settings): the start's log line and a failed chat's error line name the server with `user:***@` (remote49;
    before, the password was logged whole at every start and every failed chat)."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://pluralign:hunter2-pw@127.0.0.1:{closed.getsockname()[1]}/v1"
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{url}", generator_model=BASE, generator_retries=0,
                      generator_timeout_s=5, pal_dir=str(tiny_pal_dir), max_tokens=4)
    caplog.set_level(logging.INFO)
    runtime = Runtime.build(config, encoder=minilm)
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    with service.server, service.client("acme") as c:
        assert c.post("/v1/chat/completions", json={**CHAT, "user": None}).status_code == 503
    # the start's lines in caplog; the chat's on stderr (the app's logging set-up gives the root logger its own handler)
    logged = "\n".join(r.getMessage() for r in caplog.records) + capfd.readouterr().err
    assert "loading the generator openai:http://pluralign:***@127.0.0.1" in logged and "generation server at http://pluralign:***@" in logged
    assert "hunter2-pw" not in logged, logged


def test_two_replicas_sharing_a_server_both_serve_the_adapter_before_and_after_its_restart(tmp_path):
    """Two API replicas send generation to one server and name a user's adapter alike (`adapter_name`). Until remote50
    the second replica's load of the adapter the first loaded was answered vLLM's 400 "has already been loaded", counted
    as loaded (before remote49 it was the failed load's 503 for each chat of the user there); since, each loads its own
    (`served_name`: the replica's part in it). After the server restarted, each loads its own again at its chat."""
    server = GenerationServer(tmp_path / "generation.log")
    try:
        first, second = (RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0)) for _ in range(2))
        first.load_adapter("u1", "/adapters/u1")
        second.load_adapter("u1", "/adapters/u1")  # before: RemoteGeneratorError (400)
        server.restart()
        messages = [{"role": "user", "content": "Hi"}]
        assert second.generate(messages, adapter="u1")[0][0].text == f"answered by {second.served_name('u1', '/adapters/u1')}"
        assert first.generate(messages, adapter="u1")[0][0].text == f"answered by {first.served_name('u1', '/adapters/u1')}"
        assert first.adapters == second.adapters == {"u1"}
    finally:
        server.stop()


def test_a_users_adapter_loading_slowly_again_holds_up_no_other_tenants_chat(tmp_path):
    """review remote49: after the server's restart each user's adapter is loaded again at their next chat, and those
    loads went one at a time, all adapters under one lock: while tenant acme's user's load took long (a large adapter,
    a slow disk; up to `generator_timeout_s` x its tries, 6 min by default), tenant beta's user's chat waited behind it.
    Now each adapter's load again waits only for its own: beta's chat is answered while acme's load is still held."""
    import threading

    from pluralign.policy.adapters import adapter_name

    server = GenerationServer(tmp_path / "generation.log")
    held = tmp_path / "release"
    try:
        generator = RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=30, max_retries=0))
        slow, other = adapter_name("acme", "rae"), adapter_name("beta", "bo")
        generator.load_adapter(slow, "/adapters/rae")
        generator.load_adapter(other, "/adapters/bo")
        server.restart("--hold-load", f"{generator.served_name(slow, '/adapters/rae')}:{held}")
        messages = [{"role": "user", "content": "Hi"}]
        answers: dict[str, str] = {}
        waiting = threading.Thread(target=lambda: answers.update(slow=generator.generate(messages, adapter=slow)[0][0].text))
        waiting.start()
        deadline = time.monotonic() + 30
        while f"holding the load of {slow}-" not in server.log.read_text():
            assert waiting.is_alive() and time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.01)
        beside = threading.Thread(target=lambda: answers.update(other=generator.generate(messages, adapter=other)[0][0].text))
        beside.start()
        beside.join(timeout=10)  # before: still waiting on the lock acme's load held
        assert answers.get("other", "").startswith(f"answered by {other}-") and "slow" not in answers, answers
        held.touch()
        waiting.join(timeout=30)
        assert answers["slow"].startswith(f"answered by {slow}-"), answers
    finally:
        held.touch()
        server.stop()
