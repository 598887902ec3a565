"""Session 33 (operations): one request followed across processes by its X-Request-Id. The remote
encoder and generator send the id of the request they work for to their server, `serve-embeddings`
logs it, and a job a request started records it and names it in its worker's log (PLURALIGN_REQUEST_ID)."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from pluralign.embed.models import MINILM_ID
from service.admin.controllers import ADMIN_HANDLERS
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_admin import wait_job
from tests.service.tiny import LiveServer, Service, tiny_generator


def logged(log, text: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow  # with the next test: a real serve-embeddings process (~11 s to start)
def test_the_service_sends_a_chats_request_id_to_the_embeddings_server_which_logs_it(tmp_path, embeddings_server, tiny_generator_dir, tiny_pal_dir, monkeypatch):
    """Before: the remote encoder's requests carried no X-Request-Id, and serve-embeddings logged only
    uvicorn's access line (no id): a slow chat could not be followed to the embedding it waited on."""
    url, log = embeddings_server
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    # the runtime makes its encoder from the setting, as `pluralign serve` does (start_service passes one in)
    config = Settings(data_dir=str(tmp_path / "data"), generator=str(tiny_generator_dir), pal_dir=str(tiny_pal_dir), max_tokens=4,
                      encoder=f"openai:{url}/v1", encoder_model=MINILM_ID)
    runtime = Runtime.build(config, generator=tiny_generator(tiny_generator_dir))
    svc = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    with svc.server, svc.client("acme") as c:
        chat = c.post("/v1/chat/completions", headers={"X-Request-Id": "ops33-chat-1"},
                      json={"model": "pluralign", "user": "rae", "max_tokens": 4, "messages": [{"role": "user", "content": "Plan my weekend"}]})
        assert chat.status_code == 200, chat.text
    assert logged(log, "POST /v1/embeddings 200"), log.read_text()
    lines = [line for line in log.read_text().splitlines() if "request_id=ops33-chat-1" in line]
    assert lines and all("/v1/embeddings" in line for line in lines), log.read_text()[-2000:]


@pytest.mark.slow
def test_serve_embeddings_answers_with_the_callers_id(embeddings_server):
    import httpx

    url, log = embeddings_server
    # session 38: at start it says what it serves and where (before: nothing at all, its log level hid uvicorn's line)
    assert f"pluralign serve-embeddings: {MINILM_ID} (384 dimensions) at {url}/v1/embeddings\n" in log.read_text(), log.read_text()
    r = httpx.post(url + "/v1/embeddings", headers={"X-Request-Id": "ops33-direct"}, json={"model": MINILM_ID, "input": "hi"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "ops33-direct"
    assert logged(log, "POST /v1/embeddings 200") and logged(log, "request_id=ops33-direct"), log.read_text()[-2000:]


def test_the_remote_generator_sends_the_request_id_with_every_call():
    """Before: no header: vLLM's log could not be matched to the chat that asked."""
    from pluralign.policy.remote import RemoteGenerator, RemotePolicy
    from service.requestid import as_request, outgoing_headers

    seen: list[tuple[str, str | None]] = []

    class Recording(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            seen.append((self.path, self.headers.get("X-Request-Id")))
            if request.get("stream"):
                chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                           "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
                          {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}]
                body, kind = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n", "text/event-stream"
            elif "chat" in self.path:
                body, kind = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode(), "application/json"
            else:
                body, kind = b"{}", "application/json"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = RemoteGenerator(f"http://127.0.0.1:{server.server_port}/v1", "m", policy=RemotePolicy(timeout_s=5, max_retries=0),
                                 request_headers=outgoing_headers)
        with as_request("ops33-gen-1"):
            remote.load_adapter("u1", "/adapters/u1")
            remote.generate([{"role": "user", "content": "Hi"}], n=1)
            assert list(remote.stream([{"role": "user", "content": "Hi"}]))[-1].text == "Hi"
        remote.generate([{"role": "user", "content": "Hi"}])  # no request: no header
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("/v1/load_lora_adapter", "ops33-gen-1"), ("/v1/chat/completions", "ops33-gen-1"),
                    ("/v1/chat/completions", "ops33-gen-1"), ("/v1/chat/completions", None)], seen


def test_a_job_a_request_started_records_it_and_its_worker_names_it(serve):
    """Before: a job's record and its worker's log said nothing of the request that queued it."""
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("admin") as admin:
        # an audit of a tenant with no comparisons: its worker starts, names its cause, and fails at once
        r = admin.post("/admin/jobs", headers={"X-Request-Id": "ops33-job-1"},
                       json={"kind": "audit", "params": {"group_by": "segment", "tenant": "nobody-here"}})
        assert r.status_code == 201, r.text
        job = wait_job(admin, r.json()["id"])
    assert job["request_id"] == "ops33-job-1", job
    assert any(line == f"pluralign: job {job['id']} started by request request_id=ops33-job-1" for line in job["log_tail"]), job["log_tail"]
