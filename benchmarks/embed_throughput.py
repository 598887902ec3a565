"""Embedding throughput (texts/s) for both default encoders, cold and warm cache, and UKP import+embed.

    .venv/bin/python benchmarks/embed_throughput.py --texts 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pluralign.data.ukp import load_ukp
from pluralign.embed.cache import CachedEncoder, EmbeddingCache
from pluralign.embed.encoders import CausalLMEncoder, SentenceEncoder


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--texts", type=int, default=512)
    args = parser.parse_args()

    (records, pairs), t_import = timed(lambda: load_ukp(Path(args.data_dir) / "ukp_convarg1"))
    texts = list(dict.fromkeys(t for r in records for t in (r.prompt, r.chosen, r.rejected)))
    print(f"UKP import: {len(records)} judgments, {pairs} pairs, {len(texts)} distinct texts in {t_import:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("minilm", SentenceEncoder), ("smollm2", CausalLMEncoder)):
            encoder, t_load = timed(make)
            cached = CachedEncoder(encoder, EmbeddingCache(Path(tmp) / f"{name}.sqlite"))
            sample = texts[: args.texts]
            _, cold = timed(cached.encode, sample)
            _, warm = timed(cached.encode, sample)
            print(
                f"{name}: load {t_load:.1f} s; cold {len(sample) / cold:.0f} texts/s; warm {len(sample) / warm:.0f} texts/s;"
                f" warm/cold speed-up x{cold / warm:.0f}; embedded on warm run: {cached.embedded - len(sample)}"
            )
            if name == "minilm":
                _, full = timed(cached.encode, texts)
                print(f"minilm: all {len(texts)} distinct UKP texts embedded in {full:.1f} s (import+embed {t_import + full:.1f} s)")


if __name__ == "__main__":
    main()
