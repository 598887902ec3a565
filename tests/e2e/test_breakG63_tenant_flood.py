"""`pluralign serve` (a real process, the tiny generator) while tenant acme floods it within its own bounds: feedback
of texts at their 20,000 characters from many users as fast as four clients can send it, imports of a whole allowed
body (1 MB) of short rows, chats, and exports whose clients never read their answer. Meanwhile globex's chat, feedback,
profile and preferences reads are each answered (a 200 or a 201), and every one of them is counted while acme's
burst is still going (each of acme's clients is still sending, and acme's answered requests went on growing during
globex's rounds): no timing is asserted, only that globex's requests complete inside acme's burst. globex's
acknowledged feedback is then on its pages once; acme's refusals are its own bounds' (503 `feedback_backlog`, 429).

Slow: a service start with the generation process, and a burst of seconds; `make test-http`."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
from collections import Counter

import httpx
import pytest

from tests.e2e.test_crash39_kills import prompts
from tests.e2e.test_e2e_serve import ServeProcess

LONGEST = "\U0001f600" * 20_000  # the API's bound on a text, 4 bytes a character in UTF-8
ROUNDS = 6  # globex's rounds of chat, feedback, profile and preferences during acme's burst
ACME_OK = {200, 201, 429, 503}  # acme's own bounds refuse it (rate, generations, exports, its backlog): never another tenant's


class Burst:
    """acme's clients, each sending until `stop` is set; `answered` counts their answers by status."""

    def __init__(self, url: str, key: str):
        self.url, self.headers, self.stop = url, {"Authorization": f"Bearer {key}"}, threading.Event()
        self.lock, self.answered, self.n = threading.Lock(), Counter(), itertools.count()
        self.threads: list[threading.Thread] = []
        self.held: list[socket.socket] = []  # exports asked for and never read
        self.unexpected: list[str] = []  # answers outside ACME_OK

    def total(self) -> int:
        with self.lock:
            return sum(self.answered.values())

    def _loop(self, send) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=120) as c:
            while not self.stop.is_set():
                r = send(c, next(self.n))
                with self.lock:
                    self.answered[r.status_code] += 1
                    if r.status_code not in ACME_OK:
                        self.unexpected.append(f"{r.request.url.path} {r.status_code} {r.text[:300]}")

    def start(self) -> None:
        huge = lambda c, n: c.post("/v1/feedback", json={"type": "comparison", "user": f"flood{n % 500}", "prompt": f"{n} {LONGEST}"[:20_000],  # noqa: E731
                                                         "chosen": LONGEST, "rejected": LONGEST[1:] + "!"})
        rows = "".join(json.dumps({"prompt": f"Imported {i} of a flood?", "chosen": f"Yes {i}.", "rejected": f"No {i}."}) + "\n"
                       for i in range(8000)).encode()[:990_000].rsplit(b"\n", 1)[0] + b"\n"
        imported = lambda c, n: c.post(f"/v1/users/imp{n % 50}/import", content=rows, headers={"Content-Type": "application/x-ndjson"})  # noqa: E731
        chat = lambda c, n: c.post("/v1/chat/completions", json={"model": "pluralign", "user": f"flood{n % 500}",  # noqa: E731
                                                                 "messages": [{"role": "user", "content": f"Flood {n}?"}]})
        for send in (huge, huge, huge, huge, imported, chat, chat):
            self.threads.append(threading.Thread(target=self._loop, args=(send,), daemon=True))
        for t in self.threads:
            t.start()

    def hold_exports(self, host: str, port: int, n: int) -> None:
        """`n` exports of acme's user imp0 asked for on sockets never read (slow-reading clients)."""
        for _ in range(n):
            s = socket.create_connection((host, port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET /v1/users/imp0/export HTTP/1.1\r\nHost: x\r\nAuthorization: {self.headers['Authorization']}\r\n\r\n".encode())
            self.held.append(s)

    def going(self) -> bool:
        return all(t.is_alive() for t in self.threads) and not self.stop.is_set()

    def end(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)
        for s in self.held:
            s.close()


@pytest.mark.slow
def test_another_tenants_requests_are_all_answered_inside_one_tenants_flood(tmp_path, tiny_generator_dir, tiny_pal_dir):
    from service.auth import KeyRing

    data = tmp_path / "data"
    keys = KeyRing(data / "api_keys.json")
    acme_key, globex_key = keys.issue("acme"), keys.issue("globex")
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    burst = Burst(proc.url, acme_key)
    mine: list[str] = []
    try:
        with httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {globex_key}"}, timeout=300) as b:
            assert b.post("/v1/feedback", json={"type": "comparison", "user": "calm", "prompt": "First?", "chosen": "Y.", "rejected": "N."}).status_code == 201
            mine.append("First?")
            burst.start()
            while burst.total() < 20:  # the burst is under way: its clients have been answered
                assert burst.going(), burst.answered
                threading.Event().wait(0.05)
            burst.hold_exports("127.0.0.1", proc.port, 4)
            before = burst.total()
            for i in range(ROUNDS):
                r = b.post("/v1/chat/completions", json={"model": "pluralign", "user": "calm", "messages": [{"role": "user", "content": f"Tea {i}?"}]})
                assert r.status_code == 200, r.text
                r = b.post("/v1/feedback", json={"type": "comparison", "user": "calm", "prompt": f"Calm {i}?", "chosen": "Yes.", "rejected": "No."})
                assert r.status_code == 201, r.text
                mine.append(f"Calm {i}?")
                assert b.get("/v1/users/calm").status_code == 200
                assert b.get("/v1/users/calm/preferences").status_code == 200
            assert burst.going() and burst.total() > before, (burst.answered, before)  # all of it inside acme's burst
        burst.end()
        assert set(burst.answered) <= ACME_OK, (burst.answered, burst.unexpected[:5])
        with httpx.Client(base_url=proc.url, headers={"Authorization": f"Bearer {globex_key}"}, timeout=300) as b:
            reads = 0
            while sorted(prompts(b, "calm")[0]) != sorted(mine) and reads < 600:  # moved by the worker
                reads += 1
                threading.Event().wait(0.1)
            page, export = prompts(b, "calm")
            assert sorted(page) == sorted(mine) and sorted(export) == sorted(mine), (page, export)
    finally:
        burst.end()
        with contextlib.suppress(Exception):
            proc.stop()
