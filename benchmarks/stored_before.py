"""What a resumed DELETE's look at whether a returning user's rows from before it are still stored costs
(`service.users.services._stored_before`, called by `forget_before` inside the store's maintenance turn, which every
tenant's DELETE, import forgetting and compaction waits for). Releases before session jobs53 read every row of the user
(`Store.preferences_for`: their history, vectors and all when not cached, then one Python object per row) to ask
whether any was received before the DELETE began; now it is one count (`Store.holds_received_before`, the
`received_before` filter every DELETE step deletes by). A local store with 20 other users of 50 rows and one user of
`--rows` rows each, their vectors `--dim` wide (MiniLM's 384 by default). The same DELETE's read of the texts it forgets
from the embedding caches (`_forget_vectors`, also in the turn, also in every DELETE's steps) is timed beside it:
every row read before, their texts alone now (`Store.texts_in_batches`).

    OMP_NUM_THREADS=1 python -m benchmarks.stored_before --rows 10000 100000

Prints one line per size: milliseconds of each way (mean of `--repeat`, after one warm-up), the history's cache emptied
before each cold read (as a DELETE resumed at start, or for a user not read lately, finds it), for a DELETE begun after
the rows were received (they are still stored: True) and one begun before (False), and whether both ways agree.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from pluralign.store import Store, StoredPreference

CHUNK = 5000  # rows per append


def rows(user: str, n: int, dim: int, start: int = 0) -> tuple[list[StoredPreference], np.ndarray, np.ndarray, np.ndarray]:
    prefs = [StoredPreference(tenant="t", user_id=user, pref_id=f"{user}-{start + i}", prompt=f"question {start + i}", chosen="yes",
                              rejected="no", kind="comparison", created_at=time.time()) for i in range(n)]
    vecs = np.random.default_rng(start).standard_normal((n, dim)).astype(np.float32)
    return prefs, vecs, vecs, vecs


def read_every_row(store: Store, before: float) -> bool:
    """The store's half of `_stored_before` in releases before session jobs53."""
    return any(p.received() < before for p in store.preferences_for("t", "u")[0])


def texts_of_every_row(store: Store, before: float) -> list[str]:
    """The store's half of `_forget_vectors(before)` in releases before session jobs53: the texts of every row read."""
    return sorted(t for p in store.preferences_for("t", "u")[0] if p.received() < before for t in (p.prompt, p.chosen, p.rejected))


def mean_ms(call, repeat: int, cold: Store | None = None) -> tuple[float, object]:
    """Mean milliseconds of `call()` over `repeat` calls after a warm-up, and what it returned; `cold`: that store's
    cached history of user u dropped before each call (not timed)."""
    answer = call()
    spent = 0.0
    for _ in range(repeat):
        if cold is not None:
            cold.histories.invalidate([("t", "u")])
        began = time.perf_counter()
        answer = call()
        spent += time.perf_counter() - began
    return spent / repeat * 1000, answer


def measure(n: int, dim: int, repeat: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "bench", dim)
        for other in range(20):
            store.add_preferences(*rows(f"o{other}", 50, dim))
        began = time.time()
        for start in range(0, n, CHUNK):
            store.add_preferences(*rows("u", min(CHUNK, n - start), dim, start))
        assert store.count_of("t", ["u"]) == n
        after = time.time()
        figures = []
        for before, name in ((after, "rows from before it stored"), (began - 1.0, "none from before it")):
            cold, old_cold = mean_ms(lambda b=before: read_every_row(store, b), repeat, cold=store)
            warm, old_warm = mean_ms(lambda b=before: read_every_row(store, b), repeat)
            count, new = mean_ms(lambda b=before: store.holds_received_before("t", "u", b), repeat)
            assert old_cold == old_warm == new, (name, old_cold, old_warm, new)
            texts_cold, old_texts = mean_ms(lambda b=before: texts_of_every_row(store, b), repeat, cold=store)
            texts, new_texts = mean_ms(lambda b=before: [t for part in store.texts_in_batches("t", ["u"], b) for t in part], repeat)
            assert old_texts == sorted(new_texts), name
            figures.append(f"{name} ({new}): every row read {cold:.1f} ms cold, {warm:.1f} ms cached; one count {count:.1f} ms; "
                           f"their texts ({len(new_texts)}): from every row read {texts_cold:.1f} ms cold, alone {texts:.1f} ms")
    return f"rows={n} dim={dim}: " + "; ".join(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for n in args.rows:
        print(measure(n, args.dim, args.repeat), flush=True)


if __name__ == "__main__":
    main()
