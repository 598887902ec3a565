"""Stub HTTP servers for the clients of OpenAI-compatible servers (vLLM's answers, `pluralign.policy.remote`): a handler
base that answers JSON in one call, and a handler class served on loopback in threads of the test process. Standard
library only: `tests.vllm_like` runs on it in a process of its own (`python -S`)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler whose answers are JSON (`answer`), reading JSON bodies (`read_json`), logging nothing."""

    status = 0  # the last answer's status (for the line a server says of it)

    def read_json(self):
        """The request's body, read whole (its Content-Length) and parsed."""
        return json.loads(self.rfile.read(int(self.headers["content-length"])) or b"null")

    def answer(self, status: int, body) -> None:
        """`body` as the JSON answer with `status`, its length said (the client reads no more than that)."""
        payload = json.dumps(body).encode()
        self.status = status
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def served(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on 127.0.0.1 at a port of the system's choosing, each request in a daemon thread; yields the
    server's root URL (`http://127.0.0.1:PORT`; an OpenAI client's base URL is it and `/v1`). After: shut down (its loop
    polls every 0.05 s: a quick shutdown) and its socket closed; requests still held (a hung handler) are left to end
    with the process."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
