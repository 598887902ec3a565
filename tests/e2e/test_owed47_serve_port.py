"""`ServeProcess` (tests/e2e/test_e2e_serve.py) and `serve_embeddings` (tests/processes.py) take a port no other
process can take from them between its choice and the bind, or talk only to their own child. A child stands in for `pluralign serve` here (`code`: a few lines of
http.server, no model, no store): what is tested is how the harness finds the child, in well under a second."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

import tests.e2e.test_e2e_serve as serve
import tests.service.tiny as tiny
from tests.e2e.test_e2e_serve import ServeProcess
from tests.service.tiny import free_port

# `serve --host 127.0.0.1 --port N` (or PORT=N), as ServeProcess runs it: answers /health naming itself
CHILD = """
import http.server, os, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1]) if "--port" in args else int(os.environ["PORT"])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"the child")
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


class Other(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"another process")

    def log_message(self, *args):
        pass


@pytest.fixture
def taken(monkeypatch) -> Iterator[int]:
    """A port another process (an xdist worker's server) took just after `free_port` found it free, answering /health
    200 as a served app would: `free_port` gives it first, then free ones, wherever the harness looks it up (tests.e2e's
    module bound it at import: patched in tests.service.tiny alone, a ServeProcess that chose its port the old way never
    met the taken one, and both cases passed on it)."""
    other = http.server.HTTPServer(("127.0.0.1", 0), Other)
    thread = threading.Thread(target=other.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = other.server_address[1]
    ports = iter([port])
    for module in (tiny, serve):
        monkeypatch.setattr(module, "free_port", lambda: next(ports, None) or free_port())
    yield port
    other.shutdown()
    other.server_close()


@pytest.mark.parametrize("port_from_env", [False, True], ids=["--port", "PORT"])
def test_serve_process_talks_to_its_own_child_when_another_takes_the_port_it_found(tmp_path, taken, port_from_env):
    """Until session 47 ServeProcess gave the child a port `free_port` had found free; another process that took it
    meanwhile made the child fail, and, answering /health itself, passed for the served app: the test went on against
    it. Now the child binds a port of its own (`--port 0`, read off its socket), or, given PORT (never 0), only the
    child's own socket counts and a start that found it taken is made again on another port."""
    proc = ServeProcess(tmp_path / "data", "no-generator", tmp_path / "pal", code=CHILD, port_from_env=port_from_env)
    try:
        assert proc.port != taken and proc.proc.poll() is None
        assert httpx.get(proc.url + "/health").text == "the child"
    finally:
        proc.stop()
