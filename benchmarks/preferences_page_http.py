"""What a page of a large user's preferences costs over HTTP: time and the server's Python peak.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.preferences_page_http --rows 50000 --runs 2

Builds the tiny service the tests use (as `benchmarks.export_http`), writes `--rows` short synthetic
comparisons of one user straight into the store (random vectors, not timed), then GETs
`/v1/users/{id}/preferences?limit=50` at offset 0 and at the last page, `--runs` times each. The first
request loads the user's history into the store's cache (`Store.history`); it is printed apart
("cold"). Prints, per request: status, bytes, seconds, and the peak of Python allocations (tracemalloc,
the server runs in this process) during the request.
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
    p.add_argument("--rows", type=int, default=50_000, help="comparisons of the user")
    p.add_argument("--runs", type=int, default=2, help="timed requests per page")
    args = p.parse_args()

    import httpx

    from benchmarks.serving import tiny_service_of_alice

    server, svc = tiny_service_of_alice("pluralign-page-", args.rows, spaced_s=1e-3)
    headers = {"Authorization": f"Bearer {svc.keys['acme']}"}
    with server, httpx.Client(timeout=600) as client:
        pages = [("cold", 0)] + [(f"offset={o}", o) for _ in range(args.runs) for o in (0, args.rows - 50)]
        for label, offset in pages:
            tracemalloc.start()
            start = time.perf_counter()
            r = client.get(svc.url + f"/v1/users/alice/preferences?limit=50&offset={offset}", headers=headers)
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{label:14s} status={r.status_code} bytes={len(r.content)} time={seconds:.3f} s python-peak={peak / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
