"""Cost of the pref_id claims an import makes with replicas (`pluralign.store.claims`): one put-if-absent per
id the file gives, on a local folder and on moto's S3 on loopback (a real bucket adds its round trips).
Prints ms per row for N new ids, for the same N again (each found, read and compared), and for a DELETE's\n`forget_user` of them (each read, then removed).

    python benchmarks/pref_id_claims.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.store import StoredPreference  # noqa: E402
from pluralign.store.claims import FolderClaims, S3Claims, claim_of  # noqa: E402
from tests.s3 import S3Server  # noqa: E402


def rows(n: int) -> dict:
    now = time.time()
    return {f"p-{i}": claim_of(StoredPreference(tenant="t", user_id="u", pref_id=f"p-{i}", prompt=f"Q {i}?", chosen="A.",
                                                rejected="B.", kind="comparison", created_at=now, received_at=now), False)
            for i in range(n)}


def timed(claims, n: int) -> None:
    wanted = rows(n)
    for label in ("new", "again"):
        start = time.perf_counter()
        made, taken = claims.claim("t", "u", wanted)
        ms = (time.perf_counter() - start) * 1000
        assert not taken and len(made) == (n if label == "new" else 0)
        print(f"{type(claims).__name__:13s} {label:5s} {n} ids: {ms:8.1f} ms, {ms / n:.3f} ms/row")
    start = time.perf_counter()  # a DELETE's step: each claim read (its time against the DELETE's) and removed
    assert claims.forget_user("t", "u", before=time.time() + 1) == n
    ms = (time.perf_counter() - start) * 1000
    print(f"{type(claims).__name__:13s} {'forget':6s}{n} ids: {ms:8.1f} ms, {ms / n:.3f} ms/row")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as folder:
        timed(FolderClaims(folder), n)
    with S3Server("pluralign-claims") as s3:
        timed(S3Claims(s3.uri("bench"), s3.options), n)
