"""What a large export costs over HTTP: time, bytes on the wire (gzip or not), the server's Python peak.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.export_http --rows 50000 --runs 2

Builds the tiny service the tests use (a random tiny Llama, MiniLM, a tiny PAL on persona data; real
LanceDB in a temp folder, served by uvicorn on loopback), writes `--rows` short synthetic comparisons
of one user straight into the store (random vectors, not timed), then GETs
`/v1/users/{id}/export?format=preferences` (`--format all`: the full export) `--runs` times with `Accept-Encoding: identity` and with
`gzip`, each read whole. Prints, per run: status, Content-Encoding, bytes on the wire, seconds, and
the peak of Python allocations (tracemalloc, the server runs in this process) during the request.
Synthetic rows repeat words: real rows compress less.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=50_000, help="comparisons of the exported user")
    p.add_argument("--runs", type=int, default=2, help="timed exports per encoding")
    p.add_argument("--format", choices=["preferences", "all"], default="preferences", help="the export's `format`")
    args = p.parse_args()

    import httpx

    from benchmarks.serving import tiny_service_of_alice

    server, svc = tiny_service_of_alice("pluralign-export-", args.rows)
    url = svc.url + f"/v1/users/alice/export?format={args.format}"
    with server, httpx.Client(timeout=600) as client:
        for _ in range(args.runs):
            for encoding in ("identity", "gzip"):
                tracemalloc.start()
                start = time.perf_counter()
                with client.stream("GET", url, headers={"Authorization": f"Bearer {svc.keys['acme']}", "Accept-Encoding": encoding}) as r:
                    wire = sum(len(chunk) for chunk in r.iter_raw())
                seconds = time.perf_counter() - start
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                print(f"accept-encoding={encoding:8s} status={r.status_code} content-encoding={r.headers.get('content-encoding')} "
                      f"wire={wire / 1e6:.2f} MB time={seconds:.2f} s python-peak={peak / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
