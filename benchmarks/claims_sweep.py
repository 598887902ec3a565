"""The first start on a store whose earlier releases left claims of stored rows (`PrefIdClaims.sweep_stored`): U
users with R rows each stored and their claims left, on a folder store with claims (replicas), and a histories cache
holding H users being served (its budget about H histories). A new Ingestor starts (the sweep begins); at once a
reader's move of one new row (`flush_user`) hands its claim's removal to the drops' thread. The H served users
have rows and no claims. Prints how long the sweep
took, how long after the start that claim went, and how many of the H served users' histories are still cached.
A sweep run first on the drops' thread, reading each claimed user through the cache (`preferences_for`), as releases
before session 44 ran it, would remove the move's claim only after the whole sweep, and evict the served users.

    python benchmarks/claims_sweep.py [U] [R] [H]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.store import Store, StoredPreference  # noqa: E402
from pluralign.store import claims as claims_module  # noqa: E402
from pluralign.store.claims import claim_of  # noqa: E402
from pluralign.store.feedback_log import FeedbackLog  # noqa: E402
from pluralign.store.ingest import Ingestor  # noqa: E402

DIM = 384  # MiniLM's: a history's size in the cache is mostly its vectors


class Encoder:
    encoder_id = "hash"
    dim = DIM

    def encode(self, texts):
        return np.random.default_rng(len(texts)).standard_normal((len(texts), DIM)).astype(np.float32)


def row(user: str, i: int, at: float) -> StoredPreference:
    return StoredPreference(tenant="t", user_id=user, pref_id=f"{user}-p{i}", prompt=f"Q {user} {i}?", chosen="A.",
                            rejected="B.", kind="comparison", created_at=at, received_at=at)


def seed(store: Store, users: int, rows: int, served: int) -> None:
    """`users` users' rows stored, each row's claim left (an earlier release's mover killed before removing them), and
    `served` other users' rows stored (their claims gone: users of this release)."""
    at = time.time() - 3600
    batch = []
    names = [f"u{u}" for u in range(users)] + [f"s{u}" for u in range(served)]
    for n, user in enumerate(names):
        mine = [row(user, i, at) for i in range(rows)]
        if n < users:
            store.claims.claim("t", user, {r.pref_id: claim_of(r, False) for r in mine})
        batch += mine
        if len(batch) >= 4096 or n == len(names) - 1:
            vecs = Encoder().encode(batch)
            store.add_preferences(batch, vecs, vecs, vecs)
            batch = []


def run(users: int, rows: int, served: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        probe = Store(str(Path(folder) / "db"), "hash", DIM, sync_seconds=0)
        seed(probe, users, rows, served)
        history = probe.history("t", "s0").nbytes
        store = Store(str(Path(folder) / "db"), "hash", DIM, history_bytes=int(history * (served + 0.5)), sync_seconds=0)
        hot = [("t", f"s{u}") for u in range(served)]  # the users being served
        for key in hot:
            store.history(*key)
        reader = row("reader", 0, time.time())
        store.claims.claim("t", "reader", {reader.pref_id: claim_of(reader, False)})
        claim = Path(folder) / "db" / claims_module.FOLDER / claims_module._folder("t", "reader") / claims_module.key_hash(reader.pref_id)
        start = time.perf_counter()
        ingest = Ingestor(FeedbackLog(Path(folder) / "log"), store, Encoder())
        try:
            with ingest.paused():
                ingest.submit([msgspec.structs.replace(reader)], received_at=reader.received_at)
                ingest.flush_user("t", "reader")
            while claim.exists():
                time.sleep(0.005)
            dropped = time.perf_counter() - start
            ingest.claims_settled()
            swept = time.perf_counter() - start
        finally:
            ingest.close()
        kept = sum(store.histories._cached.peek(key[0], key) is not None for key in hot)
        print(f"{users} claimed users x {rows} rows, {served} served users cached: sweep {swept:6.2f} s, a move's claim "
              f"gone after {dropped:6.3f} s, served users still cached {kept}/{served}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    run(*(args + [1000, 20, 100][len(args):]))
