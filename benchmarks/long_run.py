"""A week of uptime, compressed: one `pluralign serve` taking mixed traffic for many rounds, and what
grows or gets slower as requests pile up.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/long_run.py                 # ~3-5 min on 2 cores
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/long_run.py --rounds 400 --every 40 --users 4000

A fresh data folder, a tiny random Llama (SmolLM2's tokenizer, 2 layers of width 32: generation is
not the cost), MiniLM, a PAL checkpoint trained on a small persona population, and the service on
127.0.0.1 with the per-tenant rate limit off. Each round, from `--clients` keep-alive clients:
chats of distinct users (new ones and returning ones, `--users` over the run), a choice feedback on
a served answer and comparison feedback, GETs of users' profiles, /metrics scrapes; every
`--delete-every` rounds an export and a DELETE of a user; and, each round, requests that fail
validation and streams whose client hangs up after the first chunk.

Every `--every` rounds one line: the server's RSS (with its generator child), open file
descriptors, threads, per table of the data folder its files (versions, data fragments, deletion
files) and bytes, the feedback log's segments, the /metrics body's series, and the median and p99
latency of chat, feedback, GET user and /metrics over that window. The last line is one JSON object:
the first and the last window's figures and their ratios (last / first).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import start_serve  # noqa: E402
from service.auth import KeyRing  # noqa: E402

KINDS = ("chat", "feedback", "user", "metrics")


def start(data: Path, port: int, env: dict, code: Path = ROOT) -> subprocess.Popen:
    """`pluralign serve` of the checkout at `code` (another one's: a before/after side by side)."""
    return start_serve(data, port, env, code)


def proc_figures(pid: int) -> dict:
    """RSS of the server and of its children (the generator's process), its fds and threads."""
    import psutil

    p = psutil.Process(pid)
    rss, child = p.memory_info().rss, sum(c.memory_info().rss for c in p.children(recursive=True) if c.is_running())
    return {"rss_mb": round(rss / 2**20, 1), "child_rss_mb": round(child / 2**20, 1), "fds": p.num_fds(), "threads": p.num_threads(),
            "child_fds": sum(c.num_fds() for c in p.children(recursive=True))}


def folder_figures(data: Path) -> dict:
    """Per LanceDB table: files under _versions, data, _deletions, _indices and bytes; the feedback log's segments."""
    out: dict = {}
    lance = data / "lancedb"
    for table in sorted(lance.glob("*.lance")) if lance.is_dir() else []:
        def count(sub: str, table: Path = table) -> int:
            return sum(1 for p in (table / sub).rglob("*") if p.is_file()) if (table / sub).is_dir() else 0
        size = sum(p.stat().st_size for p in table.rglob("*") if p.is_file())
        out[table.stem] = {"versions": count("_versions"), "fragments": count("data"), "deletions": count("_deletions"),
                           "indices": count("_indices"), "mb": round(size / 2**20, 2)}
    log = data / "feedback-log"
    out["feedback_log_segments"] = sum(1 for _ in log.glob("*.log")) if log.is_dir() else 0
    out["data_files"] = sum(1 for p in data.rglob("*") if p.is_file())
    return out


def quantiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    values = sorted(values)
    return statistics.median(values) * 1000, values[min(len(values) - 1, int(0.99 * len(values)))] * 1000


class Load:
    """The traffic: latencies of the current window by kind, and errors (unexpected statuses)."""

    def __init__(self, url: str, key: str, users: int, seed: int, new_share: float, invalid: int = 1):
        self.url, self.key, self.users, self.new_share, self.invalid = url, key, users, new_share, invalid
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.window: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: list[str] = []
        self.next_user = 0
        self.deleted: set[str] = set()
        self.served: list[tuple[str, str, int]] = []  # (user, response id, choices)
        self.counts = {"requests": 0, "invalid": 0, "disconnects": 0, "deletes": 0, "exports": 0, "streams_refused": 0}

    def user(self, new: bool) -> str:
        with self.lock:
            if new or self.next_user == 0:
                if self.next_user < self.users:
                    self.next_user += 1
                    return f"u{self.next_user - 1:05d}"
            return f"u{self.rng.randrange(self.next_user):05d}"

    def timed(self, kind: str | None, call, want=(200, 201)) -> httpx.Response | None:
        began = time.perf_counter()
        try:
            r = call()
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(f"{kind}: {type(exc).__name__}")
            return None
        took = time.perf_counter() - began
        with self.lock:
            self.counts["requests"] += 1
            if kind:
                self.window[kind].append(took)
            if r.status_code not in want:
                self.errors.append(f"{kind}: {r.status_code} {r.text[:120]}")
        return r

    def client_round(self, c: httpx.Client, chats: int) -> None:
        for _ in range(chats):
            user = self.user(new=self.rng.random() < self.new_share)
            body = {"model": "pluralign", "user": user, "n": 2, "max_tokens": 6, "seed": self.rng.randrange(1 << 30),
                    "messages": [{"role": "user", "content": f"What should {user} cook tonight, idea {self.rng.randrange(1000)}?"}]}
            r = self.timed("chat", lambda body=body: c.post("/v1/chat/completions", json=body), want=(200, 404))
            if r is not None and r.status_code == 200 and len(r.json()["choices"]) >= 2:
                fb = {"type": "choice", "response_id": r.json()["id"], "chosen_index": self.rng.randrange(2)}
                self.timed("feedback", lambda fb=fb: c.post("/v1/feedback", json=fb), want=(201, 404))
            i = self.rng.randrange(1 << 30)
            fb = {"type": "comparison", "user": user, "prompt": f"Which answer about topic {i} is better?",
                  "chosen": f"A short answer, number {i}.", "rejected": f"A much longer and wordier answer, number {i}!"}
            self.timed("feedback", lambda fb=fb: c.post("/v1/feedback", json=fb), want=(201,))
            other = self.user(new=False)
            self.timed("user", lambda other=other: c.get(f"/v1/users/{other}"), want=(200, 404))
        self.timed("metrics", lambda: c.get("/metrics"), want=(200,))
        # requests that fail validation: each must be a 4xx and leave nothing behind
        for bad in self.invalid * ({"model": "pluralign", "n": "3", "messages": [{"role": "user", "content": "hi"}]},
                                   {"model": "pluralign", "user": "x" * 300, "messages": []}):
            self.timed(None, lambda bad=bad: c.post("/v1/chat/completions", json=bad), want=(400, 422))
        for _ in range(self.invalid):
            self.timed(None, lambda: c.post("/v1/feedback", json={"type": "comparison", "user": "v", "prompt": "p", "chosen": "s", "rejected": "s"}),
                       want=(400, 422))
        with self.lock:
            self.counts["invalid"] += 3 * self.invalid

    def disconnect(self) -> None:
        """A streamed chat whose client hangs up after the first chunk (a new connection each time)."""
        user = self.user(new=False)
        body = {"model": "pluralign", "user": user, "stream": True, "max_tokens": 32,
                "messages": [{"role": "user", "content": "Tell me a long story."}]}
        try:
            with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as c:
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:  # 429 when the tenant's generation slots are full: not a disconnect mid-stream
                        with self.lock:
                            self.counts["streams_refused"] += 1
                        return
                    for _ in r.iter_raw():
                        break
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(f"disconnect: {type(exc).__name__}")
        with self.lock:
            self.counts["disconnects"] += 1

    def export_and_delete(self, c: httpx.Client) -> None:
        user = self.user(new=False)
        if user in self.deleted:
            return
        self.timed(None, lambda: c.get(f"/v1/users/{user}/export"), want=(200, 404))
        self.timed(None, lambda: c.delete(f"/v1/users/{user}"), want=(200, 404))
        with self.lock:
            self.deleted.add(user)
            self.counts["deletes"] += 1
            self.counts["exports"] += 1

    def take_window(self) -> dict:
        with self.lock:
            window, self.window = self.window, {k: [] for k in KINDS}
        out = {}
        for kind, values in window.items():
            p50, p99 = quantiles(values)
            out[kind] = {"n": len(values), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
        return out


def metric_series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--every", type=int, default=10, help="rounds per printed window")
    parser.add_argument("--users", type=int, default=1000, help="distinct users over the run (the rest of the chats: returning users)")
    parser.add_argument("--clients", type=int, default=4, help="keep-alive clients, each a thread")
    parser.add_argument("--chats", type=int, default=3, help="chats per client per round (each with its feedback and a GET)")
    parser.add_argument("--disconnects", type=int, default=2, help="streams hung up after their first chunk, per round")
    parser.add_argument("--invalid", type=int, default=1, help="sets of 3 requests failing validation, per client per round")
    parser.add_argument("--delete-every", type=int, default=2, help="rounds between an export + DELETE")
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--data", default=None, help="the data folder (default: a fresh temp folder)")
    parser.add_argument("--serve-from", default=str(ROOT), help="the checkout whose `pluralign serve` runs (default: this one)")
    parser.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the server (repeatable)")
    args = parser.parse_args()

    from pluralign.embed.encoders import SentenceEncoder
    from tests.service.tiny import save_tiny_generator, train_tiny_pal

    work = Path(args.data).parent if args.data else Path(tempfile.mkdtemp(prefix="pluralign-long-"))
    data = Path(args.data) if args.data else work / "data"
    data.mkdir(parents=True, exist_ok=True)
    generator = save_tiny_generator(work / "tiny-llama") if not (work / "tiny-llama" / "config.json").exists() else work / "tiny-llama"
    pal = work / "pal"
    if not (pal / "meta.json").exists():
        train_tiny_pal(pal, SentenceEncoder())
    key = KeyRing(data / "api_keys.json").issue("default", name="long-run")
    # 16 generations of the tenant at once: the clients' chats and the streams hung up on are served, not 429
    env = {"PLURALIGN_GENERATOR": str(generator), "PLURALIGN_PAL_DIR": str(pal), "PLURALIGN_CANDIDATES": "2", "PLURALIGN_TENANT_GENERATIONS": "16",
           **dict(e.split("=", 1) for e in args.env)}
    proc = start(data, args.port, env, Path(args.serve_from))
    url = f"http://127.0.0.1:{args.port}"
    chats = args.rounds * args.clients * args.chats
    load = Load(url, key, args.users, seed=0, new_share=min(0.8, args.users / max(1, chats)), invalid=args.invalid)
    clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) for _ in range(args.clients)]
    windows: list[dict] = []
    began = time.perf_counter()
    print(f"server pid {proc.pid}, data {data}, {args.rounds} rounds of {args.clients} clients x {args.chats} chats", flush=True)
    try:
        for rnd in range(1, args.rounds + 1):
            threads = [threading.Thread(target=load.client_round, args=(c, args.chats)) for c in clients]
            threads += [threading.Thread(target=load.disconnect) for _ in range(args.disconnects)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if rnd % args.delete_every == 0:
                load.export_and_delete(clients[0])
            if rnd % args.every == 0:
                series = metric_series(clients[0].get("/metrics").text)
                w = {"round": rnd, "s": round(time.perf_counter() - began, 1), "users": load.next_user, **load.counts,
                     "errors": len(load.errors), **proc_figures(proc.pid), "metric_series": series,
                     "latency": load.take_window(), "folder": folder_figures(data)}
                windows.append(w)
                lat = " ".join(f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for k, v in w["latency"].items())
                tables = " ".join(f"{n}:{t['versions']}v/{t['fragments']}f/{t['deletions']}d/{t['mb']}MB"
                                  for n, t in w["folder"].items() if isinstance(t, dict))
                print(f"round {rnd:4d} {w['s']:6.0f}s users {w['users']} req {w['requests']} err {w['errors']} | rss {w['rss_mb']} MB "
                      f"fds {w['fds']} (child {w['child_fds']}) threads {w['threads']} series {series} | log segs "
                      f"{w['folder']['feedback_log_segments']} files {w['folder']['data_files']} | {tables} | p50/p99 ms {lat}", flush=True)
        idle = {**proc_figures(proc.pid)}
        time.sleep(15)  # LanceDB's I/O threads: a pool sized by recent reads, which shrinks when idle
        idle_after = proc_figures(proc.pid)
        print(f"idle 15 s after the last round: threads {idle['threads']} -> {idle_after['threads']}, fds {idle['fds']} -> {idle_after['fds']}", flush=True)
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(timeout=60)
    if load.errors:
        print(f"{len(load.errors)} unexpected answers, e.g. {load.errors[:5]}", flush=True)
    first, last = windows[0], windows[-1]

    def flat(w: dict) -> dict:
        out = {k: w[k] for k in ("round", "s", "users", "requests", "rss_mb", "child_rss_mb", "fds", "child_fds", "threads", "metric_series")}
        out.update({f"{k}_p50_ms": v["p50_ms"] for k, v in w["latency"].items()})
        out.update({f"{k}_p99_ms": v["p99_ms"] for k, v in w["latency"].items()})
        out["log_segments"], out["data_files"] = w["folder"]["feedback_log_segments"], w["folder"]["data_files"]
        for name, t in w["folder"].items():
            if isinstance(t, dict):
                out[f"{name}_versions"], out[f"{name}_fragments"], out[f"{name}_mb"] = t["versions"], t["fragments"], t["mb"]
        return out

    a, b = flat(first), flat(last)
    ratios = {k: round(b[k] / a[k], 2) for k in a if isinstance(a[k], (int, float)) and a[k] and k in b}
    print(json.dumps({"rounds": args.rounds, "clients": args.clients, "serve_from": args.serve_from, "errors": len(load.errors), **load.counts,
                      "idle_threads": [idle["threads"], idle_after["threads"]],
                      "first": a, "last": b, "ratio": ratios}))


if __name__ == "__main__":
    main()
