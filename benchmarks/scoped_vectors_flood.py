"""What keeping a call's fresh vectors costs `pluralign.embed.cache.ScopedVectors` (the service's pool and score vectors)
once full, and whether one tenant's flood of fresh texts leaves the other tenants' vectors in place (session http54:
eviction fair between scopes, the one holding the most giving up its least recently used).

    python -m benchmarks.scoped_vectors_flood                   # 64 tenants, a 4 MiB bound, 384-d vectors
    python -m benchmarks.scoped_vectors_flood --tenants 1000 --json

No encoder runs (a stand-in returns ones): the figure is the cache's own work under its lock, per call of `--texts`
fresh texts. Every other call is the flooding tenant's; the calls between go round the other tenants. Prints the
median and the slowest call in ms, and how many of the quiet tenants' vectors, read once more at the end, had to be
embedded again (0: none evicted by the flood).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.pool_vectors import printed


class Ones:
    encoder_id, dim = "bench/ones", 384

    def __init__(self):
        self.embedded = 0

    def encode(self, texts):
        self.embedded += len(texts)
        return np.ones((len(texts), self.dim), np.float32)


def main(argv: list[str] | None = None) -> None:
    from pluralign.embed.cache import ScopedVectors

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=64, help="quiet tenants beside the flooding one")
    parser.add_argument("--texts", type=int, default=100, help="fresh texts per call")
    parser.add_argument("--mib", type=int, default=4, help="the bound, MiB")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("tenants", "texts", "mib"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    kept, encoder = ScopedVectors(max_bytes=args.mib << 20), Ones()
    quiet = {f"tenant-{i}": [f"tenant-{i} pool {j}" for j in range(4)] for i in range(args.tenants)}
    calls: list[float] = []
    for n in range(2 * args.tenants + 300):
        if n % 2:
            scope, texts = "flooder", [f"fresh {n} {i}" for i in range(args.texts)]
        else:
            scope = f"tenant-{(n // 2) % args.tenants}"
            texts = quiet[scope]
        began = time.perf_counter()
        kept.encode(encoder, scope, texts)
        calls.append((time.perf_counter() - began) * 1000)
    before = encoder.embedded
    for scope, texts in quiet.items():
        kept.encode(encoder, scope, texts)
    out = {"tenants": args.tenants, "texts": args.texts, "mib": args.mib, "kept": len(kept),
           "quiet_embedded_again": encoder.embedded - before}
    printed({"call": calls}, out, args.json,
            f"{args.texts} fresh texts a call, {args.tenants} quiet tenants, {args.mib} MiB: {out['kept']} kept, "
            f"{out['quiet_embedded_again']} of the quiet tenants' {4 * args.tenants} texts embedded again")


if __name__ == "__main__":
    main()
