"""Prompt counts given up on, and their threads left behind, against a generation server that sends each `/tokenize`
answer's status line and headers a byte at a time; checkouts side by side.

    git archive 25b2e829 | tar -x -C /tmp/before
    python benchmarks/counts_left_behind.py --checkout /tmp/before --checkout . --every-s 0.2

For each checkout, in a process of its own: a server in that process (http.server, a thread a request) answering each
`POST /tokenize` 200 with `{"count": 5}`, its whole answer a byte every `--every-s` seconds (~100 bytes: ~2 s at 0.02),
and one `RemoteGenerator` (`RemotePolicy(timeout_s=--timeout-s, max_retries=0)`: the counts' bound); `--rate` chats a
second for `--seconds`, each on a thread of its own asking one count (`prompt_tokens`: PromptNotCounted at the bound).
A row: the chats, how many were not counted, the most count threads (named `tokenize`) alive at once, those alive as
the last chat gave up, and the seconds from then until none was.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def measure(root: str, rate: float, seconds: float, every_s: float, timeout_s: float) -> dict:
    sys.path.insert(0, root)
    from pluralign.policy.remote import RemoteGenerator, RemotePolicy

    class Dribbling(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            body = b'{"count": 5}'
            answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                      % len(body)) + body
            try:
                for i in range(len(answer)):
                    time.sleep(every_s)
                    self.wfile.write(answer[i : i + 1])
                    self.wfile.flush()
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Dribbling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    remote = RemoteGenerator(f"http://127.0.0.1:{server.server_port}/v1", "m", policy=RemotePolicy(timeout_s=timeout_s, max_retries=0))
    failed: list[Exception] = []

    def chat() -> None:
        try:
            remote.prompt_tokens([{"role": "user", "content": "hello"}])
        except Exception as exc:
            failed.append(exc)

    def counting() -> int:
        return sum(t.name == "tokenize" for t in threading.enumerate())

    chats, most = [], 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        thread = threading.Thread(target=chat)
        thread.start()
        chats.append(thread)
        most = max(most, counting())
        time.sleep(1 / rate)
    for thread in chats:
        thread.join()
    gave_up = time.monotonic()
    at_last = counting()
    while counting() and time.monotonic() - gave_up < 60:
        time.sleep(0.01)
    return {"chats": len(chats), "not_counted": len(failed), "most_count_threads": most, "count_threads_at_last_chat": at_last,
            "seconds_until_none": round(time.monotonic() - gave_up, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", help="a checkout's root (repeat to compare; default: this one)")
    parser.add_argument("--rate", type=float, default=20, help="chats a second")
    parser.add_argument("--seconds", type=float, default=5, help="for this long")
    parser.add_argument("--every-s", type=float, default=0.02, help="the server's pace, seconds a byte")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="the generator's timeout_s (1: the counts' 1 s bound)")
    parser.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rate, args.seconds, args.every_s, args.timeout_s)))
        return
    for checkout in args.checkout or [str(Path(__file__).resolve().parents[1])]:
        child = [sys.executable, __file__, "--child", str(Path(checkout).resolve()), "--rate", str(args.rate), "--seconds",
                 str(args.seconds), "--every-s", str(args.every_s), "--timeout-s", str(args.timeout_s)]
        done = subprocess.run(child, capture_output=True, text=True, check=True,
                              env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
        print(checkout, done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
