"""Embedding speed: today's MiniLM (sentence-transformers on torch) vs the same model on ONNX Runtime
(fp32, and int8-quantized), side by side in one run, and the feedback backlog each drains.

    OMP_NUM_THREADS=1 python benchmarks/encoder_speed.py --texts 512 --rounds 3 --threads 2 --burst-rate 1000 --burst-seconds 20 --drain-sample 1000

1. texts/s over `--texts` distinct feedback-like texts (12-40 words), in the ingestor's batches of
   64, `--rounds` rounds interleaved across backends, with `--threads` threads (torch's intra-op threads; ONNX Runtime's intra-op threads), and
   the cosine of each backend's vectors to today's.
2. The backlog after a burst of `--burst-rate` comparison feedbacks/s for `--burst-seconds`: the real
   `FeedbackLog` + `Ingestor` (a LanceDB folder) with each backend, drained from a backlog of
   `--drain-sample` feedbacks (3 distinct texts each); the drain time of the whole burst
   (rate x seconds feedbacks) is that sample's rate scaled up, unless `--drain-sample` is 0, which
   drains the whole burst for real.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pluralign.store import Store, StoredPreference  # noqa: E402
from pluralign.store.feedback_log import FeedbackLog  # noqa: E402
from pluralign.store.ingest import Ingestor  # noqa: E402

WORDS = ("plan weekend quiet hike loud party answer short long polite direct formal casual explain example detail "
         "summary budget travel music garden recipe cook read book film evening morning friend family calm busy").split()


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS, rng.integers(12, 40))) for i in range(n)]


def encoders(threads: int):
    import torch

    from pluralign.embed.encoders import SentenceEncoder
    from pluralign.embed.onnx import OnnxMiniLM

    torch.set_num_threads(threads)
    return {
        "minilm (torch)": SentenceEncoder(),
        "minilm-onnx (fp32)": OnnxMiniLM(threads=threads),
        "minilm-onnx-int8": OnnxMiniLM(quantize=True, threads=threads),
    }


def drain(encoder, feedbacks: int, seed: int) -> float:
    """Seconds the ingestor takes to move a backlog of `feedbacks` comparisons into LanceDB."""
    folder = Path(tempfile.mkdtemp(prefix="pluralign-drain-"))
    store = Store(str(folder / "lancedb"), encoder.encoder_id, encoder.dim)
    log = FeedbackLog(folder / "log")
    words = texts(feedbacks * 3, seed)
    now = time.time()
    for i in range(feedbacks):
        row = StoredPreference(
            tenant="bench", user_id=f"user{i % 500:04d}", pref_id=uuid.uuid4().hex, prompt=words[3 * i],
            chosen=words[3 * i + 1], rejected=words[3 * i + 2], kind="comparison", created_at=now + i * 1e-6,
        )
        log.append([row]) if i % 256 == 255 else log._enqueue(log._ticket([row]))  # fill fast; one fsync per 256
    while log.backlog()[0] < feedbacks:
        time.sleep(0.01)
    began = time.perf_counter()
    # the worker thread at this process's own priority: the encoders' thread pools (torch's, ONNX
    # Runtime's) run at it too, so no backend gets a priority the others do not
    ingest = Ingestor(log, store, encoder, batch=64, nice=os.nice(0))
    while log.backlog()[0]:
        time.sleep(0.05)
    elapsed = time.perf_counter() - began
    ingest.close()
    assert store.stats()["preferences"] == feedbacks
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per backend")
    parser.add_argument("--burst-rate", type=int, default=1000, help="feedbacks/s during the burst")
    parser.add_argument("--burst-seconds", type=float, default=20)
    parser.add_argument("--drain-sample", type=int, default=1500, help="feedbacks drained per backend (0: the whole burst)")
    parser.add_argument("--skip", default="", help="comma-separated backends to leave out of the drain")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}", flush=True)
    found = encoders(args.threads)
    sample = texts(args.texts, seed=1)
    vectors, rates = {}, {name: [] for name in found}
    for encoder in found.values():
        encoder.encode(sample[:64])  # warm-up
    for _ in range(args.rounds):  # interleaved, so a change in the machine's load hits every backend alike
        for name, encoder in found.items():
            start = time.perf_counter()
            vectors[name] = encoder.encode(sample)
            rates[name].append(len(sample) / (time.perf_counter() - start))
    names = list(found)
    reference = vectors[names[0]]
    rows = []
    for name in names:
        rate = float(np.median(rates[name]))
        ratio = float(np.median(np.asarray(rates[name]) / np.asarray(rates[names[0]])))  # per round, then the median
        cosine = (vectors[name] * reference).sum(1)
        rows.append([name, rate, ratio, float(cosine.mean()), float(cosine.min())])
        print(f"{name}: {rate:.0f} texts/s (median of {args.rounds}; {ratio:.2f}x torch, median of per-round ratios), "
              f"cosine to torch mean {cosine.mean():.5f} min {cosine.min():.5f}", flush=True)
    burst = int(args.burst_rate * args.burst_seconds)
    n = args.drain_sample or burst
    part = max(1, n // args.rounds)
    spent = {row[0]: 0.0 for row in rows}
    for r in range(args.rounds):  # interleaved like the texts/s rounds: each backend drains a part per round
        for row in rows:
            if row[0] not in args.skip.split(","):
                spent[row[0]] += drain(found[row[0]], part, seed=2 + r)
    for row in rows:
        if row[0] in args.skip.split(","):
            row.append(None)
            continue
        done = part * args.rounds
        whole = spent[row[0]] * burst / done
        row.append(whole)
        print(f"{row[0]}: drained {done} feedbacks in {spent[row[0]]:.1f} s ({done / spent[row[0]]:.0f}/s); a {burst}-feedback burst: {whole:.0f} s", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print("| backend | texts/s | vs torch | cosine mean | cosine min | drain of the burst (s) |")
    print("|---|---|---|---|---|---|")
    for name, rate, ratio, mean, low, whole in rows:
        print(f"| {name} | {rate:.0f} | {ratio:.2f}x | {mean:.5f} | {low:.5f} | {'-' if whole is None else f'{whole:.0f}'} |")


if __name__ == "__main__":
    main()
