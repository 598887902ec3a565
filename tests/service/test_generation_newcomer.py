"""A third tenant's chat starts at once while two others keep every chat they may hold running or waiting, over real
HTTP with the default `generation_workers` (4). Before (session 47's close): a tenant alone took 3 of the 4 workers,
a second tenant's chat the last one, and a third tenant's chat waited for one of theirs to end (minutes with long
chats). And the limit on a hung generation process (`generation_stall_s`) refuses what it cannot honour."""

from __future__ import annotations

import threading

import httpx
import pytest

from pluralign.policy.generator import Generator
from pluralign.turns import CALLER
from tests.service.test_generation_fairness import CHAT, serve, wait_for


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = serve(tmp_path_factory.mktemp("newcomer"), Generator.from_folder(tiny_generator_dir), tiny_pal_dir,
                            minilm, tenant_generations=4, generation_queue=16, rerank=False, candidates=1)
    service.keys["initech"] = service.runtime.keys.issue("initech")
    with server:
        yield service


def test_a_third_tenant_s_chat_starts_while_two_tenants_hold_all_they_may(svc):
    release = threading.Event()
    generator = svc.runtime.generator
    generate = generator.generate

    def held(*args, **kwargs):  # acme's and globex's chats hold their workers until the test ends
        if CALLER.get() in ("tenant:acme", "tenant:globex"):
            release.wait(60)
        return generate(*args, **kwargs)

    chat = {**CHAT, "max_tokens": 4, "temperature": 0}
    answers: dict[str, list[httpx.Response]] = {"acme": [], "globex": [], "initech": []}

    def send(who: str) -> None:
        with svc.client(who) as c:
            answers[who].append(c.post("/v1/chat/completions", json=chat))

    generator.generate = held
    threads = []
    try:
        for who in ("acme", "globex"):
            for _ in range(4):
                threads.append(threading.Thread(target=send, args=(who,), daemon=True))
                threads[-1].start()
            assert wait_for(lambda: sum(svc.runtime.scheduler.stats()[k] for k in ("running", "waiting")) == len(threads))
        newcomer = threading.Thread(target=send, args=("initech",), daemon=True)
        newcomer.start()
        newcomer.join(30)
        stats = svc.runtime.scheduler.stats()
        assert answers["initech"], f"initech's chat waited for acme's or globex's to end: {stats}"
        assert answers["initech"][0].status_code == 200, answers["initech"][0].text
        assert not answers["acme"] and not answers["globex"]  # all still held
    finally:
        release.set()
        del generator.generate
    for thread in threads:
        thread.join(60)
    assert [r.status_code for who in ("acme", "globex") for r in answers[who]] == [200] * 8


@pytest.mark.parametrize(("env", "said"), [
    ({"PLURALIGN_GENERATION_STALL_S": "1"}, "`generation_stall_s` must be at least 5 and at most 3600 seconds, got 1.0"),
    ({"PLURALIGN_GENERATION_STALL_S": "nan"}, "`generation_stall_s` must be at least 5"),
    ({"PLURALIGN_GENERATION_STALL_S": "soon"}, "PLURALIGN_GENERATION_STALL_S (setting generation_stall_s): expected `float`"),
])
def test_a_bad_generation_stall_limit_is_refused_naming_the_setting(env, said):
    """The limit on a hung generation process (session 48): below 5 s a healthy child, heard from every second at best,
    could be killed as hung under load."""
    from service.settings import Settings

    with pytest.raises(ValueError) as refused:
        Settings.load(env)
    assert said in str(refused.value), str(refused.value)


class HeldOpenAIServer:
    """An OpenAI-compatible chat-completions server (as vLLM) that holds each request until released and counts how
    many it holds at once: the calls a front service overlaps, which such a server batches."""

    def __init__(self):
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.release, self.lock, self.holding = threading.Event(), threading.Lock(), 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.holding += 1
                outer.release.wait(30)
                body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_tenant_alone_overlaps_all_but_one_call_to_an_openai_server_as_before(tmp_path, tiny_pal_dir, minilm):
    """Review 48: half the workers kept free (a third tenant's chat starts at once) costs a tenant alone nothing on a local
    model, whose chats take it in turns anyway (as docs/api.md says), but an `openai:URL` server batches the calls it
    is sent at once: a tenant alone overlapped 2 of the 4 there, not 3 as before session 48, half its throughput gone.
    With a remote generator a tenant alone leaves one worker free again."""
    from pluralign.policy.remote import RemoteGenerator

    backend = HeldOpenAIServer()
    server, service = serve(tmp_path, RemoteGenerator(backend.url, "m"), tiny_pal_dir, minilm, tenant_generations=4,
                            generation_queue=16, rerank=False, candidates=1)
    answers: list[httpx.Response] = []

    def send() -> None:
        with service.client("acme") as c:
            answers.append(c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}))

    threads = [threading.Thread(target=send, daemon=True) for _ in range(4)]
    try:
        with server:
            try:
                for thread in threads:
                    thread.start()
                stats = service.runtime.scheduler.stats
                assert wait_for(lambda: stats()["running"] + stats()["waiting"] == 4 and backend.holding == stats()["running"])
                assert (stats()["running"], backend.holding) == (3, 3), stats()
            finally:
                backend.release.set()
                for thread in threads:
                    thread.join(30)
    finally:
        backend.close()
    assert [a.status_code for a in answers] == [200] * 4, answers[0].text
