"""What a page of a tenant's users costs (`Store.tenant_users`, `GET /admin/tenants/{tenant}/users`) as the tenant
grows: the first page, one from the middle and the last, `limit` users each, in a store prefilled straight through
LanceDB (`tenant_stall.prefill`: each user `--rows` comparison rows, compacted and indexed), beside a second tenant
of the same size.

    OMP_NUM_THREADS=1 python benchmarks/tenant_users_page.py                        # 1,000 and 10,000 users, 5 rows each
    python benchmarks/tenant_users_page.py --users 1000 10000 --rows 5 --limit 100 --repeats 5
    PYTHONPATH=/tmp/before python benchmarks/tenant_users_page.py                   # another checkout's Store (git archive REV | tar -x -C /tmp/before)

Prints, per tenant size: the median ms of each page over `repeats` reads, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: another checkout's `pluralign` is read first when given

from benchmarks.tenant_stall import DIM, prefill  # noqa: E402
from pluralign.embed.models import MINILM_ID  # noqa: E402
from pluralign.store import Store  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, nargs="+", default=[1000, 10000], help="users of the tenant listed (one store each)")
    p.add_argument("--rows", type=int, default=5, help="comparison rows of each user")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import pluralign

    result = {"code": str(Path(pluralign.__file__).parents[1]), "rows": args.rows, "limit": args.limit, "sizes": {}}
    for users in args.users:
        folder = Path(tempfile.mkdtemp(prefix="pluralign-tenant-users-"))
        ids = [f"u{i:06d}" for i in range(users)]
        prefill(folder, [("acme", u, args.rows) for u in ids] + [("globex", u, args.rows) for u in ids])
        store = Store(str(folder), MINILM_ID, DIM)
        cursors = {"first": None, "middle": ids[users // 2 - 1], "last": ids[users - args.limit - 1]}
        times: dict[str, float] = {}
        for name, after in cursors.items():
            page, _ = store.tenant_users("acme", after, args.limit)
            assert len(page) == args.limit and page[0].preferences == args.rows, (name, page[:1])
            runs = []
            for _ in range(args.repeats):
                s = time.perf_counter()
                store.tenant_users("acme", after, args.limit)
                runs.append((time.perf_counter() - s) * 1000)
            times[name] = round(statistics.median(runs), 1)
        print(f"{users} users x {args.rows} rows (and as many of globex): " + ", ".join(f"{k} page {v} ms" for k, v in times.items()),
              flush=True)
        result["sizes"][users] = times
    result["load"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
