"""What the first `POST /v1/users/{id}/next-comparison` with `{}` costs on a replica that did not take the tenant's
`PUT /v1/calibration-pool` (another replica behind the load balancer, or this one restarted), in releases before session calib55 and from
it on.

    python -m benchmarks.calibration_replicas                 # 32 items of 2 answers (96 texts), MiniLM, 5 repeats
    python -m benchmarks.calibration_replicas --items 64 --json

Times `service.users.services._supplied_pairs`, the step that lays out the stored pool's vectors, for a pool stored
by "replica a" in a temp pools folder (`write_pool`, its vectors beside it as the PUT stores them), on "replica b":

- `embedded`: b embeds every text (what b's first `{}` paid before calib55: the vectors were in a's memory only);
- `read`: b holds nothing and reads the vectors stored beside the pool (`CalibrationVectors`, its first `{}` now);
- `held`: b's later questions of the same version (its vectors held in memory).

MiniLM on torch, the service's default encoder. A request takes at most 64 answers in all, so 32 items of 2 answers
is the largest pool a PUT stores; `--items 64` (128 answers) times a pool twice that, beyond what the API takes.
Prints the median and the slowest of `--repeats` calls, in ms.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

from benchmarks.pool_vectors import pool_of, printed, timed


def main(argv: list[str] | None = None) -> None:
    from pluralign.embed.cache import ScopedVectors, encoder_cache_id
    from pluralign.embed.encoders import make_encoder
    from service.calibration.pools import read_pool, write_pool
    from service.calibration.vectors import CalibrationVectors
    from service.runtime import CALIBRATION_VECTOR_BYTES, POOL_VECTOR_BYTES
    from service.users.services import _supplied_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=32, help="prompts in the pool (32 of 2 answers: the most a PUT takes)")
    parser.add_argument("--answers", type=int, default=2, help="answers per prompt (2-8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("items", "answers", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    encoder = make_encoder("minilm")
    encoder.encode(["warm up the model"])  # its first call loads the weights
    items = pool_of(args.items, args.answers)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "calibration-pools"
        texts = [*(p for p, _ in items), *(a for _, answers in items for a in answers)]
        write_pool(folder, "bench", items, vectors=(encoder_cache_id(encoder), encoder.encode(texts)))  # replica a's PUT
        stored = read_pool(folder, "bench")
        b = SimpleNamespace(encoder=encoder, pool_vectors=ScopedVectors(POOL_VECTOR_BYTES),
                            calibration_vectors=CalibrationVectors(CALIBRATION_VECTOR_BYTES),
                            settings=SimpleNamespace(calibration_pools_path=folder))

        def embedded():
            b.pool_vectors.forget_scope("bench")
            _supplied_pairs(b, "bench", stored.items())

        def read():
            b.calibration_vectors.forget("bench")
            _supplied_pairs(b, "bench", stored.items(), stored)

        figures = {"embedded": timed(embedded, args.repeats), "read": timed(read, args.repeats),
                   "held": timed(lambda: _supplied_pairs(b, "bench", stored.items(), stored), args.repeats)}
        assert b.calibration_vectors.embedded == 0, "replica b embedded a text of the stored pool"
        size = (folder / f"{Path(next(folder.glob('*.vectors'))).name}").stat().st_size
    out = {"items": args.items, "texts": len(texts), "vectors_file_bytes": size, "encoder": encoder.encoder_id,
           "repeats": args.repeats}
    printed(figures, out, args.json, f"pool of {args.items} items, {len(texts)} texts ({size:,} bytes of vectors beside it), "
                                     f"{encoder.encoder_id}, {args.repeats} repeats")


if __name__ == "__main__":
    main()
