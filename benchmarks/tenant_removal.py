"""How fast a whole tenant is removed (`POST /admin/tenants/{tenant}/removal`, `service.tenants`), and whether another
tenant's requests stall meanwhile: through `pluralign serve` (its own process, no generator, a tiny PAL), on a data
folder whose store is prefilled straight through LanceDB (`tenant_stall.prefill`: compacted and indexed, each user
`--rows` comparison rows).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/tenant_removal.py                 # 300 users of bravo, 5 rows each
    python benchmarks/tenant_removal.py --users 300 --rows 5 --seconds 20
    python benchmarks/tenant_removal.py --code /tmp/before                                 # serve another checkout (git archive REV | tar -x -C /tmp/before)

1. Prefill (not timed): bravo's `users` users and acme's `a_users`, `rows` rows each; train a tiny PAL (persona data,
   MiniLM) unless `--pal-dir` names one.
2. Quiet, for `seconds`: acme's probes, one request after another each: a profile read of a user who sends nothing
   (`GET /v1/users/{id}`), and a feedback sent then read back (`GET /v1/users/{id}/preferences`: the read moves the
   pending row into the table, a commit under the store's write lock); `clients` more threads send acme's feedback
   flat out.
3. Busy: bravo's removal is sent, and the same load of acme runs until its record is `done` (or `timeout`).

Prints acme's latencies quiet and during the removal (n, median, p95, max in ms), the removal's time and users/s
(from its record: `finished_at - started_at`), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import start_serve  # noqa: E402
from benchmarks.tenant_stall import pct, prefill  # noqa: E402
from service.auth import KeyRing  # noqa: E402

NO_GENERATOR = "openai:http://127.0.0.1:9"  # nothing listens there: no chat is sent, and a start loads no model
KINDS = ("profile GET (nothing pending)", "read back own feedback", "feedback")


def tiny_pal(folder: Path) -> Path:
    from pluralign.embed.encoders import SentenceEncoder
    from tests.service.tiny import train_tiny_pal

    folder.mkdir(parents=True, exist_ok=True)
    return train_tiny_pal(folder, SentenceEncoder())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=300, help="bravo's users, removed")
    p.add_argument("--rows", type=int, default=5, help="comparison rows of each user")
    p.add_argument("--a-users", type=int, default=10, help="acme's users (the other tenant)")
    p.add_argument("--clients", type=int, default=2, help="acme's threads sending feedback flat out")
    p.add_argument("--seconds", type=float, default=20.0, help="the quiet phase's length")
    p.add_argument("--timeout", type=float, default=1800.0, help="the removal's limit (seconds)")
    p.add_argument("--pal-dir", default=None)
    p.add_argument("--port", type=int, default=8793)
    p.add_argument("--code", type=Path, default=ROOT, help="the checkout whose `pluralign serve` runs")
    args = p.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="pluralign-removal-"))
    data = folder / "data"
    data.mkdir()
    os.environ.setdefault("PLURALIGN_CACHE_DIR", str(folder / "cache"))
    pal = args.pal_dir or str(tiny_pal(folder / "pal"))
    a_users = [f"a{i}" for i in range(args.a_users)]
    rows = prefill(data / "lancedb", [("acme", u, args.rows) for u in [*a_users, "aread"]]
                   + [("bravo", f"b{i:05d}", args.rows) for i in range(args.users)])
    print(f"prefilled {rows} rows ({args.users} x {args.rows} of bravo) in {folder}", flush=True)
    ring = KeyRing(data / "api_keys.json")
    keys = {"acme": ring.issue("acme"), "bravo": ring.issue("bravo"), "admin": ring.issue("ops", admin=True)}
    proc = start_serve(data, args.port, {"PLURALIGN_GENERATOR": NO_GENERATOR, "PLURALIGN_PAL_DIR": pal,
                                         "PLURALIGN_CACHE_DIR": os.environ["PLURALIGN_CACHE_DIR"]}, args.code)
    url = f"http://127.0.0.1:{args.port}"
    client = lambda who: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[who]}"}, timeout=300)  # noqa: E731
    times = {phase: {k: [] for k in KINDS} for phase in ("quiet", "removing")}
    failures: list[str] = []
    removal: dict = {}
    try:
        with client("acme") as warm:
            warm.get("/v1/users/aread")

        def phase(name: str, until) -> None:
            stop = threading.Event()
            out = times[name]

            def probe(kind: str) -> None:
                i = 0
                with client("acme") as a:
                    while not stop.is_set():
                        i += 1
                        if kind == KINDS[0]:
                            s = time.perf_counter()
                            r = a.get("/v1/users/aread")
                        else:
                            body = {"type": "comparison", "user": "aprobe", "prompt": f"{name} probe {i}: which?",
                                    "chosen": f"Probe answer {i}.", "rejected": "No."}
                            if a.post("/v1/feedback", json=body).status_code != 201:
                                failures.append("probe feedback")
                            s = time.perf_counter()
                            r = a.get("/v1/users/aprobe/preferences", params={"limit": 1})
                        out[kind].append((time.perf_counter() - s) * 1000)
                        if r.status_code != 200:
                            failures.append(f"{kind} {r.status_code}")

            def feedback(c: int) -> None:
                i = 0
                with client("acme") as a:
                    while not stop.is_set():
                        i += 1
                        body = {"type": "comparison", "user": a_users[(c + i) % len(a_users)], "prompt": f"{name} {c}-{i}: kinder?",
                                "chosen": f"The gentle answer {c}-{i}.", "rejected": f"The curt answer {c}-{i}."}
                        s = time.perf_counter()
                        r = a.post("/v1/feedback", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                        out[KINDS[2]].append((time.perf_counter() - s) * 1000)
                        if r.status_code != 201:
                            failures.append(f"feedback {r.status_code}")

            threads = [threading.Thread(target=probe, args=(k,)) for k in KINDS[:2]]
            threads += [threading.Thread(target=feedback, args=(c,)) for c in range(args.clients)]
            for t in threads:
                t.start()
            until()
            stop.set()
            for t in threads:
                t.join()

        phase("quiet", lambda: time.sleep(args.seconds))

        def removed() -> None:
            with client("admin") as admin:
                r = admin.post("/admin/tenants/bravo/removal")
                assert r.status_code == 202, r.text
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline:
                    removal.update(admin.get("/admin/tenants/bravo/removal").json())
                    if removal.get("state") == "done":
                        return
                    time.sleep(0.5)

        phase("removing", removed)
        with client("admin") as admin:
            left = admin.get("/admin/tenants/bravo/users").json()["users"]
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    took = (removal.get("finished_at") or time.time()) - removal["started_at"]
    result = {"code": str(args.code), "users": args.users, "rows": args.rows, "state": removal.get("state"),
              "users_removed": removal.get("users_removed"), "removal_s": round(took, 1),
              "users_per_s": round((removal.get("users_removed") or 0) / took, 2), "left": len(left), "kinds": {},
              "failures": sorted(set(failures)), "load": round(os.getloadavg()[0], 1)}
    print(f"\nbravo's removal: {removal.get('state')}, {removal.get('users_removed')} users in {took:.1f} s "
          f"({result['users_per_s']} users/s); users left listed: {len(left)}")
    fmt = lambda v: f"{len(v):5d} {statistics.median(v):8.1f} {pct(v, 0.95):8.1f} {max(v):8.1f}" if v else "    0"  # noqa: E731
    print(f"{'acme: ms':<30} {'quiet: n   median   p95      max':<32}   removing: n   median   p95      max")
    for kind in KINDS:
        quiet, busy = times["quiet"][kind], times["removing"][kind]
        print(f"{kind:<30} {fmt(quiet):<32}   {fmt(busy)}")
        result["kinds"][kind] = {phase: {"n": len(v), "median": round(statistics.median(v), 1) if v else None,
                                         "p95": round(pct(v, 0.95), 1) if v else None, "max": round(max(v), 1) if v else None}
                                 for phase, v in (("quiet", quiet), ("removing", busy))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
