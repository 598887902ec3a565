"""What /health's `vectors_owed` figure costs (`service.users.vectors.OwedVectors.owed`, read on the event loop by /health
and at each scrape by /metrics): the count the object keeps (session ops62) against a listing of the `vectors-owed/`
folder (`OwedVectors._files`, what `owed()` was before ops62: two globs, sorted), with `--files` purges owed there.

    python -m benchmarks.owed_count --json
    python -m benchmarks.owed_count --files 1000 20000 --repeat 20

Each size: a temp folder with that many `*.owed` files (small, as a purge of a few keys owed to one cache writes), an
`OwedVectors` made over it (its start's listing), then each way called `--repeat` times. Prints the mean ms of one
figure each way, and both figures (which must agree); `--json`: one object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from service.users.vectors import OwedVectors

OWED = b'{"version":1,"caches":["/nowhere/embeddings.sqlite"],"keys":[]}'


def mean_ms(call, repeat: int) -> tuple[float, int]:
    answer = call()
    began = time.perf_counter()
    for _ in range(repeat):
        answer = call()
    return round((time.perf_counter() - began) / repeat * 1000, 4), answer


def measure(files: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vectors-owed"
        folder.mkdir()
        for _ in range(files):
            (folder / f"{uuid.uuid4().hex}.owed").write_bytes(OWED)
        owed = OwedVectors(folder)
        listed_ms, listed = mean_ms(lambda: len(owed._files()), repeat)
        kept_ms, kept = mean_ms(owed.owed, repeat)
    assert listed == kept == files, (listed, kept, files)
    return {"files": files, "listing_ms": listed_ms, "kept_count_ms": kept_ms,
            "ratio": round(listed_ms / kept_ms) if kept_ms else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 20_000], help="owed purges' files in the folder")
    parser.add_argument("--repeat", type=int, default=20, help="figures read each way")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [measure(n, args.repeat) for n in args.files]
    if args.json:
        print(json.dumps({"sizes": sizes}))
        return
    for s in sizes:
        print(f"{s['files']} owed files: listing {s['listing_ms']} ms, kept count {s['kept_count_ms']} ms per figure "
              f"(x{s['ratio']})")


if __name__ == "__main__":
    main()
