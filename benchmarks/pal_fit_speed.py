"""Few-shot user fit: time per `fit_user` call for k comparisons and K prototypes, on the CPU.

    .venv/bin/python benchmarks/pal_fit_speed.py --variants a b --K 2 4 8 --shots 5 20 100

For each variant and K, trains PAL on the 4-group persona population (MiniLM embeddings from the
cache), then fits every unseen user (40) from their first k support comparisons, one call per user
and `--repeats` passes, exactly as a feedback request would: embeddings in, K logits out, including
the one forward pass of the shared MLPs. Prints wall-clock and process-CPU median / p99 per call,
the fitted users' query accuracy, and the training throughput.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pluralign.data.persona import PersonaConfig, build_persona  # noqa: E402
from pluralign.reward.features import embed_pairs  # noqa: E402
from pluralign.reward.pal import PALConfig, PALTrainConfig, fit_user, train_pal  # noqa: E402
from training.common import cache_path  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["a", "b"])
    p.add_argument("--K", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--shots", type=int, nargs="+", default=[5, 20, 100])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default="/work/shared/data")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.encoders import make_encoder

    encoder = CachedEncoder(make_encoder("minilm"), EmbeddingCache(cache_path()))
    protocol = build_persona(PersonaConfig(groups=4, support_size=max(args.shots)), args.data_dir)
    users = sorted({r.user_id for r in protocol.seen.train})
    train = embed_pairs(protocol.seen.train, encoder, users)
    val = embed_pairs(protocol.seen.val, encoder, users)
    newcomers = sorted(protocol.unseen.support)
    support = {u: embed_pairs(protocol.unseen.support[u], encoder, [u]) for u in newcomers}
    query = {u: embed_pairs(protocol.unseen.query[u], encoder, [u]) for u in newcomers}

    print("| variant | K | k | median ms (wall) | p99 ms (wall) | median ms (CPU) | p99 ms (CPU) | query acc | train pairs/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        for K in args.K:
            result = train_pal(train, val, PALConfig(variant=variant, k=K), PALTrainConfig(max_epochs=args.epochs))
            model = result.model.cpu().eval()
            prior = result.user_weights.prior()
            for k in args.shots:
                wall, cpu, correct = [], [], []
                for rep in range(args.repeats):
                    for u in newcomers:
                        s = support[u]
                        prompt, chosen, rejected = s.prompt[:k], s.chosen[:k], s.rejected[:k]
                        t0, c0 = time.perf_counter(), time.process_time()
                        logits = fit_user(model, prompt, chosen, rejected, prior_logits=prior)
                        wall.append(time.perf_counter() - t0)
                        cpu.append(time.process_time() - c0)
                        if rep == 0:
                            q = query[u]
                            with torch.no_grad():
                                correct.append(float((model.preference_prob(logits, q.prompt, q.chosen, q.rejected) > 0.5).float().mean()))
                w, c = np.array(wall) * 1e3, np.array(cpu) * 1e3
                print(f"| {variant} | {K} | {k} | {np.median(w):.2f} | {np.percentile(w, 99):.2f} | {np.median(c):.2f} | "
                      f"{np.percentile(c, 99):.2f} | {np.mean(correct):.3f} | {result.metrics['pairs_per_second']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
