"""Cost of the pref_id claims an import makes with replicas (`pluralign.store.claims`): one put-if-absent per
id the file gives, on a local folder and on moto's S3 on loopback (a real bucket adds its round trips).
Prints ms per row for N new ids, for the same N again (each found, read and compared), for a DELETE's
`forget_user` of them (each read, then removed if unchanged), for the mover's `drop_stored` of N claimed anew once
their rows are in the table (the user's claims listed once, each read, then removed if unchanged), and for N claimed
anew then received again later (each read and its time moved on by a conditional write). Last, on a folder store of 10,000 rows
of the user, the look an import that claimed N ids afresh takes in the table's newest version before its 201
(`Store.check_newest`, session 42).

    python benchmarks/pref_id_claims.py [N] [--folder]    (--folder: without S3)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.store import StoredPreference  # noqa: E402
from pluralign.store.claims import FolderClaims, S3Claims, claim_of  # noqa: E402
from tests.s3 import S3Server  # noqa: E402


def rows(n: int, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    return {f"p-{i}": claim_of(StoredPreference(tenant="t", user_id="u", pref_id=f"p-{i}", prompt=f"Q {i}?", chosen="A.",
                                                rejected="B.", kind="comparison", created_at=now, received_at=now), False)
            for i in range(n)}


def line(claims, label: str, n: int, start: float) -> None:
    ms = (time.perf_counter() - start) * 1000
    print(f"{type(claims).__name__:13s} {label:6s} {n} ids: {ms:8.1f} ms, {ms / n:.3f} ms/row")


def timed(claims, n: int) -> None:
    now = time.time()
    wanted = rows(n, now)
    for label in ("new", "again"):
        start = time.perf_counter()
        made, taken = claims.claim("t", "u", wanted)
        assert not taken and len(made) == (n if label == "new" else 0)
        line(claims, label, n, start)
    start = time.perf_counter()  # a DELETE's step: each claim read (its time against the DELETE's) and removed
    assert claims.forget_user("t", "u", before=time.time() + 10) == n
    line(claims, "forget", n, start)
    assert len(claims.claim("t", "u", wanted)[0]) == n
    start = time.perf_counter()  # the mover's step once the rows are in the table: listed, each read and removed
    assert claims.drop_stored("t", "u", wanted) == n
    line(claims, "drop", n, start)
    assert len(claims.claim("t", "u", wanted)[0]) == n
    later = {pref_id: msgspec.structs.replace(c, received_at=now + 1) for pref_id, c in wanted.items()}
    start = time.perf_counter()  # the same rows received again later (another replica): each claim's time moved on
    assert claims.claim("t", "u", later) == ([], {})
    line(claims, "later", n, start)  # last: a folder's claims just replaced are slow to unlink (ext4 flushes them)
    claims.forget_user("t", "u")


def newest_look(n: int) -> None:
    import numpy as np

    from pluralign.store import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"{folder}/s", "bench-encoder", 8, sync_seconds=1.0)
        held = [StoredPreference(tenant="t", user_id="u", pref_id=f"h-{i}", prompt=f"Q {i}?", chosen="A.", rejected="B.",
                                 kind="comparison", created_at=1.7e9 + i, received_at=1.7e9 + i) for i in range(10_000)]
        vectors = np.ones((len(held), 8), np.float32)
        store.add_preferences(held, vectors, vectors, vectors)
        fresh = [StoredPreference(tenant="t", user_id="u", pref_id=f"p-{i}", prompt=f"Q {i}?", chosen="A.", rejected="B.",
                                  kind="comparison", created_at=1.7e9, received_at=1.7e9) for i in range(n)]
        for label, rows_looked in (("look", fresh), ("look1", fresh[:1])):
            start = time.perf_counter()
            store.check_newest(rows_looked)
            ms = (time.perf_counter() - start) * 1000
            print(f"{'Store':13s} {label:6s} {len(rows_looked)} ids: {ms:8.1f} ms, {ms / len(rows_looked):.3f} ms/row (10,000 rows held)")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1000
    with tempfile.TemporaryDirectory() as folder:
        timed(FolderClaims(folder), n)
    if "--folder" in sys.argv:
        newest_look(n)
        sys.exit()
    with S3Server("pluralign-claims") as s3:
        timed(S3Claims(s3.uri("bench"), s3.options), n)
    newest_look(n)
