"""What a reader's move waits for on a store on S3 with claims (replicas): moto's S3 on loopback, a store whose
`pref_id_claims/` it holds, N rows of one user claimed (as an import claims them) and waiting in the feedback log.
The reader (`Ingestor.flush_user`, before a GET of the user's history) embeds and commits them, and their claims go
(`PrefIdClaims.drop_named`: the user's folder listed, each claim read, then removed if unchanged). The drops' thread does that
removal; `--inline` makes it the read's, in its own thread (as releases before session 43 did), for the comparison. Prints the read's ms and, after it, the ms until the claims are gone.

    python benchmarks/claims_on_read.py [N] [--inline]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.store import Store, StoredPreference  # noqa: E402
from pluralign.store import claims as claims_module  # noqa: E402
from pluralign.store.claims import claim_of  # noqa: E402
from pluralign.store.feedback_log import FeedbackLog  # noqa: E402
from pluralign.store.ingest import Ingestor  # noqa: E402
from tests.s3 import S3Server  # noqa: E402
from tests.service.test_feedback_log import HashEncoder  # noqa: E402

DIM = 8


def run(n: int, inline: bool) -> None:
    with S3Server("pluralign-bench-claims43") as s3, tempfile.TemporaryDirectory() as folder:
        store = Store(s3.uri("read"), "hash", DIM, sync_seconds=0, storage_options=s3.options)
        now = time.time()
        rows = [StoredPreference(tenant="t", user_id="u", pref_id=f"p-{i}", prompt=f"Q {i}?", chosen="A.", rejected="B.",
                                 kind="comparison", created_at=now, received_at=now) for i in range(n)]
        assert len(store.claims.claim("t", "u", {r.pref_id: claim_of(r, False) for r in rows})[0]) == n
        ingest = Ingestor(FeedbackLog(Path(folder) / "log"), store, HashEncoder())
        if inline:  # the removal in the reader's thread, as releases before session 43 did
            ingest._drop_claims = lambda notes, background=False: Ingestor._drop_claims(ingest, notes, False)
        try:
            with ingest.paused():
                ingest.submit([msgspec.structs.replace(r) for r in rows], received_at=now)
                start = time.perf_counter()
                assert ingest.flush_user("t", "u") == n
                read = time.perf_counter() - start
                ingest.claims_settled()
                settled = time.perf_counter() - start
            assert store.claims._names(claims_module._folder("t", "u")) == []
        finally:
            ingest.close()
        how = "inline (as before)" if inline else "background"
        print(f"{n} rows, removal {how:18s}: read {read * 1000:8.1f} ms, claims gone after {settled * 1000:8.1f} ms")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(int(args[0]) if args else 500, "--inline" in sys.argv)
