"""Embedding throughput (texts/s) for both default encoders, cold and warm cache, and UKP import+embed.

    .venv/bin/python benchmarks/embed_throughput.py --texts 512
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pluralign.data.persona import load_trait
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

    statements = [s.statement for s in load_trait(Path(args.data_dir) / "anthropic_persona", "politically-liberal")]
    sets = {"UKP arguments (long)": texts[: args.texts], "persona statements (short)": statements[: args.texts]}

    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("minilm", SentenceEncoder), ("smollm2", CausalLMEncoder)):
            encoder, t_load = timed(make)
            cached = CachedEncoder(encoder, EmbeddingCache(Path(tmp) / f"{name}.sqlite"))
            print(f"{name}: load {t_load:.1f} s")
            for label, sample in sets.items():
                before = cached.embedded
                _, cold = timed(cached.encode, sample)
                middle = cached.embedded
                _, warm = timed(cached.encode, sample)
                print(
                    f"  {label}: {len(sample)} texts; cold {len(sample) / cold:.0f} texts/s ({middle - before} embedded);"
                    f" warm {len(sample) / warm:.0f} texts/s ({cached.embedded - middle} embedded); warm/cold x{cold / warm:.0f}"
                )
            if name == "minilm":
                fresh = CachedEncoder(encoder, EmbeddingCache(Path(tmp) / "full.sqlite"))
                _, full = timed(fresh.encode, texts)
                print(f"minilm: all {len(texts)} distinct UKP texts embedded in {full:.1f} s (import+embed {t_import + full:.1f} s)")


if __name__ == "__main__":
    main()
