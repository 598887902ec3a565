"""What a user's DELETE holds in memory while it reads their texts to forget them from the embedding caches
(`service.users.services._forget_vectors`, inside the store's maintenance turn): the texts of every row of the user in
one read and one list (the way before session scale62, `one_read` below: Lance's whole answer as one Arrow table, then
every text in one Python list) against `Store.texts_in_batches` (a list of at most TEXT_ROWS_PER_READ rows and
TEXT_BYTES_PER_READ of text at a time, read from Lance TEXT_ROWS_PER_BATCH rows at a time, each list let go before the
next is read, as the DELETE forgets them).

    OMP_NUM_THREADS=1 python -m benchmarks.delete_texts_peak --json
    OMP_NUM_THREADS=1 python -m benchmarks.delete_texts_peak --rows 20000 60000 --cjk-rows 600

A local store (vectors 8 wide: they are not read) with one other user of 50 rows and one user of `--rows` rows of
~310-character texts (ASCII), compacted; then one user of `--cjk-rows` rows whose three texts are each 20,000 CJK
characters (60 KB of UTF-8 each, the longest a text may be). Each read runs in a fresh Python process
(`--measure`), so one way's freed memory is not the other's: its Python peak (tracemalloc, the list and the str
objects) and how much its process's peak RSS grew over the read (Arrow's and Lance's buffers too, which tracemalloc does not
see; the peak reset before the read through /proc/self/clear_refs: Linux only).
Prints one line per size and way; `--json`: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from pluralign.store import Store, StoredPreference
from pluralign.store.tables import owner_filter

DIM = 8
CHUNK = 5000  # rows per append
WAYS = ("one_read", "batches")


def fill(folder: str, user: str, n: int, text) -> None:
    """`n` rows of `user` (tenant t) whose texts are `text(i, which)`, and 50 of another user, compacted."""
    store = Store(folder, "bench", DIM)
    for owner, count in (("other", 50), (user, n)):
        step = CHUNK if owner != "cjk" else 50
        for start in range(0, count, step):
            size = min(step, count - start)
            prefs = [StoredPreference(tenant="t", user_id=owner, pref_id=f"{owner}-{start + i}", prompt=text(start + i, "q"),
                                      chosen=text(start + i, "y"), rejected=text(start + i, "n"), kind="comparison",
                                      created_at=time.time()) for i in range(size)]
            vecs = np.zeros((size, DIM), np.float32)
            store.add_preferences(prefs, vecs, vecs, vecs)
    store.compact(every_table=True)


def one_read(store: Store, user: str) -> int:
    """The DELETE's read before session scale62 (`Store.texts_of` then): Lance's whole answer, then one list of all."""
    rows = store.preferences.search().where(owner_filter("t", user)).select(["prompt", "chosen", "rejected"]).limit(None).to_arrow()
    texts = [t for name in ("prompt", "chosen", "rejected") for t in rows.column(name).to_pylist() if t is not None]
    del rows
    return len(texts)


def batches(store: Store, user: str) -> int:
    """The DELETE's read now: a list at a time, each dropped before the next is read (counted, as the DELETE forgets it)."""
    return sum(len(texts) for texts in store.texts_in_batches("t", [user]))


def status_kib(field: str) -> int:
    """A KiB figure of this process's /proc/self/status."""
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def measure(way: str, folder: str, user: str) -> dict:
    """One read of `way` in this process: the texts read, the Python peak (MB) and the peak RSS's growth (MB)."""
    store = Store(folder, "bench", DIM)
    store.count_of("t", [user])  # the table opened and its indexes loaded before the figures start
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from the RSS now (Linux)
    rss = status_kib("VmRSS")
    tracemalloc.start()
    texts = {"one_read": one_read, "batches": batches}[way](store, user)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grew = status_kib("VmHWM") - rss
    return {"texts": texts, "python_peak_mb": round(peak / 1e6, 1), "rss_grew_mb": round(grew * 1024 / 1e6, 1)}


def in_child(way: str, folder: str, user: str) -> dict:
    """`measure` in a fresh interpreter (this file's `--measure`)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.delete_texts_peak", "--measure", way, folder, user],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                                         os.environ.get("PYTHONPATH")]))})
    return json.loads(out.stdout.strip().splitlines()[-1])


def case(name: str, n: int, user: str, text) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        fill(folder, user, n, text)
        figures = {way: in_child(way, folder, user) for way in WAYS}
    assert figures["one_read"]["texts"] == figures["batches"]["texts"] == 3 * n, figures
    before, after = figures["one_read"]["python_peak_mb"], figures["batches"]["python_peak_mb"]
    return {"case": name, "rows": n, "fill_s": round(time.perf_counter() - began, 1), **figures,
            "python_peak_ratio": round(before / after, 1) if after else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 60_000], help="rows of ~310-character texts")
    parser.add_argument("--cjk-rows", type=int, default=600, help="rows of three 20,000-character CJK texts (0: none)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", nargs=3, metavar=("WAY", "FOLDER", "USER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    pad = "x" * 300
    cases = [case("ascii_310_chars", n, "u", lambda i, w: f"{w}{i} {pad}") for n in args.rows]
    if args.cjk_rows:
        glyph = {"q": "詞", "y": "語", "n": "字"}
        cases.append(case("cjk_20000_chars", args.cjk_rows, "cjk", lambda i, w: f"{i}" + glyph[w] * 19_999))
    if args.json:
        print(json.dumps({"cases": cases}))
        return
    for c in cases:
        for way in WAYS:
            f = c[way]
            print(f"{c['case']} rows={c['rows']} {way:8}: {f['texts']} texts, Python peak {f['python_peak_mb']} MB, "
                  f"peak RSS +{f['rss_grew_mb']} MB")
        print(f"{c['case']} rows={c['rows']}: Python peak one_read / batches = {c['python_peak_ratio']}")


if __name__ == "__main__":
    main()
