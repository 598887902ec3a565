"""What a PATCH of a user's stated preferences reads to look whether the changes table holds the version their row holds
(`service.users.services._store_missing_changes`: `Store.stated_changes(tenant, user, version)`): the rows Lance
scans for it (its plan's `rows_scanned`, summed over the plan, of the store's own query) and its milliseconds, with the
BTREE index on `stated_changes.version` (`pluralign.store.tables.RANGE_INDEXED`, session scale62) against the same
table after that index is dropped (the owner's BITMAP indexes alone, as before scale62).

    OMP_NUM_THREADS=1 python -m benchmarks.stated_version_index --json
    OMP_NUM_THREADS=1 python -m benchmarks.stated_version_index --versions 300 30000 --repeat 50

A local store; user ann's `--versions` versions (3 change rows each) come in 300 commits (one version a commit at
300), another user's row beside each commit (interleaved, as users' PATCHes are), then the store is compacted (every
row in the indexes). The read asked for is ann's newest version. Prints one line per size; `--json`: one object.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time

from lancedb.query import LanceEmptyQueryBuilder

from pluralign.store import Store

COMMITS = 300
FEATURES = ("length", "list_items", "exclamations")


def fill(store: Store, versions: int) -> None:
    step = max(1, versions // COMMITS)
    for first in range(1, versions + 1, step):
        store.add_stated_changes("t", "ann", [{"version": v, "at": time.time(), "feature": f, "direction": "more"}
                                              for v in range(first, min(first + step, versions + 1)) for f in FEATURES])
        store.add_stated_changes("t", "bob", [{"version": first, "at": time.time(), "feature": "length", "direction": "more"}])
    store.compact(every_table=True)


def read(store: Store, version: int, repeat: int) -> dict:
    """`Store.stated_changes` of ann's newest version: rows Lance scanned for it, and its mean ms over `repeat` (after
    one read)."""
    scanned: list[int] = []
    to_arrow = LanceEmptyQueryBuilder.to_arrow

    def counted(self, *args, **kwargs):
        if self._table.name == "stated_changes":
            scanned.append(sum(int(n) for n in re.findall(r"rows_scanned=(\d+)", self.analyze_plan())))
        return to_arrow(self, *args, **kwargs)

    LanceEmptyQueryBuilder.to_arrow = counted
    try:
        rows = store.stated_changes("t", "ann", version)
    finally:
        LanceEmptyQueryBuilder.to_arrow = to_arrow
    assert [r["version"] for r in rows] == [version] * len(FEATURES), rows
    began = time.perf_counter()
    for _ in range(repeat):
        store.stated_changes("t", "ann", version)
    return {"rows_scanned": sum(scanned), "ms_per_read": round((time.perf_counter() - began) / repeat * 1000, 2)}


def measure(versions: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "bench", 8)
        began = time.perf_counter()
        fill(store, versions)
        table = store.tables["stated_changes"]
        indexed = read(store, versions, repeat)
        version_index = [i.name for i in table.list_indices() if list(i.columns) == ["version"]]
        assert len(version_index) == 1, table.list_indices()
        table.drop_index(version_index[0])
        table.checkout_latest()
        assert not [i for i in table.list_indices() if list(i.columns) == ["version"]]
        bitmaps_alone = read(store, versions, repeat)
        rows = table.count_rows()
    return {"versions": versions, "rows": rows, "fill_s": round(time.perf_counter() - began, 1),
            "without_version_index": bitmaps_alone, "with_version_index": indexed,
            "rows_scanned_ratio": round(bitmaps_alone["rows_scanned"] / max(1, indexed["rows_scanned"]), 1),
            "ms_ratio": round(bitmaps_alone["ms_per_read"] / indexed["ms_per_read"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[300, 30_000])
    parser.add_argument("--repeat", type=int, default=50, help="timed reads per figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [measure(v, args.repeat) for v in args.versions]
    if args.json:
        print(json.dumps({"sizes": sizes}))
        return
    for s in sizes:
        print(f"{s['versions']} versions ({s['rows']} rows): without the version index "
              f"{s['without_version_index']['rows_scanned']} rows scanned, {s['without_version_index']['ms_per_read']} ms; "
              f"with it {s['with_version_index']['rows_scanned']} rows scanned, {s['with_version_index']['ms_per_read']} ms "
              f"(rows x{s['rows_scanned_ratio']}, ms x{s['ms_ratio']})")


if __name__ == "__main__":
    main()
