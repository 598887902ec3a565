"""A remote generator's adapter drop waits for its requests using the adapter (session pool48), as the local
generators' do: a DELETE or a promotion racing a stream never has the server unload the adapter under it. The server
is a few lines of `http.server` on loopback speaking SSE, which, as a server may, aborts the streams of an adapter it
unloads; each stream is held after its first chunk until the test lets it go."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pluralign.policy.generator import Candidate, Sampling
from pluralign.policy.remote import RemoteGenerator, RemotePolicy

MESSAGES = [{"role": "user", "content": "Hi"}]


class _Server(BaseHTTPRequestHandler):
    unloaded: list[str]
    go: threading.Event

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path.endswith("/unload_lora_adapter"):
            self.unloaded.append(body["lora_name"])
        if not self.path.endswith("/chat/completions"):
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        for i, piece in enumerate(["Hello", " world."]):
            if i == 1:
                self.go.wait(60)
                if body["model"] in self.unloaded:  # its adapter unloaded meanwhile: the request is aborted
                    self.close_connection = True
                    return
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Server,), {"unloaded": [], "go": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    handler.go.set()
    httpd.shutdown()
    httpd.server_close()


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 60  # a safety net against a hang, not a timing assertion
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


def test_a_remote_adapters_drop_waits_for_the_stream_using_it(server):
    """Before (pool48) `RemoteGenerator.drop_adapter` unloaded at once (and, tracking no generations, the adapter pool
    dropped it under its lock): a user's DELETE during their streamed chat had the server unload the adapter the stream
    ran with, and a server that aborts those requests cut the stream (RemoteGeneratorError: an error event). Now it
    says which adapters its requests use (`adapters_in_use`), and a drop waits for them to end; a request for the
    adapter that comes meanwhile waits behind the drop, then finds it gone (AdapterNotLoaded: the service asks the
    pool again)."""
    from pluralign.policy.generator import AdapterNotLoaded

    url, handler = server
    remote = RemoteGenerator(url, "m", policy=RemotePolicy(max_retries=0))
    remote.load_adapter("u", "/adapters/u")
    pieces = remote.stream(MESSAGES, Sampling(max_tokens=2), adapter="u")
    assert next(pieces) == "Hello"
    assert getattr(remote, "adapters_in_use", None) == {"u"}
    drop = threading.Thread(target=remote.drop_adapter, args=("u",), daemon=True)
    drop.start()
    waits = lambda: remote._use._dropping["u"] if hasattr(remote, "_use") else False  # noqa: E731
    wait_until(lambda: handler.unloaded or waits(), "the drop reached the server, or waits for the stream")
    late: list = []
    later = threading.Thread(target=lambda: late.append(pytest.raises(AdapterNotLoaded, remote.generate, MESSAGES,
                                                                          adapter="u")), daemon=True)
    later.start()
    handler.go.set()
    *rest, final = list(pieces)
    assert isinstance(final, Candidate) and "".join(["Hello", *rest]) == final.text == "Hello world."
    drop.join(60)
    later.join(60)
    assert handler.unloaded == [remote.served_name("u", "/adapters/u")] and remote.adapters == set() and remote.adapters_in_use == set() and late
