"""`pluralign train pal`: train a PAL mixture reward model, write a versioned checkpoint and metrics.

    pluralign train pal --variant a --protocol persona --groups 4 --out artifacts/pal-a-persona
    pluralign train pal --variant a --k 4 --protocol persona --groups 4 --out artifacts/pal-a-k4
    pluralign train pal --variant b --k 2 4 8 --protocol ukp --out artifacts/pal-b-ukp
    pluralign train pal --k 2 --protocol file --data feedback.jsonl --out artifacts/pal-service

Trains on the protocol's seen users (early stopping on their validation pairs). The number of
prototypes K: one --k trains that K; several --k train one model per K; without --k, K = 1, 2, ...
(up to --k-max and the number of training users, stopping after two K without a better
criterion). A --k above the number of training users is an error before any training. Among several K the checkpoint
kept is the smallest K whose held-out log-likelihood of the seen users' validation pairs is within
one standard error of the best (pluralign.reward.model_selection). The --out folder receives
model.safetensors, meta.json, user_weights.json (see pluralign.reward.pal_checkpoint) and
metrics.json (every K, with its criterion). The JSON line reports `chosen_k` (= `k_selected`),
`by_k` and the criterion per K (`k_criterion`, `k_criterion_se`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from training.common import (
    DATA_DIR_HELP,
    DEFAULT_DATA_DIR,
    SEED_HELP,
    add_encoder_args,
    add_k_args,
    add_threads_arg,
    cached_encoder,
    check_mixture_options,
    check_out,
    file_protocol_help,
    k_search,
    left_out_users,
    load_training_protocol,
    number,
    print_json,
    print_k_choice,
    seed_number,
)


def run(args: argparse.Namespace) -> int:
    check_mixture_options(args)  # before the imports below (torch: seconds)
    import numpy as np
    import torch
    from tqdm import tqdm

    from pluralign.evaluation import accuracy, macro
    from pluralign.files import ArtifactBusy, write_atomic
    from pluralign.reward.features import embed_pairs
    from pluralign.reward.model_selection import search_k
    from pluralign.reward.pal import PALConfig, PALTrainConfig, save_pal, train_pal
    from pluralign.reward.pal_checkpoint import PAL_FILES, PAL_SCHEMA
    from pluralign.reward.pal_preference import heldout_log_likelihood

    check_out(args.out, PAL_FILES, "PAL checkpoint", PAL_SCHEMA)  # before any training: a wrong --out costs nothing
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol = load_training_protocol(args)  # `file`: --data, as every command reads a preference file
    left_out = left_out_users(protocol)  # said before the training, reported after it
    users = sorted({r.user_id for r in protocol.seen.train})
    search = k_search(args.k, args.k_max, len(users))  # before embedding or training: --k 50 on 4 users is refused
    encoder = cached_encoder(args)
    train, val, test = (embed_pairs(split, encoder, users, protocol.group_attribute)
                        for split in (protocol.seen.train, protocol.seen.val, protocol.seen.test))
    train_config = PALTrainConfig(
        lr_shared=args.lr_shared, lr_user=args.lr_user, batch_size=args.batch_size, max_epochs=args.epochs,
        max_pairs=args.max_pairs or None, seed=args.seed,
    )
    runs: dict[str, dict[str, float]] = {}

    def fit(k: int):
        config = PALConfig(variant=args.variant, k=k, input_dim=encoder.dim, latent_dim=args.latent_dim, hidden=args.hidden)
        bar = tqdm(total=train_config.epochs_for(len(train)), desc=f"pal-{args.variant} K={k}", unit="epoch", file=sys.stderr)

        def progress(epoch: int, metrics: dict[str, float]) -> None:
            bar.update()
            bar.set_postfix(val_acc=f"{metrics['val_acc']:.3f}", val_loss=f"{metrics['val_loss']:.3f}")

        result = train_pal(train, val, config, train_config, progress=progress)
        bar.close()
        logits, _ = result.user_weights.stack(test.users)
        device = next(result.model.parameters()).device
        seen_test = test.to(device)
        with torch.no_grad():
            prob = result.model.preference_prob(
                logits.to(device)[seen_test.user], seen_test.prompt, seen_test.chosen, seen_test.rejected
            ).cpu().numpy()
        correct = accuracy(prob)
        runs[str(k)] = {**result.metrics, "test_macro_acc": macro(correct, test.user.numpy()), "test_pooled_acc": float(correct.mean())}
        return result

    def score(result) -> np.ndarray:
        per_user = heldout_log_likelihood(result.model, result.user_weights, val)
        runs[str(result.model.config.k)]["heldout_log_likelihood"] = float(per_user.sum())
        return per_user

    result, selection, _ = search_k(fit, score, search, n_pairs=len(val))
    k = selection.k_selected
    metrics = runs[str(k)]
    print_k_choice(f"pal-{args.variant}", args.k, search, selection)
    out = Path(args.out)
    try:
        save_pal(out, result.model, result.user_weights, encoder.encoder_id, metrics)
    except ArtifactBusy as exc:  # another trainer is saving into --out now
        raise ValueError(f"--out: {exc}") from None
    report = {
        "variant": args.variant, "protocol": protocol.name, "encoder_id": encoder.encoder_id, "chosen_k": k,
        "seen_users": len(users), "train_pairs": len(train), "val_pairs": len(val), "test_pairs": len(test),
        **left_out, "by_k": runs, **selection.report(), "out": str(out), "artifact": str(out),
        "val_acc": metrics["val_acc"],  # of the kept K: the job runner's promotion compares it
    }
    write_atomic(out / "metrics.json", msgspec.json.format(msgspec.json.encode(report)))
    print_json(report)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pal", help="PAL mixture reward model (ideal points or prompt-conditioned prototypes)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["a", "b"], default="a", help="a: ideal point; b: prompt-conditioned cosine")
    add_k_args(p, "prototypes")
    p.add_argument("--protocol", required=True, choices=["ukp", "persona", "file"],
                   help=file_protocol_help())
    p.add_argument("--data", default=None, help="--protocol file: a JSONL or Parquet preference file (or a Dataset.save_to_disk folder, or one of its .arrow files)")
    p.add_argument("--groups", type=number(int, minimum=2, below=65), default=None, help="persona: number of groups, 2 to 64 (default 4)")
    p.add_argument("--out", required=True, help="checkpoint folder to write: new, empty, or an earlier PAL checkpoint (replaced; a later release's is refused)")
    p.add_argument("--epochs", type=number(int, minimum=1), default=40, help="most epochs (early stopping on validation loss)")
    p.add_argument("--max-pairs", type=number(int, minimum=0), default=300_000, help="budget of pair visits (epochs x pairs); 0: none")
    p.add_argument("--batch-size", type=number(int, minimum=1), default=256, help="comparisons per optimizer step (default %(default)s)")
    p.add_argument("--lr-shared", type=number(float, above=0), default=2e-3, help="Adam learning rate of the shared parameters")
    p.add_argument("--lr-user", type=number(float, above=0), default=5e-2, help="Adam learning rate of the training users' logits")
    p.add_argument("--latent-dim", type=number(int, minimum=1), default=64,
                   help="size of the space where responses meet ideal points (default %(default)s)")
    p.add_argument("--hidden", type=number(int, minimum=1), default=256, help="width of the hidden layer of every MLP (default %(default)s)")
    add_threads_arg(p)
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=DATA_DIR_HELP)
    add_encoder_args(p)
    p.set_defaults(func=run)
