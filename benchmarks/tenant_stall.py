"""Does one tenant's maintenance stall another tenant? Tenant A's latencies over HTTP, with tenant B
idle and with B busy (deleting users who hold many rows, or importing large files), in interleaved
blocks of the same run.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/tenant_stall.py            # SmolLM2, MiniLM, PAL bootstrapped
    python benchmarks/tenant_stall.py --b-users 48 --b-rows 80 --clients 4 --blocks 3 --seconds 10
    python benchmarks/tenant_stall.py --b-load import --import-clients 2              # B imports 1 MB files instead
    python benchmarks/tenant_stall.py --b-load import --code /tmp/before             # serve another checkout (git archive REV | tar -x -C /tmp/before)

1. Prefill (not timed) a fresh data folder's preferences table straight through LanceDB: B's
   `b_users` users with `b_rows` rows each and A's `a_users` users with `a_rows` each (random unit
   vectors, as `feedback_ingest.py`), compacted, so each of B's DELETEs has work: the rows deleted,
   the fragments rewritten, the BITMAP indexes rebuilt and old versions removed
   (`Store._purge_tables`, whose `_drop_old_versions` runs under the store's write lock). Then, in
   this process without HTTP, `lock_deletes` more of B's users are deleted (`Store.delete_user`)
   with the write lock's holds timed: the longest hold per DELETE and the time in `_drop_old_versions`.
2. `pluralign serve` on 127.0.0.1 (its own process, torch on one thread). In each block, first
   quiet then with B busy: `clients` threads of tenant A send comparison feedback as fast as it
   is answered (half of them with an `Idempotency-Key`); a probe thread of A sends one feedback of
   a user of its own and reads it back (`GET /v1/users/{id}/preferences`, timed: the read moves the
   pending row into the table, a commit under the store's write lock), and another asks for chat
   completions (`max_tokens` 4) of A's users, and a third reads the profile of a user of A who sends
   nothing (`GET /v1/users/{id}`, nothing pending: a light read), each one after another. While busy, one thread
   of B DELETEs its users one after another (`--b-load delete`), or `import_clients` threads of B
   each import a file of `import_bytes` (JSON lines, TRL's explicit form) to a new user of B's, one
   after another (`--b-load import`), or one every `import_every` seconds (a fixed load of B's, to
   compare servers whose imports cost differently: `--code`).

Prints, per kind of request of A: n, median, p99 and max (ms) quiet and with B busy, and the
ratio of the p99s; B's DELETE times; then the same as one JSON line.
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
import uuid
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import run_for, start_serve  # noqa: E402
from pluralign.embed.models import MINILM_ID  # noqa: E402
from pluralign.store import SCHEMA_VERSION, Store  # noqa: E402
from service.auth import KeyRing  # noqa: E402
from training.common import number  # noqa: E402

DIM = 384
KINDS = ("feedback", "feedback (Idempotency-Key)", "read back own feedback", "chat completion", "profile GET (nothing pending)")


def prefill(lancedb: Path, owners: list[tuple[str, str, int]]) -> int:
    """Rows for each (tenant, user, n) in `owners`, random unit vectors; returns the rows written."""
    store = Store(str(lancedb), MINILM_ID, DIM)
    schema = store.schemas["preferences"]
    rng = np.random.default_rng(0)
    tenants = [t for t, _, n in owners for _ in range(n)]
    users = [u for _, u, n in owners for _ in range(n)]
    order = rng.permutation(len(users))  # users' rows spread over the fragments, as arrivals over time would
    tenants, users = [tenants[i] for i in order], [users[i] for i in order]
    n, now = len(users), time.time()
    vectors = []
    for _ in range(3):
        v = rng.standard_normal((n, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        vectors.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), DIM))
    columns = {
        "tenant": tenants, "user_id": users, "pref_id": [uuid.uuid4().hex for _ in range(n)],
        "prompt": [f"Which is better, option {i}?" for i in range(n)], "chosen": [f"The first option, {i}." for i in range(n)],
        "rejected": [f"The second option, {i}." for i in range(n)], "tie": [False] * n, "margin": [None] * n,
        "kind": ["comparison"] * n, "source": ["benchmark"] * n, "created_at": [now + i * 1e-6 for i in range(n)],
        "received_at": [now + i * 1e-6 for i in range(n)], "attributes": ["{}"] * n,
        "prompt_vec": vectors[0], "chosen_vec": vectors[1], "rejected_vec": vectors[2], "schema_version": [SCHEMA_VERSION] * n,
    }
    for field in schema:  # a column added to the schema since, which this prefill does not name: null
        columns.setdefault(field.name, pa.nulls(n, field.type))
    for start in range(0, n, 500):  # several fragments, as many commits would leave before a compaction
        store.preferences.add(pa.table(columns, schema=schema).slice(start, 500))
    store.compact(every_table=True)
    return n


class HeldLock:
    """A stand-in for `Store._lock` (an RLock, taken only with `with`) that records how long each
    outermost hold lasted, in ms."""

    def __init__(self):
        self._lock, self._depth, self.holds = threading.RLock(), threading.local(), []

    def __enter__(self):
        self._lock.acquire()
        self._depth.n = getattr(self._depth, "n", 0) + 1
        if self._depth.n == 1:
            self._depth.since = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self._depth.n -= 1
        if not self._depth.n:
            self.holds.append((time.perf_counter() - self._depth.since) * 1000)
        self._lock.release()


def write_lock_holds(lancedb: Path, tenant: str, users: list[str]) -> list[tuple[float, float, float]]:
    """In this process, without HTTP: (DELETE ms, its longest hold of the store's write lock ms, ms in
    `_drop_old_versions`) for each of `users`, deleted one after another (`Store.delete_user`)."""
    store = Store(str(lancedb), MINILM_ID, DIM)
    store._lock = held = HeldLock()
    dropping: list[float] = []
    drop = store._drop_old_versions

    def timed_drop(*a, **k):
        s = time.perf_counter()
        try:
            return drop(*a, **k)
        finally:
            dropping.append((time.perf_counter() - s) * 1000)

    store._drop_old_versions = timed_drop
    out = []
    for user in users:
        held.holds.clear(), dropping.clear()
        s = time.perf_counter()
        store.delete_user(tenant, user)
        out.append(((time.perf_counter() - s) * 1000, max(held.holds), sum(dropping)))
    return out


IN_PROCESS = (("delete", 0, "DELETE"), ("write_lock_hold", 1, "longest write-lock hold"), ("drop_old_versions", 2, "in _drop_old_versions"))


def in_process_summary(holds: list[tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """`write_lock_holds`' times as {name: {"median": ms, "max": ms}} for the JSON line; {} when none were timed
    (`--lock-deletes 0`)."""
    return {name: {"median": round(statistics.median(h[c] for h in holds), 1), "max": round(max(h[c] for h in holds), 1)}
            for name, c, _ in IN_PROCESS} if holds else {}


def start_server(data: Path, port: int, generator: str, pal_dir: str | None, code: Path) -> subprocess.Popen:
    return start_serve(data, port, {"PLURALIGN_GENERATOR": generator, **({"PLURALIGN_PAL_DIR": pal_dir} if pal_dir else {})}, code)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="smollm2", help="`smollm2` or a saved causal-LM folder")
    p.add_argument("--pal-dir", default=None, help="a PAL checkpoint (default: bootstrapped at first start)")
    p.add_argument("--b-users", type=int, default=48, help="tenant B's users, deleted one after another")
    p.add_argument("--b-rows", type=int, default=80, help="rows of each of B's users")
    p.add_argument("--a-users", type=int, default=10)
    p.add_argument("--a-rows", type=int, default=100)
    p.add_argument("--clients", type=int, default=4, help="tenant A's concurrent feedback clients")
    p.add_argument("--blocks", type=int, default=3, help="(quiet, B busy) pairs")
    p.add_argument("--b-load", choices=("delete", "import"), default="delete", help="what B does while busy")
    p.add_argument("--import-clients", type=int, default=2, help="B's concurrent importers (--b-load import)")
    p.add_argument("--import-every", type=float, default=0.0,
                   help="seconds from the start of one of a client's imports to its next (0: one right after another)")
    p.add_argument("--import-bytes", type=int, default=1_000_000, help="each import's body (the service's limit: max_body_bytes)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--lock-deletes", type=number(int, minimum=0), default=8, help="DELETEs timed in this process first, with the write lock's holds")
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--code", type=Path, default=ROOT, help="the checkout whose `pluralign serve` runs (another's: before and after)")
    args = p.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="pluralign-stall-"))
    data = folder / "data"
    data.mkdir()
    a_users, b_users = [f"a{i}" for i in range(args.a_users)], [f"b{i}" for i in range(args.b_users)]
    spare = [f"spare{i}" for i in range(args.lock_deletes)]  # deleted in this process, before the server starts
    rows = prefill(data / "lancedb", [("acme", u, args.a_rows) for u in [*a_users, "aread"]] + [("bravo", u, args.b_rows) for u in b_users + spare])
    print(f"prefilled {rows} rows ({len(b_users + spare)} x {args.b_rows} of B, {args.a_users + 1} x {args.a_rows} of A) in {folder}", flush=True)
    holds = write_lock_holds(data / "lancedb", "bravo", spare)
    for _, column, name in IN_PROCESS if holds else ():
        values = [h[column] for h in holds]
        print(f"in-process {name} (ms, {len(values)} DELETEs): median {statistics.median(values):.1f}, max {max(values):.1f}", flush=True)
    if not holds:
        print("in-process DELETEs: none timed (--lock-deletes 0)", flush=True)
    ring = KeyRing(data / "api_keys.json")
    keys = {"a": ring.issue("acme"), "b": ring.issue("bravo")}
    proc = start_server(data, args.port, args.generator, args.pal_dir, args.code)
    url = f"http://127.0.0.1:{args.port}"
    client = lambda who: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[who]}"}, timeout=300)  # noqa: E731
    times: dict[str, dict[str, list[float]]] = {phase: {k: [] for k in KINDS} for phase in ("quiet", "busy")}
    failures: list[str] = []
    deletes: list[float] = []
    imports: list[float] = []
    busy_name = "deleting" if args.b_load == "delete" else "importing"
    lines, size = [], 0
    while True:  # B's import: distinct comparisons up to `import_bytes`
        line = json.dumps({"prompt": f"Which reply to question {len(lines)} is kinder?", "chosen": f"The gentle reply {len(lines)}.",
                           "rejected": f"The curt reply {len(lines)}."})
        if size + len(line) + 1 > args.import_bytes:
            break
        lines.append(line)
        size += len(line) + 1
    import_body = "\n".join(lines).encode()
    started = time.time()
    try:
        with client("a") as warm:  # first chat (model load), first profile read, first feedback: not timed
            warm.post("/v1/chat/completions", json={"model": "pluralign", "user": "a0", "max_tokens": 4,
                                                    "messages": [{"role": "user", "content": "Hello?"}]})
            warm.get("/v1/users/a0")
            warm.get("/v1/users/aread")
        left = list(b_users)

        def phase(name: str) -> None:
            stop = threading.Event()
            out = times[name]

            def feedback(c: int) -> None:
                i = 0
                with client("a") as a:
                    while not stop.is_set():
                        i += 1
                        user = a_users[(c + i) % len(a_users)]
                        body = {"type": "comparison", "user": user, "prompt": f"{name} {c}-{i}: which is kinder?",
                                "chosen": f"The gentle answer {c}-{i}.", "rejected": f"The curt answer {c}-{i}."}
                        keyed = c % 2 == 1
                        headers = {"Idempotency-Key": uuid.uuid4().hex} if keyed else None
                        s = time.perf_counter()
                        r = a.post("/v1/feedback", json=body, headers=headers)
                        ms = (time.perf_counter() - s) * 1000
                        if r.status_code != 201:
                            failures.append(f"feedback {r.status_code}")
                        out[KINDS[1] if keyed else KINDS[0]].append(ms)

            def probe(kind: str) -> None:
                i = 0
                with client("a") as a:
                    while not stop.is_set():
                        i += 1
                        user = a_users[i % len(a_users)]
                        s = time.perf_counter()
                        if kind == KINDS[4]:  # a user of A who sends nothing: a light read of stored rows
                            r = a.get("/v1/users/aread")
                        elif kind == KINDS[2]:  # the read moves the one pending row into the table: a commit
                            body = {"type": "comparison", "user": "aprobe", "prompt": f"{name} probe {i}: which?",
                                    "chosen": f"Probe answer {i}.", "rejected": "No."}
                            if a.post("/v1/feedback", json=body).status_code != 201:
                                failures.append("probe feedback")
                            s = time.perf_counter()
                            r = a.get("/v1/users/aprobe/preferences", params={"limit": 1})
                        else:
                            r = a.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 4,
                                                                     "messages": [{"role": "user", "content": f"Tea or coffee, {i}?"}]})
                        ms = (time.perf_counter() - s) * 1000
                        if r.status_code != 200:
                            failures.append(f"{kind} {r.status_code}")
                        out[kind].append(ms)

            def deleter() -> None:
                with client("b") as b:
                    while not stop.is_set() and left:
                        user = left.pop(0)
                        s = time.perf_counter()
                        r = b.delete(f"/v1/users/{user}")
                        if r.status_code != 200:
                            failures.append(f"DELETE {r.status_code}")
                        deletes.append((time.perf_counter() - s) * 1000)

            def importer(c: int) -> None:
                with client("b") as b:
                    while not stop.is_set():
                        s = time.perf_counter()
                        r = b.post(f"/v1/users/imp{c}-{uuid.uuid4().hex[:8]}/import", content=import_body,
                                   headers={"Content-Type": "application/jsonl"})
                        if r.status_code != 201:
                            failures.append(f"import {r.status_code}")
                        imports.append((time.perf_counter() - s) * 1000)
                        if args.import_every:  # a steady pace (B's work the same whatever one import costs), else flat out
                            stop.wait(max(0.0, args.import_every - (time.perf_counter() - s)))

            threads = [threading.Thread(target=feedback, args=(c,)) for c in range(args.clients)]
            threads += [threading.Thread(target=probe, args=(kind,)) for kind in KINDS[2:]]
            if name == "busy" and args.b_load == "delete":
                threads.append(threading.Thread(target=deleter))
            if name == "busy" and args.b_load == "import":
                threads += [threading.Thread(target=importer, args=(c,)) for c in range(args.import_clients)]
            run_for(threads, args.seconds, stop)

        for block in range(args.blocks):
            for name in ("quiet", "busy"):
                phase(name)
                print(f"block {block + 1} {name}: {sum(map(len, times[name].values()))} requests of A so far, "
                      f"{len(deletes)} DELETEs and {len(imports)} imports of B", flush=True)
                time.sleep(1.0)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    fmt = lambda v: f"{len(v):5d} {statistics.median(v):8.1f} {pct(v, 0.99):8.1f} {max(v):8.1f}" if v else "    0"  # noqa: E731
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'A: ms':<28} {'quiet: n   median   p99      max':<32}   {'B ' + busy_name + ': n   median   p99      max':<36}  p99 ratio")
    result = {"b_load": args.b_load, "import_every": args.import_every, "code": str(args.code), "kinds": {}, "deletes_ms": {}, "failures": failures, "seconds": round(time.time() - started, 1),
              "rows": rows, "load": round(os.getloadavg()[0], 1),
              "in_process_ms": in_process_summary(holds)}
    for kind in KINDS:
        quiet, busy = times["quiet"][kind], times["busy"][kind]
        ratio = pct(busy, 0.99) / pct(quiet, 0.99) if quiet and busy else float("nan")
        print(f"{kind:<28} {fmt(quiet):<32}   {fmt(busy):<36}  {ratio:5.1f}x")
        result["kinds"][kind] = {phase: {"n": len(v), "median": round(statistics.median(v), 1) if v else None,
                                         "p99": round(pct(v, 0.99), 1) if v else None, "max": round(max(v), 1) if v else None}
                                 for phase, v in (("quiet", quiet), ("busy", busy))}
    if deletes:
        print(f"B's DELETE ({args.b_rows} rows each): {fmt(deletes)}")
        result["deletes_ms"] = {"n": len(deletes), "median": round(statistics.median(deletes), 1), "max": round(max(deletes), 1)}
    if imports:
        print(f"B's import ({len(lines)} rows each): {fmt(imports)}")
        result["imports_ms"] = {"n": len(imports), "rows": len(lines), "median": round(statistics.median(imports), 1), "max": round(max(imports), 1)}
    if failures:
        print(f"not answered as expected: {sorted(set(failures))} ({len(failures)})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
