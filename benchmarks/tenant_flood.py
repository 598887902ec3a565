"""Does one tenant's flood of allowed work stall another tenant? Tenant B's ordinary requests over HTTP, alone and while
tenant A floods every kind of allowed work at once, in alternating blocks of the same run.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/tenant_flood.py                     # tests' tiny models
    python benchmarks/tenant_flood.py --blocks 3 --seconds 20 --only chats,sse-never,pools   # some of A's loads

`pluralign serve` (its own process, the tests' tiny Llama and tiny PAL, MiniLM, default settings but for those
named in `--env`) on a fresh data folder. Tenant B (globex) has one user with a few comparisons; tenant A (acme)
one user with `--big-rows` comparisons (imported in allowed chunks, not timed). Each block: quiet (A sends
nothing, its requests still in flight finished first), then A flooding with its loads (`--only`, all by default):

- chats: 4 threads of non-streaming chats, n=4, 2 of them with prompts of 13,500 characters (a 20,000-character one is past the tiny model's context: a 400);
- streams: 2 threads of streaming chats, n=4, read as they come;
- sse-slow: 4 connections each asking a streaming chat, then reading one byte a second;
- sse-never: 4 connections each asking a streaming chat and reading nothing, a new one every block;
- slowloris: 8 connections sending a feedback body a byte a second (each cut by the read timeout, sent again);
- pools: 2 threads of next-comparison with the largest documented pool (32 prompts x 2 answers, 64 in all,
  fresh texts each time, so every one is embedded);
- imports: 1 thread importing 500 rows (the most a request takes) to new users of A's;
- exports: 2 threads exporting A's big user;
- jobs: the admin queues an audit of A's tenant every 2 s;
- maxgen: 2 threads of chats at the largest `n` (8) and `max_tokens` (1,024);
- deletes: 4 threads each sending a feedback to a new user of A's and deleting that user (a DELETE storm);
- retractions: 2 threads each sending a feedback and taking its row back (a retraction storm);
- ids: 2 threads of feedback and profile reads for users with pathological ids (long, combining marks, astral
  characters, regex-like, bidi controls);
- histories: 2 threads reading the profiles of 4 users of A's with `--big-rows` comparisons each, in turn (their
  histories pass a small `PLURALIGN_HISTORY_CACHE_MB`, given with `--env`; B's user holds `--b-rows` comparisons).

B (one thread, one request after another): a chat (`max_tokens` 4), a comparison feedback, its user's profile.
Prints, per kind of B's request, n, failures, median and p95 (ms) quiet and with A flooding, and what A was answered;
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import start_serve  # noqa: E402

LOADS = ("chats", "streams", "sse-slow", "sse-never", "slowloris", "pools", "imports", "exports", "jobs",
         "maxgen", "deletes", "retractions", "ids", "histories")
HISTORY_USERS = 4  # A's users the histories load reads in turn, `--big-rows` comparisons each
# ids a hostile tenant names its users by: the longest and oddest the rule takes (USER_ID), and ones it refuses (too long,
# combining marks, astral characters, regex-like, an encoded `..`, a bidi control)
ODD_IDS = ("a" * 128, "a" + "." * 127, "0" + "@:+-" * 31 + "._x", "a" * 256, "\u0301" * 200, "\U0001d518" * 100,
           "(a+)+$" * 40, "%2e%2e", "\u202e" + "x" * 100)
CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "Suggest a weekend plan."}], "max_tokens": 4}


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def models(work: Path) -> tuple[Path, Path]:
    import torch

    from pluralign.embed.encoders import SentenceEncoder
    from tests.service.tiny import save_tiny_generator, train_tiny_pal

    torch.set_num_threads(1)
    return save_tiny_generator(work / "gen"), train_tiny_pal(work / "pal", SentenceEncoder())


def rows(n: int, tag: str) -> bytes:
    return b"".join(json.dumps({"prompt": f"Question {tag} {i}: which breakfast would you choose on a cold morning?",
                                "chosen": f"Porridge with apples and cinnamon, {tag} {i}.",
                                "rejected": f"Nothing at all, {tag} {i}."}).encode() + b"\n" for i in range(n))


class Flood:
    """A's loads, each a thread looping while `on` is set, until `stop`."""

    def __init__(self, url: str, port: int, keys: dict[str, str], loads: set[str]):
        self.url, self.port, self.keys, self.loads = url, port, keys, loads
        self.on, self.stop = threading.Event(), threading.Event()
        self.codes: dict[str, Counter] = defaultdict(Counter)
        self.in_flight = 0
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def client(self, who: str = "a", timeout: float = 600) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=timeout)

    def note(self, kind: str, code) -> None:
        with self.lock:
            self.codes[kind][code] += 1

    def loop(self, kind: str, step) -> threading.Thread:
        def run() -> None:
            state: dict = {}
            while not self.stop.is_set():
                if not self.on.wait(0.1):
                    continue
                with self.lock:
                    self.in_flight += 1
                try:
                    code = step(state)
                except Exception as exc:  # noqa: BLE001 - a benchmark counts what happened
                    code = type(exc).__name__
                finally:
                    with self.lock:
                        self.in_flight -= 1
                self.note(kind, code)
                if code == 429:
                    time.sleep(0.5)
        thread = threading.Thread(target=run, daemon=True, name=kind)
        self.threads.append(thread)
        return thread

    def start(self) -> None:
        n = 0
        for i in range(4 if "chats" in self.loads else 0):
            long = i % 2 == 1
            with_c = self.client()

            def chat(state, c=with_c, long=long):
                content = "Tell me everything about the history of tea. " * (300 if long else 1)  # 13,500 characters: ~3,000 tokens, within the tiny model's context
                return c.post("/v1/chat/completions", json={**CHAT, "n": 4, "max_tokens": 16, "user": f"flood{n}",
                                                            "messages": [{"role": "user", "content": content}]}).status_code
            self.loop("chats", chat)
        for _ in range(2 if "streams" in self.loads else 0):
            with_c = self.client()

            def stream(state, c=with_c):
                with c.stream("POST", "/v1/chat/completions", json={**CHAT, "n": 4, "max_tokens": 16, "stream": True}) as r:
                    for _ in r.iter_bytes():
                        pass
                    return r.status_code
            self.loop("streams", stream)
        for kind in ("sse-slow", "sse-never"):
            for _ in range(4 if kind in self.loads else 0):
                self.loop(kind, lambda state, kind=kind: self.raw_stream(kind))
        for _ in range(8 if "slowloris" in self.loads else 0):
            self.loop("slowloris", lambda state: self.slowloris())
        for _ in range(2 if "pools" in self.loads else 0):
            with_c = self.client()

            def pool(state, c=with_c):
                tag = uuid.uuid4().hex[:8]
                prompts = [{"prompt": f"Prompt {tag} {i}: what should I read next?",
                            "answers": [f"A novel about the sea, {tag} {i}.", f"A history of bridges, {tag} {i}."]} for i in range(32)]
                return c.post(f"/v1/users/pooler{tag}/next-comparison", json={"pool": prompts}).status_code
            self.loop("pools", pool)
        if "imports" in self.loads:
            with_c = self.client()

            def do_import(state, c=with_c):
                tag = uuid.uuid4().hex[:8]
                return c.post(f"/v1/users/imp{tag}/import", content=rows(500, tag),
                              headers={"Content-Type": "application/x-ndjson"}).status_code
            self.loop("imports", do_import)
        for _ in range(2 if "exports" in self.loads else 0):
            with_c = self.client()

            def export(state, c=with_c):
                with c.stream("GET", "/v1/users/big/export") as r:
                    for _ in r.iter_bytes():
                        pass
                    return r.status_code
            self.loop("exports", export)
        if "jobs" in self.loads:
            with_c = self.client("admin")

            def job(state, c=with_c):
                r = c.post("/admin/jobs", json={"kind": "audit", "params": {"tenant": "acme", "group_by": "segment",
                                                                            "min_group_size": 1, "min_comparisons": 1}})
                time.sleep(2)
                return r.status_code
            self.loop("jobs", job)
        self.start_more()
        for thread in self.threads:
            thread.start()

    def start_more(self) -> None:
        """The loads of session tenant56: the largest chats, DELETE and retraction storms, pathological user ids."""
        from urllib.parse import quote

        for _ in range(2 if "maxgen" in self.loads else 0):
            with_c = self.client()

            def maxgen(state, c=with_c):
                return c.post("/v1/chat/completions", json={**CHAT, "n": 8, "max_tokens": 1024, "user": "maxgen"}).status_code
            self.loop("maxgen", maxgen)
        for _ in range(4 if "deletes" in self.loads else 0):
            with_c = self.client()

            def delete(state, c=with_c):
                user = f"del{uuid.uuid4().hex[:8]}"
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
                if r.status_code != 201:
                    return r.status_code
                return c.delete(f"/v1/users/{user}").status_code
            self.loop("deletes", delete)
        for _ in range(2 if "retractions" in self.loads else 0):
            with_c = self.client()

            def retract(state, c=with_c):
                tag = uuid.uuid4().hex[:8]
                r = c.post("/v1/feedback", json={"type": "comparison", "user": "retractor", "prompt": f"Tea {tag}?",
                                                 "chosen": "Yes.", "rejected": "No."})
                if r.status_code != 201:
                    return r.status_code
                pref = quote(r.json()["stored"][0], safe="")
                return c.delete(f"/v1/users/retractor/preferences/{pref}").status_code
            self.loop("retractions", retract)
        for _ in range(2 if "ids" in self.loads else 0):
            with_c = self.client()

            def odd(state, c=with_c):
                user = ODD_IDS[state.setdefault("i", 0) % len(ODD_IDS)]
                state["i"] += 1
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
                if r.status_code != 201:
                    return f"feedback {r.status_code}"
                return f"profile {c.get(f'/v1/users/{quote(user, safe=chr(64))}').status_code}"
            self.loop("ids", odd)
        for t in range(2 if "histories" in self.loads else 0):
            with_c = self.client()

            def history(state, c=with_c, t=t):
                state["i"] = state.get("i", t) + 1
                return c.get(f"/v1/users/hist{state['i'] % HISTORY_USERS}").status_code
            self.loop("histories", history)

    def raw_stream(self, kind: str) -> str:
        body = json.dumps({**CHAT, "n": 4, "max_tokens": 64, "stream": True}).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.keys['a']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.sendall(head + body)
            got = b""
            while self.on.is_set() and not self.stop.is_set():
                if kind == "sse-slow":
                    s.settimeout(2)
                    try:
                        byte = s.recv(1)
                    except TimeoutError:
                        continue
                    if not byte:
                        break
                    got += byte
                time.sleep(1)
            return got[9:12].decode() or "unread"

    def slowloris(self) -> str:
        body = json.dumps({"type": "comparison", "user": "loris", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}).encode()
        head = (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.keys['a']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(head)
            for byte in body:
                if not self.on.is_set() or self.stop.is_set():
                    return "stopped"
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(1)
            s.settimeout(5)
            try:
                return s.recv(64)[9:12].decode() or "closed"
            except OSError as exc:
                return type(exc).__name__


def b_round(b: httpx.Client, times: dict[str, list[float]], fails: Counter, i: int) -> None:
    """One round of B's: a chat, a feedback, a profile read, each timed into `times[kind]` (ms); B's chat's time in the
    generation queue into `times["chat queue"]`; a failure (not 2xx, or no answer within B's timeout) counted in `fails`."""
    steps = {
        "chat": lambda: b.post("/v1/chat/completions", json={**CHAT, "user": "bea"}),
        "feedback": lambda: b.post("/v1/feedback", json={"type": "comparison", "user": "bea", "prompt": f"Coffee or tea {i}?",
                                                         "chosen": "Tea, please.", "rejected": "Coffee."}),
        "profile": lambda: b.get("/v1/users/bea"),
    }
    for kind, send in steps.items():
        start = time.perf_counter()
        try:
            r = send()
            ok = r.status_code in (200, 201, 202)
            if not ok:
                fails[f"{kind} {r.status_code} {r.text[:120]}"] += 1
            elif kind == "chat":
                times["chat queue"].append(r.json()["pluralign"]["timings"]["queue_ms"])
        except httpx.HTTPError as exc:
            ok = False
            fails[f"{kind} {type(exc).__name__}"] += 1
        times[kind].append((time.perf_counter() - start) * 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--seconds", type=float, default=20, help="each half-block's length")
    p.add_argument("--only", default=",".join(LOADS), help=f"A's loads, of {','.join(LOADS)}")
    p.add_argument("--big-rows", type=int, default=2000, help="A's big user's comparisons (exported)")
    p.add_argument("--b-rows", type=int, default=0, help="B's user's comparisons imported before the blocks (not timed)")
    p.add_argument("--b-timeout", type=float, default=30, help="B's client timeout (s): a longer wait is a failure")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    p.add_argument("--code", type=Path, default=ROOT, help="the checkout to serve")
    args = p.parse_args()
    loads = set(filter(None, args.only.split(",")))
    work = Path(tempfile.mkdtemp(prefix="tenant-flood-"))
    gen, pal = models(work)
    data = work / "data"
    data.mkdir()
    from service.auth import KeyRing

    ring = KeyRing(data / "api_keys.json")
    keys = {"a": ring.issue("acme"), "b": ring.issue("globex"), "admin": ring.issue("ops", admin=True)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PLURALIGN_GENERATOR": str(gen), "PLURALIGN_PAL_DIR": str(pal), "PLURALIGN_CACHE_DIR": str(work / "cache"),
           "PLURALIGN_TENANT_REQUESTS_PER_SECOND": "200", **dict(e.split("=", 1) for e in args.env)}
    proc = start_serve(data, port, env, args.code)
    url = f"http://127.0.0.1:{port}"
    flood = Flood(url, port, keys, loads)
    try:
        b = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['b']}"}, timeout=args.b_timeout)
        with flood.client() as a, flood.client("b") as b_setup:  # untimed: a read embeds up to 500 rows still waiting itself
            for user in ["big", *(f"hist{i}" for i in range(HISTORY_USERS if "histories" in loads else 0))]:
                for chunk in range(args.big_rows // 500):
                    r = a.post(f"/v1/users/{user}/import", content=rows(500, f"{user}{chunk}"), headers={"Content-Type": "application/x-ndjson"})
                    assert r.status_code in (200, 201), r.text
            for chunk in range(args.b_rows // 500):
                r = b_setup.post("/v1/users/bea/import", content=rows(500, f"bea{chunk}"), headers={"Content-Type": "application/x-ndjson"})
                assert r.status_code in (200, 201), r.text
            while a.head("/v1/users/big/export").status_code == 503 or b_setup.head("/v1/users/bea/export").status_code == 503:
                time.sleep(1)  # their rows still being stored
        warm: dict[str, list[float]] = defaultdict(list)
        for i in range(3):
            b_round(b, warm, Counter(), i)
        flood.start()
        times = {"quiet": defaultdict(list), "flood": defaultdict(list)}
        fails = {"quiet": Counter(), "flood": Counter()}
        i = 0
        for block in range(args.blocks):
            for phase in ("quiet", "flood"):
                if phase == "flood":
                    flood.on.set()
                    time.sleep(3)  # A's loads have begun
                else:
                    flood.on.clear()
                    while flood.in_flight:
                        time.sleep(0.05)
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    i += 1
                    b_round(b, times[phase], fails[phase], i)
                print(f"block {block} {phase}: {sum(len(v) for v in times[phase].values())} B requests so far", flush=True)
        flood.on.clear()
        flood.stop.set()
        for t in flood.threads:
            t.join(120)
        result = {"loads": sorted(loads), "a": {k: dict(v) for k, v in flood.codes.items()},
                  "fails": {k: dict(v) for k, v in fails.items()}, "b": {}}
        print(f"{'B request':10} {'n q/f':>9} {'median quiet':>13} {'median flood':>13} {'p95 quiet':>10} {'p95 flood':>10}")
        for kind in ("chat", "chat queue", "feedback", "profile"):
            q, f = times["quiet"][kind], times["flood"][kind]
            row = {"n": [len(q), len(f)], "median_ms": [percentile(q, 0.5), percentile(f, 0.5)],
                   "p95_ms": [percentile(q, 0.95), percentile(f, 0.95)], "max_ms": [max(q, default=float("nan")), max(f, default=float("nan"))]}
            result["b"][kind] = row
            print(f"{kind:10.10} {len(q):>4}/{len(f):<4} {row['median_ms'][0]:>13.1f} {row['median_ms'][1]:>13.1f} "
                  f"{row['p95_ms'][0]:>10.1f} {row['p95_ms'][1]:>10.1f}")
        print("B failures:", dict(fails["quiet"]), dict(fails["flood"]))
        print("A answered:", {k: dict(v) for k, v in flood.codes.items()})
        print(json.dumps(result))
    finally:
        flood.stop.set()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # its stop waits for a feedback batch or a job under way: said in its log
            proc.kill()
        print("serve log:", work / "serve.log")


if __name__ == "__main__":
    main()
