"""A process that gave up on a prompt count (`RemoteGenerator.prompt_counter`: vLLM's `POST /tokenize`, at the 1 s floor
bound) exits when it is done, whatever the server still sends (review of session counts53). Slow-marked (a Python
process of its own, torch imported: ~5-10 s on two shared cores); `make test-generation` runs it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

# a server whose /tokenize answers 500 at once and sends its body a byte every 0.3 s (~20 s in all), then a count of
# its, given up on at 1 s; the script ends there
SCRIPT = r"""
import threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pluralign.policy.remote import RemoteGenerator, RemotePolicy

class Dribbling(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"object": "error", "message": "the tokenizer failed", "type": "InternalServerError", "code": 500}'
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for i in range(len(body)):
            time.sleep(0.3)
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()

server = ThreadingHTTPServer(("127.0.0.1", 0), Dribbling)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
remote = RemoteGenerator(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", policy=RemotePolicy(timeout_s=1, max_retries=0))
try:
    remote.prompt_tokens([{"role": "user", "content": "hello"}])
except Exception as exc:
    print(type(exc).__name__, flush=True)
"""


@pytest.mark.slow
def test_a_process_exits_without_waiting_for_a_count_it_gave_up_on():
    """Session counts53 ran a chat's counts on a ThreadPoolExecutor's threads, which Python joins at exit: a process
    (the service stopping, a CLI command) whose count was given up on at 1 s waited at its exit for the server's last
    byte (here a 5xx's body a byte every 0.3 s, which the client reads whole, bounded per read only: ~20 s after). Now a
    count's threads are daemons, as remote53's event loop thread was: the process ends at once."""
    with subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True) as child:
        said = child.stdout.readline().strip()
        gave_up = time.monotonic()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            child.kill()
        exited_after = time.monotonic() - gave_up
    assert said == "PromptNotCounted", said
    assert exited_after < 3.0, round(exited_after, 2)  # before: ~20 s (the body's last byte), past 15 s: killed
