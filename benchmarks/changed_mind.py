"""The changed-mind check's false alarms and detection delay (issue 16, session 52), before and after its baseline.

Simulated users on the real `UserModel` (a tiny PAL model, 19 coefficients, the named features of real texts: the set-up
of `tests/unit/test_surprise51.py`) answer random pairs of answers of 1-60 words by length, P(shorter wins) =
sigmoid(w (log(1 + words_b) - log(1 + words_a))): coin flippers (w = 0), noisy length-preferring users (w = 1), firm
ones (w = 4, 8), and flippers (w = 4, then -4 from a given answer). At each refit the user's newest `--window`
comparisons are checked against the posterior fitted on the older ones (at least `--window` // 2 of them), and each
user is flagged when the z is at least `--threshold`, by three rules:

- `calibrated` (session 51, `before`, `pluralign.user.active.predictive_surprise`): the recent answers' log score
  against what the older posterior expects of its own predictions, z = (surprise - sum H(p)) / sd under the model;
- `ranked` (mind52, `ranked`, `pluralign.user.active.rank_shift`): the rank of the recent answers' held-out log
  losses among the older answers' own (approximate) leave-one-out ones;
- both (reviewmind52, `after`, `pluralign.user.active.recent_surprise`): the smaller of the two z's.

Printed (and with `--json` one line per figure): refits flagged of 88 (8 users, every 3 answers from 15 to 45, as
session 51 counted them) for each w; users flagged at least once of 40 refitted after every answer from 15 to 60 (and
the refits flagged of their 1,840); the
detection delay of 20 users flipping after 37 answers and of 20 flipping after 13 (contrary answers until the first
flagged refit, refitted after every answer, at most 30: `never` past it); and the cost per refit of the check at D = 76
(one core, the median of 200). And `active`: 20 users firm on shorter answers (w = 4, all along) who answer only the
pairs chat's `compare` offers (`most_informative_pair` among 4 answers a chat, gated by `best` as chat gates it, lifted
while flagged by the rule), 80 chats: refits flagged and users flagged at least once.

    OMP_NUM_THREADS=1 python -m benchmarks.changed_mind              # --window 10 --threshold 3 --json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.user import UserModel
from pluralign.user.active import (
    answer_losses,
    most_informative_pair,
    predictive_surprise,
    rank_shift,
    recent_surprise,
)
from pluralign.user.features import response_features
from pluralign.user.model import fit_posterior

RULES = ("before", "ranked", "after")


def tiny_model() -> UserModel:
    torch.manual_seed(0)
    return UserModel(PALModel(PALConfig(variant="a", k=3, input_dim=16, latent_dim=8, hidden=16)), population="tiny")


def user_answers(seed: int, weight_at: Callable[[int], float], n: int) -> tuple:
    """A user answering n random pairs of texts by length with weight `weight_at(i)` (the shorter wins, mostly, at a
    positive weight): prompt, chosen and rejected (n, 16) vectors each, and the chosen and rejected texts (n each)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(1, 60, size=(n, 2))
    texts = [[" ".join(["word"] * int(k)) + "." for k in row] for row in words]
    prompt, a, b = (rng.normal(size=(n, 16)).astype(np.float32) for _ in range(3))
    w = np.array([weight_at(i) for i in range(n)])
    first = rng.random(n) < 1 / (1 + np.exp(w * (np.log1p(words[:, 0]) - np.log1p(words[:, 1]))))  # shorter wins
    chosen, rejected = np.where(first[:, None], a, b), np.where(first[:, None], b, a)
    ct = [t[0] if f else t[1] for t, f in zip(texts, first, strict=True)]
    rt = [t[1] if f else t[0] for t, f in zip(texts, first, strict=True)]
    return prompt, chosen, rejected, ct, rt


def user_design(model: UserModel, seed: int, weight_at: Callable[[int], float], n: int) -> np.ndarray:
    """(n, D) chosen-minus-rejected rows of `user_answers`."""
    prompt, chosen, rejected, ct, rt = user_answers(seed, weight_at, n)
    return model.design(prompt, chosen, rejected, response_features(ct), response_features(rt))


def checks(model: UserModel, design: np.ndarray, window: int) -> tuple[float, float, float]:
    """(calibrated z, ranked z, the smaller: `recent_surprise`) of the newest `window` rows of design (N, D) against the
    posterior of the older ones."""
    if len(design) - window < window // 2:
        return 0.0, 0.0, 0.0
    older, recent = design[:-window], design[-window:]
    mean, cov = fit_posterior(older, *model.prior_for(), model.prior.newton_steps, model.prior.tol)
    ranked = rank_shift(answer_losses(mean, cov, older, held_out=True), answer_losses(mean, cov, recent))
    return predictive_surprise(mean, cov, recent), ranked, recent_surprise(mean, cov, older, recent)


def active_user(model: UserModel, seed: int, rule: int, window: int, threshold: float, chats: int = 80) -> list[float]:
    """The z's by rule `rule` (`checks`) at each refit of a user firm on shorter answers (w = 4) who answers only the
    pairs chat's `compare` offers, gated as chat gates them and asked on every chat while flagged by that rule."""
    rng = np.random.default_rng(seed)
    rows, z = [], []
    for _ in range(chats):
        words = rng.integers(1, 60, 4)
        texts = [" ".join(["word"] * int(k)) + "." for k in words]
        x = model.candidates(rng.normal(size=16).astype(np.float32), rng.normal(size=(4, 16)).astype(np.float32), texts).x
        pair = (0, 1)
        if rows:
            design = np.array(rows)
            choice = most_informative_pair(x, *fit_posterior(design, *model.prior_for()), 0.1, "coefficients", gate="best",
                                           surprised=bool(z) and z[-1] >= threshold)
            pair = None if choice is None else (choice.first, choice.second)
        if pair is None or words[pair[0]] == words[pair[1]]:
            continue
        a, b = pair
        if rng.random() >= 1 / (1 + np.exp(4.0 * (np.log1p(words[a]) - np.log1p(words[b])))):  # the shorter wins, mostly
            a, b = b, a
        rows.append(x[a] - x[b])
        z.append(checks(model, np.array(rows), window)[rule])
    return z


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    model, t, r = tiny_model(), args.threshold, args.window
    out: list[dict] = []

    def report(**figure) -> None:
        out.append(figure)
        print(json.dumps(figure) if args.json else "  ".join(f"{k}={v}" for k, v in figure.items()), flush=True)

    for w in (0.0, 1.0, 4.0, 8.0):  # refits flagged of 88
        z = np.array([checks(model, user_design(model, seed, lambda i, w=w: w, 45)[:m], r)
                      for seed in range(8) for m in range(15, 46, 3)])
        report(figure="refits_flagged", weight=w, refits=len(z), **{rule: int((z[:, i] >= t).sum()) for i, rule in enumerate(RULES)},
               after_max_z=round(float(z[:, 2].max()), 2))
    for w in (0.0, 1.0):  # users flagged at least once in 60 answers
        flagged, refits = np.zeros(3, int), np.zeros(3, int)
        for seed in range(40):
            design = user_design(model, 1000 + seed, lambda i, w=w: w, 60)
            z = np.array([checks(model, design[:m], r) for m in range(15, 61)])
            flagged += (z >= t).any(0)
            refits += (z >= t).sum(0)
        report(figure="users_flagged_in_60", weight=w, users=40, **{rule: int(flagged[i]) for i, rule in enumerate(RULES)},
               refits=40 * 46, **{f"refits_{rule}": int(refits[i]) for i, rule in enumerate(RULES)})
    for known in (37, 13):  # detection delay
        delays: list[list[int | None]] = [[], [], []]
        for seed in range(20):
            design = user_design(model, 100 + seed, lambda i, k=known: 4.0 if i < k else -4.0, known + 30)
            for rule in range(3):
                delays[rule].append(next((m - known for m in range(known + 1, known + 31) if checks(model, design[:m], r)[rule] >= t), None))
        for rule, name in enumerate(RULES):
            seen = sorted(d for d in delays[rule] if d is not None)
            report(figure="flip_delay", known=known, rule=name, users=20, caught=len(seen), never=20 - len(seen),
                   median=float(np.median(seen)) if seen else None, low=seen[0] if seen else None, high=seen[-1] if seen else None)
    for rule, name in enumerate(RULES):  # consistent users answering chat's `compare` pairs
        z = [active_user(model, seed, rule, r, t) for seed in range(20)]
        report(figure="active", rule=name, users=20, refits=sum(map(len, z)), flagged=sum(x >= t for zs in z for x in zs),
               users_flagged=sum(any(x >= t for x in zs) for zs in z), max_z=round(max(max(zs) for zs in z), 2))
    rng = np.random.default_rng(0)
    for n in (50, 500):  # cost per refit at D = 76
        design = rng.normal(size=(n, 76)) * np.where(rng.random(n) < 0.5, 1, -1)[:, None]
        report(figure="cost", comparisons=n, dim=76, **cost(design, r))


def cost(design: np.ndarray, r: int) -> dict[str, float]:
    """Median milliseconds of 200 calls: the older answers' fit, and each check of the newest r rows of design (N, D)."""
    prior = (np.zeros(design.shape[1]), np.full(design.shape[1], 1.0))
    mean, cov = fit_posterior(design[:-r], *prior)
    timing = {}
    for name, fn in (("fit_ms", lambda: fit_posterior(design[:-r], *prior)), ("before_ms", lambda: predictive_surprise(mean, cov, design[-r:])),
                     ("after_ms", lambda: recent_surprise(mean, cov, design[:-r], design[-r:]))):
        times = []
        for _ in range(200):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        timing[name] = round(1000 * float(np.median(times)), 3)
    return timing


if __name__ == "__main__":
    main()
