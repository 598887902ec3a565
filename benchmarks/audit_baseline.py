"""The fairness audit's one-size-fits-all (base) model on UKPConvArg1: its accuracy, the personalization gain the audit
reports against it, and the time of its cross-fitted fit, for the fit of releases before session 49 and this release's.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.audit_baseline --data-dir ../shared/data \
        --cache .cache/pluralign/test-embeddings.sqlite --rounds 2

Arms, run in one process, in turn each round (the machine is shared: compare within a round):
- `newton-64`: the fit of releases before session 49, copied here: Newton (25 steps) on the top 64 whitened principal directions;
- `newton-all`: the same Newton on every direction (384 for MiniLM), what trial48b measured (0.746);
- `lbfgs-all`: the library's fit now (`pluralign.fairness.audit.fit_logistic`: L-BFGS on every direction).

Every arm sees the same comparisons (every non-tie UKP judgment, grouped by `worker_stance`), the same cross-fitting
halves, the same 20,000-row sample a fold and ridge strength 1; each arm's margins are given to the same audit
(`Comparisons.base_margin`), so the personalized models differ only by the base margin they start from. Prints one
row per arm and round, then a JSON line of every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from pluralign.fairness.audit import (
    AuditConfig,
    Comparisons,
    audit,
    base_margins,
    comparisons_from_records,
    fit_logistic,
)
from pluralign.fairness.online import sigmoid, single_threaded


def newton_logistic(z: np.ndarray, l2: float, steps: int = 25) -> np.ndarray:
    """The base model's fit in releases before session 49 (their `fit_logistic`): ridge logistic regression by Newton's method."""
    z = z.astype(np.float64)
    w = np.zeros(z.shape[1])
    eye = np.eye(z.shape[1])
    for _ in range(steps):
        p = sigmoid(z @ w)
        grad = -z.T @ (1.0 - p) + l2 * w
        hessian = (z * (p * (1.0 - p))[:, None]).T @ z + l2 * eye
        step = np.linalg.solve(hessian, grad)
        w = w - step
        if np.abs(step).max() < 1e-6:
            break
    return w.astype(np.float32)


def margins(c: Comparisons, dims: int | None, solver) -> tuple[np.ndarray, float]:
    """(the cross-fitted base margin (N,), seconds) with `solver` on the top `dims` directions (None: every one)."""
    import pluralign.fairness.audit as module
    from pluralign.fairness.audit import principal_whitening

    config = AuditConfig(base_dim=dims)
    start = time.perf_counter()
    with single_threaded():
        whitening = principal_whitening(c.diff, dims or c.diff.shape[1], config.seed)
        kept, module.fit_logistic = module.fit_logistic, solver
        try:
            margin = base_margins(c, whitening, config)
        finally:
            module.fit_logistic = kept
    return margin, time.perf_counter() - start


ARMS = {"newton-64": (64, newton_logistic), "newton-all": (None, newton_logistic), "lbfgs-all": (None, fit_logistic)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--cache", default=".cache/pluralign/test-embeddings.sqlite")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    args = parser.parse_args()

    from pluralign.data.ukp import load_ukp
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.named import LazyEncoder

    records = load_ukp(Path(args.data_dir) / "ukp_convarg1")[0]
    encoder = CachedEncoder(LazyEncoder("minilm"), EmbeddingCache(Path(args.cache)))
    c = comparisons_from_records(records, encoder, "worker_stance")
    print(f"UKPConvArg1: {len(c)} comparisons, {len(c.users)} workers, d={c.diff.shape[1]}; load {os.getloadavg()[0]:.1f}")
    rows = []
    for r in range(args.rounds):
        for arm in args.arms:
            dims, solver = ARMS[arm]
            margin, fit_s = margins(c, dims, solver)
            start = time.perf_counter()
            report = audit(dataclasses.replace(c, base_margin=margin), "worker_stance", AuditConfig(resamples=200))
            audit_s = time.perf_counter() - start
            o = report.overall
            row = {"round": r, "arm": arm, "base_accuracy": round(o.base_accuracy, 4),
                   "personalized_accuracy": round(o.personalized_accuracy, 4), "gain": round(o.gain, 4),
                   "base_fit_s": round(fit_s, 2), "rest_of_audit_s": round(audit_s, 2), "load": round(os.getloadavg()[0], 1)}
            rows.append(row)
            print(f"{arm:>11}  base {o.base_accuracy:.4f}  personalized {o.personalized_accuracy:.4f}  gain {o.gain:+.4f}  "
                  f"base fit {fit_s:6.2f} s  rest {audit_s:5.2f} s  load {row['load']}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
