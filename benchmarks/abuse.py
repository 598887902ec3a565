"""Issue 13's reproducers replayed against `pluralign serve` on 127.0.0.1, printed as one table.

    python benchmarks/abuse.py                                  # SmolLM2, MiniLM, PAL from ../shared/data
    python benchmarks/abuse.py --generator /path/to/model --race-trials 500 --flood 8

Bounded and loopback only: a fresh temp data folder, one server on 127.0.0.1, every request with a
timeout, every loop with a fixed count. Each row: the case, what a healthy service answers, what
this one answered, and whether that meets the bar. The last line is the table as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
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

from service.auth import KeyRing  # noqa: E402

CASES = ("input", "keys", "idempotency", "delete", "race", "fairness", "delete-writes", "rate")  # in the order they run
CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "Suggest a weekend plan."}], "max_tokens": 8}
ROWS: list[dict] = []


def row(case: str, want: str, got: str, ok: bool) -> None:
    ROWS.append({"case": case, "want": want, "got": got, "ok": bool(ok)})
    print(f"  {'ok ' if ok else 'BAD'} {case}: {got}", flush=True)


def start(data: Path, port: int, env: dict) -> subprocess.Popen:
    full = {**os.environ, "PLURALIGN_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=open(data.parent / "serve.log", "wb"))
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
        if proc.poll() is not None:
            break
    raise SystemExit("serve did not start:\n" + (data.parent / "serve.log").read_text()[-3000:])


def named(r: httpx.Response) -> str:
    """The field an error names: `error.param` of the service's OpenAI-shaped error body (docs/api.md), or the
    keys of Litestar's `extra` list (the body before that; reading only it, every row found no field named)."""
    try:
        body = r.json()
        if isinstance(body.get("error"), dict):
            return body["error"].get("param") or ""
        return ",".join(e["key"] for e in body.get("extra") or [])
    except (ValueError, AttributeError, KeyError, TypeError):
        return ""


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def cases_input(t: httpx.Client, a: httpx.Client) -> None:
    r = t.options("/v1/models")
    row("OPTIONS /v1/models", "204", str(r.status_code), r.status_code == 204)
    r = httpx.options(str(t.base_url) + "/v1/chat/completions", headers={"Origin": "https://x.example", "Access-Control-Request-Method": "POST"})
    row("CORS preflight", "not 5xx", str(r.status_code), r.status_code < 500)
    r = t.post("/v1/rewards/score", content="[" * 977 + "]" * 977, headers={"content-type": "application/json"})
    row("JSON nested 977 deep", "400", f"{r.status_code} {named(r)}", r.status_code == 400)
    for query, field in (({"group_by": "--help"}, "group_by"), ({"group_by": "g", "since": "-1e-05"}, "since"), ({"group_by": "g", "since": "nan"}, "since")):
        r = a.get("/admin/audits/fairness", params={**query, "wait": 0})
        row(f"audit {query}", f"400 naming {field}", f"{r.status_code} {named(r)}", r.status_code == 400 and named(r) == field)
    bodies = [
        (b'{"model":"pluralign","seed":18446744073709551616,"messages":[{"role":"user","content":"hi"}]}', "seed"),
        (b'{"model":"pluralign","temperature":1e400,"messages":[{"role":"user","content":"hi"}]}', "temperature"),
        (b'{"model":"pluralign","messages":[{"role":"user","content":"h\xff\xfei"}]}', "messages[0].content"),  # the string's path
        (b'{"model":"pluralign","n":"3","messages":[{"role":"user","content":"hi"}]}', "n"),
    ]
    for body, field in bodies:
        r = t.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        row(f"chat `{field}` bad", f"400 naming {field}", f"{r.status_code} {named(r)}", r.status_code == 400 and named(r) == field)
    keys_before = (DATA / "api_keys.json").read_bytes()
    r = a.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "g", "out": str(DATA / "api_keys.json")}})
    row("job params out=<key file>", "400 naming params.out, keys intact", f"{r.status_code} {named(r)}",
        r.status_code == 400 and (DATA / "api_keys.json").read_bytes() == keys_before)
    loose = [({"chosen": "Same.", "rejected": "Same."}, "rejected"), ({"chosen": "   "}, "chosen"), ({"margin": -1}, "margin"),
             ({"source": "s" * 900_000}, "source")]
    for change, field in loose:
        body = {"type": "comparison", "user": "lou", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", **change}
        r = t.post("/v1/feedback", json=body)
        row(f"feedback {field} loose", "4xx", f"{r.status_code} {named(r)}", 400 <= r.status_code < 500)
    health = httpx.get(str(t.base_url) + "/health").text
    row("/health without a key", "no paths", "paths shown" if str(DATA) in health else "no paths", str(DATA) not in health)
    mode = oct(DATA.stat().st_mode & 0o777)
    row("data folder mode", "0o700", mode, mode == "0o700")


def case_race(t: httpx.Client, trials: int) -> None:
    resurrected = 0
    for trial in range(trials):
        user = f"race{trial}"
        for i in range(2):
            t.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Q{i}?", "chosen": "A.", "rejected": "B."})
        stop = threading.Event()

        def hammer(user: str = user, stop: threading.Event = stop) -> None:
            with httpx.Client(base_url=t.base_url, headers=t.headers, timeout=60) as h:
                while not stop.is_set():
                    h.get(f"/v1/users/{user}")
                    h.post("/v1/rewards/score", json={"user": user, "prompt": "Q?", "responses": ["A.", "B."]})

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for th in threads:
            th.start()
        time.sleep(0.01 * (trial % 5))
        t.delete(f"/v1/users/{user}")
        stop.set()
        for th in threads:
            th.join()
        time.sleep(0.05)
        resurrected += t.get(f"/v1/users/{user}").status_code != 404
    row(f"read/score racing DELETE, {trials} trials", "0 resurrected", f"{resurrected} resurrected", resurrected == 0)


def case_delete(t: httpx.Client) -> None:
    user, marker = "uzq81del", "mk7secretx"
    for i in range(3):
        t.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"{marker} {i}?", "chosen": f"{marker} a", "rejected": "b"})
    t.post("/v1/chat/completions", json={**CHAT, "user": user, "messages": [{"role": "user", "content": f"hi {marker}"}]})
    time.sleep(2)  # the adapter trigger (adapter_every=3) queues a job with a snapshot
    r = t.delete(f"/v1/users/{user}")
    time.sleep(2)
    found = [str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in (marker.encode(), user.encode()))]
    row("files naming a deleted user (marker and id)", "0", f"{len(found)} {found[:3]}", r.status_code == 200 and not found)


def case_delete_writes(url: str, keys: dict, rounds: int) -> None:
    """Tenant B's writes while tenant A deletes users: B posts a comparison and reads its page of
    preferences (which moves the row into the table: a commit), unloaded and while A deletes."""
    b = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['b']}"}, timeout=120)
    a = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['a']}"}, timeout=120)
    filler = [{"type": "comparison", "user": f"fill{i % 40}", "prompt": f"Filler {i}?", "chosen": "Yes, gladly.", "rejected": "No."} for i in range(400)]
    for body in filler:  # tables with some rows of other users, so a purge has fragments to rewrite
        a.post("/v1/feedback", json=body)
    a.get("/v1/users/fill0/preferences", params={"limit": 1})

    def writes(n: int, tag: str) -> tuple[list[float], list[float]]:
        post, visible = [], []
        for i in range(n):
            s = time.perf_counter()
            b.post("/v1/feedback", json={"type": "comparison", "user": "bwriter", "prompt": f"{tag} {i}?", "chosen": "Yes.", "rejected": "No."})
            post.append((time.perf_counter() - s) * 1000)
            b.get("/v1/users/bwriter/preferences", params={"limit": 1})
            visible.append((time.perf_counter() - s) * 1000)
        return post, visible

    quiet_post, quiet_visible = writes(rounds, "quiet")
    stop, delete_ms = threading.Event(), []

    def deleter() -> None:
        i = 0
        while not stop.is_set():
            user = f"gone{i}"
            for j in range(3):
                a.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Q{j}?", "chosen": "A.", "rejected": "B."})
            a.get(f"/v1/users/{user}/preferences", params={"limit": 1})
            s = time.perf_counter()
            a.delete(f"/v1/users/{user}")
            delete_ms.append((time.perf_counter() - s) * 1000)
            i += 1

    th = threading.Thread(target=deleter)
    th.start()
    time.sleep(1)
    busy_post, busy_visible = writes(rounds, "busy")
    stop.set()
    th.join()
    fmt = lambda v: f"p50 {statistics.median(v):.0f} / p99 {percentile(v, 0.99):.0f} ms"  # noqa: E731
    row("B feedback POST, unloaded -> A deleting users", "not slowed by A's deletes", f"{fmt(quiet_post)} -> {fmt(busy_post)}", True)
    row("B feedback POST + read back (a commit), unloaded -> A deleting", "not held for a purge",
        f"{fmt(quiet_visible)} -> {fmt(busy_visible)}; A's DELETE {fmt(delete_ms)} ({len(delete_ms)} deletes)",
        percentile(busy_visible, 0.99) < max(2 * percentile(quiet_visible, 0.99), statistics.median(delete_ms)))


def case_keys(t: httpx.Client) -> None:
    run = lambda *a: subprocess.run([sys.executable, "-m", "training.cli", "keys", "--data-dir", str(DATA), *a],
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
    created = json.loads(run("create", "--tenant", "acme", "--name", "bench").stdout.splitlines()[-1])
    auth = {"Authorization": f"Bearer {created['key']}"}
    before = httpx.get(str(t.base_url) + "/v1/models", headers=auth).status_code
    run("revoke", created["id"])
    after = httpx.get(str(t.base_url) + "/v1/models", headers=auth).status_code
    row("key created then revoked by the CLI", "200 then 401", f"{before} then {after}", (before, after) == (200, 401))


def case_idempotency(t: httpx.Client) -> None:
    body = {"type": "comparison", "user": "idem", "prompt": "Retry?", "chosen": "Yes.", "rejected": "No."}
    for _ in range(5):
        t.post("/v1/feedback", json=body, headers={"Idempotency-Key": "bench-1"})
    total = t.get("/v1/users/idem/preferences").json()["total"]
    row("5 retries with one Idempotency-Key", "1 stored", f"{total} stored", total == 1)


def case_fairness(url: str, keys: dict, flood: int, reads: int, blocks: int = 4) -> None:
    """Tenant B's light reads and chats, unloaded and while tenant A floods chats and long prompts,
    side by side: `blocks` rounds of (A idle: B reads and chats; A flooding: B reads and chats), so
    both figures see the same machine. Fairness: how many generations started while B's chat waited
    for its turn (`pluralign.timings.queued_behind` in B's answer)."""
    b = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['b']}"}, timeout=600)
    b.post("/v1/feedback", json={"type": "comparison", "user": "bea", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
    b.get("/v1/users/bea")

    def light(n: int) -> list[float]:
        out = []
        for _ in range(n):
            s = time.perf_counter()
            b.get("/v1/users/bea")
            out.append((time.perf_counter() - s) * 1000)
        return out

    def chat() -> tuple[float, int]:
        """B's chat seconds, and generations that started while it waited for its turn."""
        s = time.perf_counter()
        r = b.post("/v1/chat/completions", json={**CHAT, "max_tokens": 16})
        return time.perf_counter() - s, r.json()["pluralign"]["timings"]["queued_behind"] if r.status_code == 200 else 99

    flooding, stop, in_flight = threading.Event(), threading.Event(), [0]
    codes, gen_seconds, lock = [], [], threading.Lock()

    def flooder(i: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['a']}"}, timeout=600) as a:
            while not stop.is_set():
                if not flooding.wait(0.1):
                    continue
                content = "Tell me everything about the history of tea. " * (400 if i % 2 else 1)  # long prompts too
                with lock:
                    in_flight[0] += 1
                s = time.perf_counter()
                r = a.post("/v1/chat/completions", json={**CHAT, "max_tokens": 64, "messages": [{"role": "user", "content": content}]})
                with lock:
                    in_flight[0] -= 1
                codes.append(r.status_code)
                if r.status_code == 200:
                    gen_seconds.append(time.perf_counter() - s)
                elif r.status_code == 429:
                    time.sleep(min(5, int(r.headers.get("retry-after", "1"))))

    threads = [threading.Thread(target=flooder, args=(i,)) for i in range(flood)]
    for th in threads:
        th.start()
    quiet_reads, loaded_reads, quiet_chats, loaded_chats = [], [], [], []
    per_block = max(1, reads // blocks)
    try:
        for _ in range(blocks):
            flooding.clear()
            while in_flight[0]:  # A's chats in flight finish first: B alone
                time.sleep(0.05)
            quiet_reads += light(per_block)
            quiet_chats.append(chat())
            flooding.set()
            time.sleep(3)  # A's clients have filled their slots
            loaded_reads += light(per_block)
            loaded_chats.append(chat())
    finally:
        stop.set()
        flooding.set()
        for th in threads:
            th.join()
    p99q, p99l = percentile(quiet_reads, 0.99), percentile(loaded_reads, 0.99)
    row(f"B light reads p99, A idle -> A flooding ({len(loaded_reads)} each, interleaved)", "< 100 ms",
        f"{p99q:.1f} -> {p99l:.1f} ms (p50 {statistics.median(quiet_reads):.1f} -> {statistics.median(loaded_reads):.1f})", p99l < 100)
    one = statistics.median(gen_seconds) if gen_seconds else float("nan")
    worst_ahead = max(n for _, n in loaded_chats)
    row("B chat: seconds, A idle -> A flooding; generations started while it waited", "at most 1 of A's ahead",
        f"{statistics.median(s for s, _ in quiet_chats):.2f} -> {statistics.median(s for s, _ in loaded_chats):.2f} s; "
        f"queued behind at most {worst_ahead} ({[n for _, n in loaded_chats]}; A's median chat {one:.2f} s; "
        f"A got {codes.count(200)} x 200, {codes.count(429)} x 429)", worst_ahead <= 1)


def case_rate(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        codes = [c.get("/v1/models").status_code for _ in range(400)]
    row("400 quick requests of one tenant (limit 200/s)", "some 429", f"{codes.count(200)} x 200, {codes.count(429)} x 429", 429 in codes)


def main() -> None:
    global DATA
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="smollm2", help="`smollm2` or a saved causal-LM folder")
    p.add_argument("--pal-dir", default=None, help="a PAL checkpoint (default: bootstrapped at first start)")
    p.add_argument("--race-trials", type=int, default=100)
    p.add_argument("--flood", type=int, default=6, help="tenant A's concurrent chat clients")
    p.add_argument("--reads", type=int, default=200, help="tenant B's light reads per phase")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--delete-rounds", type=int, default=100, help="tenant B's writes per phase in the delete-writes case")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    args = p.parse_args()
    chosen = set(args.cases.split(","))
    if chosen - set(CASES):
        p.error(f"unknown cases: {', '.join(sorted(chosen - set(CASES)))}")
    folder = Path(tempfile.mkdtemp(prefix="pluralign-abuse-"))
    DATA = folder / "data"
    DATA.mkdir()
    ring = KeyRing(DATA / "api_keys.json")
    keys = {"a": ring.issue("acme"), "b": ring.issue("bravo"), "admin": ring.issue("ops", admin=True)}
    env = {"PLURALIGN_GENERATOR": args.generator, "PLURALIGN_ADAPTER_EVERY": "3", "PLURALIGN_MAX_TOKENS": "16"}
    if args.pal_dir:
        env["PLURALIGN_PAL_DIR"] = args.pal_dir
    proc = start(DATA, args.port, env)
    url = f"http://127.0.0.1:{args.port}"
    started = time.time()
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['a']}"}, timeout=600) as t, \
             httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=600) as a:
            runs = {
                "input": lambda: cases_input(t, a), "keys": lambda: case_keys(t), "idempotency": lambda: case_idempotency(t),
                "delete": lambda: case_delete(t), "race": lambda: case_race(t, args.race_trials),
                "fairness": lambda: case_fairness(url, keys, args.flood, args.reads),
                "delete-writes": lambda: case_delete_writes(url, keys, args.delete_rounds), "rate": lambda: case_rate(url, keys["a"]),
            }
            for name in CASES:
                if name in chosen:
                    runs[name]()
        metrics = httpx.get(url + "/metrics").text
        fivexx = sum(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith("pluralign_http_requests_total") and 'status="5' in x)
        row("5xx responses over the whole run", "0", f"{fivexx:.0f}", fivexx == 0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    width = max(len(r["case"]) for r in ROWS)
    print(f"\n{'case':<{width}}  {'want':<34}  ok   got")
    for r in ROWS:
        print(f"{r['case']:<{width}}  {r['want']:<34}  {'yes' if r['ok'] else 'NO '}  {r['got']}")
    print(json.dumps({"rows": ROWS, "seconds": round(time.time() - started, 1), "generator": args.generator}))


if __name__ == "__main__":
    main()
