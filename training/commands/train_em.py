"""`pluralign train em`: EM over K Bradley-Terry heads on the seen users of a protocol.

    pluralign train em --protocol persona --groups 4 --out runs/em-persona4          # K chosen from the data
    pluralign train em --k 4 --protocol persona --groups 4 --out runs/em-persona4-k4
    pluralign train em --k 3 --protocol ukp --assignment soft --restarts 8 --out runs/em-ukp
    pluralign train em --k 4 --protocol persona --groups 4 --init random --out runs/em-random

K: one --k fits that K; several --k fit each; without --k, K = 1, 2, ... (up to --k-max and the number
of training users, stopping after two K without a better criterion); a --k above the number of
training users is an error before any training. Among several K the smallest K whose held-out
log-likelihood of the seen users' validation pairs (each user scored under its posterior over
heads) is within one standard error of the best is kept (pluralign.reward.model_selection).

Writes OUT/heads.safetensors, OUT/meta.json (schema version, encoder id, K, dim), OUT/users.jsonl
(each seen user's cluster and posterior) and OUT/metrics.json (the log-likelihood per iteration of
every restart, validation accuracy, ARI against the true groups on persona populations, and the
criterion per K: `k_selected`, `k_criterion`, `k_criterion_se`, `by_k`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.common import (
    DATA_DIR_HELP,
    DEFAULT_DATA_DIR,
    SEED_HELP,
    add_encoder_args,
    add_k_args,
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
    import msgspec
    from tqdm import tqdm

    from pluralign.files import ArtifactBusy, write_atomic
    from pluralign.reward.em import EM_FILES, SCHEMA_VERSION, EMConfig, EMMixture
    from pluralign.reward.features import embed_pairs
    from pluralign.reward.model_selection import search_k

    check_out(args.out, EM_FILES, "em-bt-mixture artifact", SCHEMA_VERSION)  # before any training: a wrong --out costs nothing
    protocol = load_training_protocol(args)  # `file`: --data, as every command reads a preference file
    left_out = left_out_users(protocol)  # said before the training, reported after it
    users = sorted({r.user_id for r in protocol.seen.train})
    search = k_search(args.k, args.k_max, len(users))  # before embedding or training: --k 50 on 4 users is refused
    encoder = cached_encoder(args)
    train = embed_pairs(protocol.seen.train, encoder, users, protocol.group_attribute)
    val = embed_pairs(protocol.seen.val, encoder, users, protocol.group_attribute)
    by_k: dict[str, dict] = {}
    bar = tqdm(unit="iter", file=sys.stderr, disable=args.quiet)

    def fit(k: int) -> EMMixture:
        config = EMConfig(k=k, assignment=args.assignment, init=args.init, restarts=args.restarts, max_iter=args.max_iter, l2=args.l2, seed=args.seed)
        model = EMMixture(config)
        bar.set_description(f"EM k={k}")
        by_k[str(k)] = model.fit(train, val, progress=lambda restart, ll: (bar.update(), bar.set_postfix(restart=restart, ll=f"{ll:.1f}")))
        return model

    def score(model: EMMixture):
        per_user = model.heldout_log_likelihood(val)
        by_k[str(model.config.k)]["heldout_log_likelihood"] = float(per_user.sum())
        return per_user

    model, selection, _ = search_k(fit, score, search, n_pairs=len(val))
    bar.close()
    metrics = by_k[str(selection.k_selected)]
    print_k_choice("em", args.k, search, selection)
    try:
        out = model.save(args.out, encoder_id=encoder.encoder_id)
    except ArtifactBusy as exc:  # another trainer is saving into --out now
        raise ValueError(f"--out: {exc}") from None

    fit_result = model.fit_result
    report = {
        "model": "em", "protocol": protocol.name, "k": selection.k_selected, "assignment": args.assignment,
        "encoder_id": encoder.encoder_id, "users": len(users), **left_out, "train_pairs": len(train),
        **metrics, "log_likelihood_curve": fit_result.log_likelihood, "restart_curves": fit_result.restarts,
        **selection.report(), "by_k": by_k,
    }
    clusters = model.user_clusters()
    if protocol.true_groups and clusters:
        from sklearn.metrics import adjusted_rand_score

        report["ari"] = float(adjusted_rand_score([protocol.true_groups[u] for u in users], [clusters[u] for u in users]))
    write_atomic(Path(out) / "metrics.json", msgspec.json.format(msgspec.json.encode(report)))
    print_json(report)
    return 0


def register(sub) -> None:
    p = sub.add_parser("em", help="EM mixture of K Bradley-Terry reward heads (MaxMin-RLHF)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_k_args(p, "reward heads")
    p.add_argument("--protocol", default="persona", choices=["ukp", "persona", "file"],
                   help=file_protocol_help())
    p.add_argument("--data", default=None, help="--protocol file: a JSONL or Parquet preference file (or a Dataset.save_to_disk folder, or one of its .arrow files)")
    p.add_argument("--groups", type=number(int, minimum=2, below=65), default=None, help="persona: number of true groups, 2 to 64 (default 4)")
    p.add_argument("--assignment", default="hard", choices=["hard", "soft"],
                   help="hard: each user to their best head; soft: posterior weights over the heads (default %(default)s)")
    p.add_argument("--init", default="kmeans", choices=["kmeans", "random"], help="k-means on per-user fits, or random groups")
    p.add_argument("--restarts", type=number(int, minimum=1), default=4,
                   help="independent initializations; the best final objective is kept (default %(default)s)")
    p.add_argument("--max-iter", type=number(int, minimum=1), default=50, help="most EM iterations per restart (default %(default)s)")
    p.add_argument("--l2", type=number(float, minimum=0), default=1.0, help="ridge strength on each head")
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=DATA_DIR_HELP)
    p.add_argument("--out", required=True, help="artifact folder to write: new, empty, or an earlier EM artifact (replaced; a later release's is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_encoder_args(p)
    p.set_defaults(func=run)
