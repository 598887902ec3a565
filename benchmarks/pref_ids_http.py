"""User-facing cost of session ids39's pref_id checks over HTTP, on a store of 50,000 rows: POST /v1/feedback
p50/p99 (the 201: the rows in the feedback log; the store's check runs in the mover behind it), and the 201 of
importing 10,000 rows (two bodies of 5,000: new rows, then the same file with its pref_ids again).

    cd <tree> && HF_HUB_OFFLINE=1 PYTHONPATH=. python /path/to/benchmarks/pref_ids_http.py

Run from the tree to time (its `service` and `tests.service.tiny` are imported from the working directory), e.g.
a `git worktree add --detach /tmp/old 7295532` for before. The 50,000 rows (50 users x 1,000) are written
straight into the store with random vectors; the service runs under uvicorn on 127.0.0.1 with the test suite's
tiny generator and PAL and the real MiniLM encoder. Session reviewi39.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, os.getcwd())

from tests.service.tiny import save_tiny_generator, start_service, train_tiny_pal  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def prefill(store, users: int, per_user: int) -> None:
    from pluralign.store import StoredPreference

    rng = np.random.default_rng(0)
    for u in range(users):
        rows = [StoredPreference(tenant="acme", user_id=f"big{u}", pref_id=uuid.uuid4().hex, prompt=f"prompt {u} {i}",
                                 chosen=f"chosen {u} {i}", rejected=f"rejected {u} {i}", kind="comparison", created_at=1.7e9 + i)
                for i in range(per_user)]
        vec = lambda: rng.standard_normal((per_user, store.dim), dtype=np.float32)
        store.add_preferences(rows, vec(), vec(), vec())
    store.compact()


def main() -> None:
    from pluralign.embed.encoders import SentenceEncoder

    tmp = Path(tempfile.mkdtemp(prefix="pluralign-prefids-"))
    encoder = SentenceEncoder()
    generator = save_tiny_generator(tmp / "generator")
    (tmp / "pal").mkdir()
    pal = train_tiny_pal(tmp / "pal", encoder)
    server, svc = start_service(tmp / "data", generator, pal, encoder, adapter_every=10**9)
    prefill(svc.runtime.store, 50, 1000)
    with server, svc.client("acme") as c:
        took = []
        for i in range(200):
            body = {"type": "comparison", "user": f"big{i % 50}", "prompt": f"Question number {i}?",
                    "chosen": f"A careful answer {i}.", "rejected": f"A careless answer {i}."}
            t = time.perf_counter()
            r = c.post("/v1/feedback", json=body)
            took.append(time.perf_counter() - t)
            assert r.status_code == 201, r.text
        print(f"POST /v1/feedback on {svc.runtime.store.preferences.count_rows()} rows: p50 {pct(took[20:], 50):.1f} ms, "
              f"p99 {pct(took[20:], 99):.1f} ms")
        from pluralign.data.record import Preference

        ids = "pref_id" in Preference.__struct_fields__  # before ids39 a file carried none
        lines = [json.dumps({"prompt": f"Imported question {i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}.",
                             "created_at": 1.7e9 + i, **({"pref_id": f"imp-{i:05d}"} if ids else {})}).encode() + b"\n"
                 for i in range(10_000)]
        for name in ("new rows", "the same again"):
            t = time.perf_counter()
            for half in (lines[:5000], lines[5000:]):
                r = c.post("/v1/users/importer/import", content=b"".join(half))
                assert r.status_code == 201, r.text[:300]
            print(f"import of 10,000 rows ({name}): {time.perf_counter() - t:.2f} s to the two 201s")


if __name__ == "__main__":
    main()
