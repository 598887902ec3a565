"""The per-user online model's prior on the base weight, before and after session audit55, side by side in one run.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/audit_online_prior.py --ukp

Before: the weight on the base model's margin had prior variance `base_variance` (0.5) in the weight's units; after:
at least `base_variance` in margin units (`base_weight_variance`), which differs only where the base model's margins
are below 1 (root mean square). Prints each group's prequential accuracy under both, and the one-size-fits-all
model's: the operator's reproducer (12 comparisons against a base margin of -0.3), synthetic populations of 3
users against the consensus among 9 to 27 noisy ones (8 seeds each), persona populations (MiniLM, known groups) and,
with --ukp, UKPConvArg1 by worker stance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pluralign.fairness.audit import AuditConfig, Comparisons, base_margins, principal_whitening
from pluralign.fairness.metrics import credit
from pluralign.fairness.online import OnlineLogistic, OnlineLogisticConfig, prequential, sigmoid

REPO = Path(__file__).resolve().parents[1]
DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data") if p.is_dir()), Path("../shared/data"))


def before(features: np.ndarray, n_users: int, user: np.ndarray) -> OnlineLogistic:
    """The model as it was: the base weight's prior variance `base_variance` whatever the margins' scale."""
    model = OnlineLogistic(features, n_users)
    model.var[:, 0] = OnlineLogisticConfig().base_variance
    return model


def population(features: np.ndarray, n_users: int, user: np.ndarray) -> OnlineLogistic:
    """As session audit55 had it: the prior scaled by the margins of every comparison of the audit, one scale for all."""
    return OnlineLogistic(features, n_users)


def after(features: np.ndarray, n_users: int, user: np.ndarray) -> OnlineLogistic:
    """Each user's prior scaled by its own comparisons' margins (review session audit55), as `audit` builds it."""
    return OnlineLogistic(features, n_users, user=user)


MODELS = {"before": before, "population": population, "after": after}


def features(c: Comparisons, config: AuditConfig = AuditConfig()) -> tuple[np.ndarray, np.ndarray]:
    """[base margin, whitened diff] (N, 1 + projection_dim) as `audit` builds them, and the base margin (N,)."""
    whitening = principal_whitening(c.diff, max(c.diff.shape[1], config.projection_dim), config.seed)
    margin = base_margins(c, whitening[:, : min(c.diff.shape[1], max(2, len(c) // 10))], config)
    z = c.diff @ whitening[:, : config.projection_dim]
    return np.concatenate([margin.astype(np.float32)[:, None], z], axis=1), margin


def accuracies(c: Comparisons) -> dict[str, dict[str, float]]:
    """{model: {group or "all": prequential accuracy}}, "base" the one-size-fits-all model's."""
    table, margin = features(c)
    out = {"base": credit(sigmoid(margin))}
    for name, make in MODELS.items():
        out[name] = credit(prequential(make(table, len(c.users), c.user), c.user, c.time))
    return {name: {"all": float(right.mean()), **{g: float(right[c.group == i].mean()) for i, g in enumerate(c.groups)}}
            for name, right in out.items()}


def show(title: str, figures: dict[str, dict[str, float]]) -> None:
    print(title)
    for group in figures["base"]:
        print(f"  {group:<10} before {figures['before'][group]:.3f}  population {figures['population'][group]:.3f}  "
              f"after {figures['after'][group]:.3f}  one-size-fits-all {figures['base'][group]:.3f}")


def against_consensus(seed: int, majority: int, minority: int = 3, per_user: int = 12, dim: int = 4,
                      temperature: float = 1.0) -> Comparisons:
    """`minority` users who choose against the consensus (the first direction) every time, `majority` who follow it
    in a noisy Bradley-Terry choice; random differences in `dim` dimensions."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(majority + minority), per_user)
    diff = rng.standard_normal((len(user), dim)).astype(np.float32)
    against = user >= majority
    first_wins = np.where(against, diff[:, 0] < 0, rng.random(len(user)) < sigmoid(diff[:, 0] / temperature))
    diff[~first_wins] *= -1.0
    return Comparisons(diff=diff, user=user, users=[f"u{i}" for i in range(majority + minority)],
                       group=against.astype(np.int64), groups=["majority", "minority"],
                       time=np.tile(np.arange(per_user, dtype=float), majority + minority),
                       policy_win=np.zeros(len(user), np.int8), encoder_id="synthetic")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--ukp", action="store_true", help="also UKPConvArg1 by worker_stance (MiniLM, cached)")
    args = parser.parse_args()

    table = np.full((12, 1), -0.3, np.float32)
    for name, make in MODELS.items():
        p = prequential(make(table, 1, np.zeros(12, np.int64)), np.zeros(12, np.int64), np.arange(12.0))
        print(f"reproducer, {name}: accuracy {credit(p).mean():.3f}, last prediction {p[-1]:.3f}")

    for majority, dim, temperature in [(27, 4, 1.0), (27, 4, 2.0), (27, 8, 1.0), (17, 4, 1.0), (9, 2, 1.0), (27, 8, 0.5)]:
        runs = [accuracies(against_consensus(seed, majority, dim=dim, temperature=temperature)) for seed in range(8)]
        mean = {m: {g: float(np.mean([r[m][g] for r in runs])) for g in runs[0][m]} for m in runs[0]}
        show(f"synthetic: {majority} + 3 against the consensus, 12 each, dim {dim}, temperature {temperature} (8 seeds)", mean)

    import torch

    from pluralign.data.persona import PersonaConfig, build_persona
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.encoders import SentenceEncoder
    from pluralign.fairness.audit import comparisons_from_records
    from training.common import cache_path

    torch.set_num_threads(1)
    encoder = CachedEncoder(SentenceEncoder(), EmbeddingCache(cache_path()))
    for users, per_user, weights in [(50, 60, (0.9, 0.1)), (50, 12, (0.9, 0.1)), (200, 12, (0.9, 0.1)),
                                     (20, 12, (0.85, 0.15)), (20, 12, (0.5, 0.5)), (100, 12, (0.6, 0.4))]:
        config = PersonaConfig(groups=2, group_weights=weights, users_per_group=users // 2, comparisons_per_user=per_user, seed=0)
        protocol = build_persona(config, args.data_dir)
        c = comparisons_from_records([*protocol.seen.train, *protocol.seen.val, *protocol.seen.test], encoder, "group")
        show(f"persona {users} users x {per_user}, groups {weights}", accuracies(c))
    if args.ukp:
        from pluralign.data.ukp import load_ukp

        records, _ = load_ukp(Path(args.data_dir) / "ukp_convarg1")
        show("UKPConvArg1 by worker_stance", accuracies(comparisons_from_records(records, encoder, "worker_stance")))


if __name__ == "__main__":
    main()
