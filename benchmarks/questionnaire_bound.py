"""Issue 16: what bounds the closed loop's questionnaire bar, in the service's own user model.

Session 16's declared closed-loop runs (`benchmarks/closed_loop.py --arms ask_active ask_random`)
asked each simulated user one comparison a round from a calibration pool (16 prompts x 4 answers per
kind) and read, after every round, how often the user's model ranks the rule's pick first on 16
held-out candidate sets (the probe). This script replays those questionnaires without HTTP: the
same population checkpoint, prior and named features (`UserModel`), the posterior fitted on the
answered comparisons (`fit_posterior`, as a refit does), the route's criteria over the pool pairs
not asked yet, and a tie asked and spent as the arm spends it (recorded, not fitted). A round costs
milliseconds, so it can also ask what no criterion could do from this pool:

- `bald`: the route's default, BALD on the posterior (`pair_information`);
- `predictive`: the route's `target: predictive`, EPIG over every pair of the pool (`predictive_information`);
- `lookahead`: EPIG planned two questions ahead (`two_step_predictive`; session 20, replay only);
- `population`: the route's `target: population`, information about which earlier user this one is
  like (`group_information` over the cohort, each user their own group, falling back to BALD below
  `COMPARE_MIN_BITS` as the route does); only with `--prior population`, whose cohort are the known users;
- `random`: a pair not asked yet, drawn at random (`--randoms` users, the mean curve);
- `oracle`: each round the pair after whose answer the pick rate on the target sets is highest. It
  reads the rule and the target sets, so it is a bound, not a method: a questionnaire chosen one
  question at a time from this pool does no better than it at any round (greedy; see below);
- `all_pairs` (one number per rule): the model fitted on every pair of the pool the rule orders.

The oracle is greedy, so a cleverer sequence could in principle beat it on a later round; on these
sets it reaches 0.9 to 1.0 on most rules, so the gap it leaves is small where it matters.

Targets: `probe` (the bar's sets, seeds 20_000 and 21_000 as in the closed loop) or `fresh`: 30 other
candidate sets per kind (the chat questions and 30 persona statements, seeds 40_000 and 41_000), to
read the same curves on more sets than the probe's 16. The pick rate is hits over scored sets (sets
on which all answers tie under the rule are left out); the deterministic criteria give one trajectory
per rule, as in the closed loop. Round 0 is not the service's: a user without comparisons is served
by MaxMin over the prototypes there, ranked by the prior mean here.

    python -m benchmarks.questionnaire_bound --generation-cache runs/gen_seed1.pkl --seed 1 --json
    python -m benchmarks.questionnaire_bound --target fresh --generation-cache runs/gen_seed1.pkl --seed 1 --json
    python -m benchmarks.questionnaire_bound ... --recorded benchmarks/results/closed-loop/epig-seed1.json

`--prior population` starts (and fits) every questionnaire from the service's pooled prior
(`PLURALIGN_POOLED_PRIOR_USERS`, `pluralign.user.pooled`) estimated from earlier simulated users:
`--cohort-users` per rule (of both kinds), each having answered `--cohort-answers` random comparisons
of the fresh sets (never the pool's or the probe's), so the prior knows how users of these rules
differ, as a tenant's pooled prior knows its users. Only with `--target probe`.

    python -m benchmarks.questionnaire_bound --generation-cache runs/gen_seed1.pkl --seed 1 --prior population --json

`--recorded` (one or more files) compares the replayed `bald` / `predictive` curves with a closed-loop
summary's `ask_active` / `ask_predictive` probe curves (the replay's check on the service), from the
first round after which a comparison is fitted. With
`--json` the last line is `{"target", "rounds", "rules": {RULE: {"pairs", "all_pairs", "curves":
{CRITERION: [rate after r rounds]}, "rounds_to_70": {CRITERION: r | null}}}, "oracle_halves":
{RULE: bool}, "replay_matches": {ARM: {RULE: bool}}}`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import closed_loop as cl

CRITERIA = ("bald", "predictive", "lookahead", "population", "random", "oracle")
RECORDED_ARMS = {"bald": "ask_active", "predictive": "ask_predictive"}
FRESH_PERSONA = slice(0, 30)  # statement rows of the fresh persona sets (chat rows; the probe's are 200-215)


class Replay:
    """The questionnaire of one kind ("style" or "persona") in one user model: the pool's answers
    and the target sets as coordinates (M, D), once."""

    def __init__(self, model, encoder, pool: list[tuple[str, list[str]]], targets: list[tuple[str, list[str]]]):
        from pluralign.user.active import all_pairs

        self.model = model
        self.encoder = encoder
        self.pool = pool
        self.targets = [(texts, self._x(prompt, texts, encoder)) for prompt, texts in targets]
        self.pool_x = [self._x(prompt, texts, encoder) for prompt, texts in pool]
        self.pairs = [(s, int(i), int(j)) for s, (_, texts) in enumerate(pool) for i, j in zip(*all_pairs(len(texts)), strict=True)]
        self.all_diff = np.array([self.pool_x[s][i] - self.pool_x[s][j] for s, i, j in self.pairs])  # (T, D) EPIG's targets
        self.prior_mean, self.prior_precision = model.prior_mean(), model.prior_precision()  # (D,), (D,) or (D, D)
        self._scored: dict[str, list] = {}  # rule -> [(x (n, D), the rule's top answers (n,) bool)] of scored target sets
        self.particles = None  # `population`'s known users (`pluralign.user.active.Particles`): the cohort, with --prior population

    def _x(self, prompt: str, texts: list[str], encoder) -> np.ndarray:
        return self.model.candidates(encoder.encode([prompt])[0], encoder.encode(texts), texts).x

    def posterior(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from pluralign.user.model import fit_posterior

        if not rows:
            p = self.prior_precision
            return self.prior_mean, np.diag(1.0 / p) if p.ndim == 1 else np.linalg.inv(p)
        p = self.model.prior
        return fit_posterior(np.array(rows), self.prior_mean, self.prior_precision, p.newton_steps, p.tol)

    def pick_rate(self, beta: np.ndarray, rule: str) -> float:
        """Over the target sets whose answers do not all tie under the rule: how often the answer
        ranked first by `beta` (D,) is one the rule scores highest."""
        if rule not in self._scored:
            self._scored[rule] = [(x, np.asarray(s) == max(s)) for texts, x in self.targets
                                  for s in [[cl.RULES[rule](t) for t in texts]] if max(s) != min(s)]
        return sum(bool(top[int(np.argmax(x @ beta))]) for x, top in self._scored[rule]) / len(self._scored[rule])

    def outcome(self, rule: str, pair: tuple[int, int, int]) -> int:
        """The rule's answer to a pool pair (set, i, j): 1 if answer i wins, -1 if answer j does, 0 on a tie."""
        s, i, j = pair
        a, b = cl.RULES[rule](self.pool[s][1][i]), cl.RULES[rule](self.pool[s][1][j])
        return int(np.sign(a - b))

    def answer(self, rule: str, pair: tuple[int, int, int]) -> np.ndarray | None:
        """The design row (chosen minus rejected) of the rule's answer to a pool pair; None on a tie."""
        s, i, j = pair
        won = self.outcome(rule, pair)
        return None if won == 0 else won * (self.pool_x[s][i] - self.pool_x[s][j])

    def askable(self, asked: set) -> list[tuple[int, int, int]]:
        return [(s, i, j) for s, i, j in self.pairs
                if self.pool[s][1][i].strip() != self.pool[s][1][j].strip() and (s, i, j) not in asked]

    def run(self, rule: str, criterion: str, rounds: int, rng: random.Random | None = None) -> tuple[list[float], list[int]]:
        """The pick rate after 0..rounds answered questions, each chosen by `criterion`, and how many
        of them were fitted (a tie is asked, not fitted) after each."""
        from pluralign.user.active import (
            COMPARE_MIN_BITS,
            group_information,
            pair_information,
            predictive_information,
        )

        rows, tied, asked = [], [], set()  # tied: the pool pairs (first minus second) answered with a tie
        mean, cov = self.posterior(rows)
        curve, fitted = [self.pick_rate(mean, rule)], [0]
        for _ in range(rounds):
            fitted.append(len(rows))
            keep = self.askable(asked)
            if not keep:
                curve.append(curve[-1])
                continue
            if criterion == "random":
                pair = rng.choice(keep)
            elif criterion == "oracle":
                def after(pair):
                    row = self.answer(rule, pair)
                    return -1.0 if row is None else self.pick_rate(self.posterior([*rows, row])[0], rule)
                pair = max(keep, key=after)
            else:
                diff = np.array([self.pool_x[s][i] - self.pool_x[s][j] for s, i, j in keep])
                bits = None
                if criterion == "population" and self.particles is not None and len(self.particles) >= 2:
                    # the route's `target: population`: which known user is this one like, weighted by the answers so far
                    weights = self.particle_weights(rows, tied)
                    bits = group_information(self.particles.predictive(diff), weights, self.particles.groups)
                    if bits.max() < COMPARE_MIN_BITS:
                        bits = None  # the route falls back to BALD
                if criterion == "lookahead":
                    bits = two_step_predictive(diff, self.all_diff, mean, cov)
                if bits is None:
                    bits = predictive_information(diff, self.all_diff, mean, cov) if criterion == "predictive" else pair_information(diff, mean, cov)
                pair = keep[int(np.argmax(bits))]
            asked.add(pair)
            row = self.answer(rule, pair)
            if row is None:
                s, i, j = pair
                tied.append(self.pool_x[s][i] - self.pool_x[s][j])
            else:
                rows.append(row)
                fitted[-1] = len(rows)
                mean, cov = self.posterior(rows)
            curve.append(self.pick_rate(mean, rule))
        return curve, fitted

    def particle_weights(self, rows: list[np.ndarray], tied: list[np.ndarray]) -> np.ndarray:
        """(U,) the known users' weights after the answered comparisons `rows` (chosen minus rejected)
        and the ties `tied`, as the route weighs them (`particle_posterior`)."""
        from pluralign.user.active import particle_posterior

        u = len(self.particles)
        seen = self.particles.predictive(np.array(rows)) if rows else np.zeros((0, u))
        return particle_posterior(seen, self.particles.predictive(np.array(tied)) if tied else None)

    def all_pairs_rate(self, rule: str) -> tuple[float, int]:
        rows = [r for r in (self.answer(rule, p) for p in self.pairs) if r is not None]
        return self.pick_rate(self.posterior(rows)[0], rule), len(rows)


def population_prior(replays: dict[str, Replay], cohort: dict[str, list], users: int, answers: int, spread: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The service's pooled prior (`pluralign.user.pooled`, `PLURALIGN_POOLED_PRIOR_USERS`) from
    earlier users: `users` simulated users per rule, each answering `answers` random comparisons
    from their kind's `cohort` sets (candidate sets that are neither the pool nor the targets),
    fitted from the user model's own prior as a refit fits them; then the pooled estimate (the mean
    and covariance of their posterior means, plus `spread` times their mean posterior variances).
    The cohort users refitted under that prior, as the service's refits fit them once it exists, are
    `population`'s known users (`Replay.particles`, both kinds, as a tenant's fitted users are).
    Returns the mean (D,), the precision (D, D) and a description."""
    from pluralign.user.active import Particles
    from pluralign.user.model import fit_posterior
    from pluralign.user.pooled import pooled_from_fits

    means, variances, answered = [], [], []
    for kind, replay in replays.items():
        xs = [replay._x(prompt, texts, replay.encoder) for prompt, texts in cohort[kind]]
        for rule in (r for r in cl.RULES if cl.kind_of(r) == kind):
            for u in range(users):
                rows = [xs[s][c] - xs[s][r] for s, c, r in cl.cohort_answers(cohort[kind], rule, u, seed, answers)]
                mean, cov = replay.posterior(rows)
                means.append(mean)
                variances.append(np.diag(cov))
                answered.append(np.array(rows))
    prior = pooled_from_fits(np.array(means), np.array(variances), replay.model.names, spread)
    p = replay.model.prior
    fits = [fit_posterior(rows, prior.mean, prior.precision, p.newton_steps, p.tol) for rows in answered]
    particles = Particles(np.stack([m for m, _ in fits]), np.stack([c for _, c in fits]), np.arange(len(fits)))
    for replay in replays.values():
        replay.particles = particles
    return prior.mean, prior.precision, {"users": prior.users, "answers": answers, "spread": spread}


def two_step_predictive(diff: np.ndarray, targets: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """`lookahead`: EPIG planned two questions ahead, I(y1; y*) + E_{y1} max_{q2} I(y2; y* | y1)
    (the information the next two answers carry about the targets when the second question is chosen
    after the first answer), the posterior after y1 taken by reweighting the route's posterior
    samples by its likelihood. diff (P, D), targets (T, D); returns (P,) bits. O(P^2 T S): ~1 s a
    round at P = T = 90, S = 256."""
    from scipy.special import expit

    from pluralign.user.active import posterior_samples, sample_predictive_information

    draws = posterior_samples(mean, cov)  # (S, D)
    p, q = expit(draws @ diff.T), expit(draws @ targets.T)  # (S, P), (S, T)
    w = np.full(len(draws), 1.0 / len(draws))
    value = sample_predictive_information(p, q, w)
    for k in range(diff.shape[0]):
        for like in (p[:, k], 1.0 - p[:, k]):
            share = float(w @ like)
            after = sample_predictive_information(p, q, w * like / share)
            after[k] = 0.0
            value[k] += share * after.max()
    return value


class Budget(Exception):
    """The feasibility search ran out of nodes before deciding."""


def questionnaire_exists(replay: Replay, deadlines: dict[str, int], bar: float = 0.7, budget: int = 200_000) -> dict | None:
    """Whether some questionnaire that does not read the rule brings every rule of `deadlines`
    ({rule: r}) to a pick rate of at least `bar` within its r rounds (the first round it reaches the
    bar; what happens later does not matter, as for `rounds_to_70`).

    Such a questionnaire is a tree: its first question is the same for every rule (they start from
    one prior), and each later one may depend only on the answers so far, so rules that answered
    alike stay together and rules that answered differently (a tie included) part. The search tries
    every askable pool pair at every node (depth first, the pairs that bring the most waiting rules
    to the bar first), so a None is exhaustive: no such tree exists in this user model with this
    pool and these target sets. Returns the tree found ({"pair": [prompt, answer, answer],
    "children": {outcome: subtree}}; outcome "1": the first answer wins, "-1": the second, "0": a
    tie; {} once every rule in it has reached the bar) or None. Raises Budget after `budget`
    posterior fits."""
    failed: set = set()
    fits = [0]

    def search(history: tuple, rows: list, waiting: frozenset, d: int):
        if not waiting:
            return {}
        if min(deadlines[r] for r in waiting) <= d:
            return None
        memo = (history, waiting)
        if memo in failed:
            return None
        options = []
        for pair in replay.askable({p for p, _ in history}):
            groups: dict[int, set] = {}
            for rule in waiting:
                groups.setdefault(replay.outcome(rule, pair), set()).add(rule)
            children, reached = {}, 0
            for outcome, members in groups.items():
                fits[0] += 1
                if fits[0] > budget:
                    raise Budget
                row = replay.answer(next(iter(members)), pair)
                child_rows = rows + ([] if row is None else [row])
                beta = replay.posterior(child_rows)[0]
                still = frozenset(r for r in members if replay.pick_rate(beta, r) < bar - 1e-9)
                reached += len(members) - len(still)
                children[outcome] = (child_rows, still)
            if any(deadlines[r] <= d + 1 for _, still in children.values() for r in still):
                continue  # a rule due at the next round misses it under this question
            options.append((-reached, len(options), pair, children))
        for _, _, pair, children in sorted(options, key=lambda o: o[:2]):
            tree = {}
            for outcome, (child_rows, still) in children.items():
                sub = search(history + ((pair, outcome),), child_rows, still, d + 1)
                if sub is None:
                    break
                tree[str(outcome)] = sub
            else:
                s, i, j = pair
                return {"pair": [replay.pool[s][0], replay.pool[s][1][i], replay.pool[s][1][j]], "children": tree}
        failed.add(memo)
        return None

    start = replay.posterior([])[0]
    return search((), [], frozenset(r for r in deadlines if replay.pick_rate(start, r) < bar - 1e-9), 0)

def follow(replay: Replay, tree: dict, rule: str, bar: float = 0.7) -> int | None:
    """The first round at which `rule` reaches `bar` on this replay's target sets while answering the
    questionnaire `tree` (`questionnaire_exists`' form; its pairs are found in this pool by text); None
    if it has not by the leaf its answers lead to."""
    index = {(replay.pool[s][0], replay.pool[s][1][i], replay.pool[s][1][j]): (s, i, j) for s, i, j in replay.pairs}
    rows, node, d = [], tree, 0
    while True:
        if replay.pick_rate(replay.posterior(rows)[0], rule) >= bar - 1e-9:
            return d
        if not node or "pair" not in node:
            return None
        pair = index[tuple(node["pair"])]
        outcome = replay.outcome(rule, pair)
        if str(outcome) not in node["children"]:
            return None  # the tree's author never saw this answer: it does not say what to ask next
        row = replay.answer(rule, pair)
        rows += [] if row is None else [row]
        node, d = node["children"][str(outcome)], d + 1


def rounds_to(curve: list[float], bar: float = 0.7) -> int | None:
    return next((r for r, v in enumerate(curve) if v >= bar - 1e-9), None)


def build(args) -> tuple[dict[str, Replay], dict[str, list]]:
    """The replays of both kinds ("style", "persona") and their target sets, from the closed loop's
    pools and generations (`args`: target, max_tokens, temperature, generator, pal, shared_data,
    generation_cache)."""
    from pluralign.embed.encoders import SentenceEncoder
    from service.runtime import Runtime, make_generator

    generator = cl.SharedGenerations(make_generator(args.generator), args.generation_cache)
    encoder = cl.SharedEncodings(SentenceEncoder())
    pools = {"style": cl.candidate_sets(generator, cl.CALIBRATION_QUESTIONS, 30_000, args),
             "persona": cl.candidate_sets(generator, cl.persona_questions(args.shared_data, cl.PERSONA_CALIBRATION), 31_000, args)}
    if args.target == "probe":
        targets = {"style": cl.candidate_sets(generator, cl.PROBE_QUESTIONS, 20_000, args),
                   "persona": cl.candidate_sets(generator, cl.persona_questions(args.shared_data, cl.PERSONA_PROBE), 21_000, args)}
    else:
        targets = {"style": cl.candidate_sets(generator, cl.QUESTIONS, 40_000, args),
                   "persona": cl.candidate_sets(generator, cl.persona_questions(args.shared_data, FRESH_PERSONA), 41_000, args)}
    cohort = {}
    if args.prior == "population":  # earlier users answer other sets: the chat questions' (fresh) ones, not the targets
        if args.target == "fresh":
            raise SystemExit("questionnaire_bound: error: --prior population reads the fresh sets as earlier users' answers; use --target probe")
        cohort = {"style": cl.candidate_sets(generator, cl.QUESTIONS, 40_000, args),
                  "persona": cl.candidate_sets(generator, cl.persona_questions(args.shared_data, FRESH_PERSONA), 41_000, args)}
    generator.save()
    with tempfile.TemporaryDirectory(prefix="questionnaire-bound-") as tmp:
        runtime = Runtime.build(cl.arm_settings(Path(tmp), "ask_active", args), generator=generator, encoder=encoder)
        model = runtime.rewards.user_model
        replays = {kind: Replay(model, encoder, pools[kind], targets[kind]) for kind in pools}
        if cohort:
            mean, precision, about = population_prior(replays, cohort, args.cohort_users, args.cohort_answers, args.cohort_spread, args.seed)
            for replay in replays.values():
                replay.prior_mean, replay.prior_precision = mean, precision
            print(f"population prior from {about}", file=sys.stderr)
    return replays, targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("probe", "fresh"), default="probe")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--randoms", type=int, default=12, help="random questionnaires per rule (their mean curve)")
    parser.add_argument("--criteria", nargs="+", choices=CRITERIA, default=[c for c in CRITERIA if c not in ("lookahead", "population")])
    parser.add_argument("--rules", nargs="+", choices=list(cl.RULES), default=list(cl.RULES))
    parser.add_argument("--seed", type=int, default=1, help="the closed loop's seed (names its run; the sets' seeds are fixed)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--generator", default="smollm2")
    parser.add_argument("--pal", type=Path, default=None, help="a PAL checkpoint folder (default: bootstrapped as the closed loop does)")
    parser.add_argument("--shared-data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--generation-cache", type=Path, default=None, help="the closed loop's generation cache (same sets, none generated)")
    parser.add_argument("--recorded", type=Path, nargs="+", default=[],
                        help="closed-loop summaries (JSON with probe_rate) to check the replay against")
    parser.add_argument("--deadlines", type=Path, default=None,
                        help="a closed-loop summary: search for a questionnaire (`questionnaire_exists`) that brings every rule to "
                             "70%% in at most half the rounds its `ask_random` arm needed (--rounds / 2 where it never did)")
    parser.add_argument("--budget", type=int, default=300_000, help="most posterior fits of that search per kind")
    parser.add_argument("--tree-out", type=Path, default=None, help="where to write the questionnaires found (JSON per kind)")
    parser.add_argument("--tree", type=Path, default=None, help="questionnaires (--tree-out's file) to follow on this target")
    parser.add_argument("--prior", choices=("model", "population"), default="model",
                        help="every questionnaire starts from (and is fitted with) the user model's prior, or the service's pooled "
                             "prior (PLURALIGN_POOLED_PRIOR_USERS) from earlier simulated users (`population_prior`; they answer the fresh sets)")
    parser.add_argument("--cohort-users", type=int, default=8, help="--prior population: earlier users per rule")
    parser.add_argument("--cohort-answers", type=int, default=40, help="--prior population: random comparisons each earlier user answered")
    parser.add_argument("--cohort-spread", type=float, default=0.2, help="--prior population: weight of the mean posterior covariance")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if "population" in args.criteria and args.prior != "population":
        parser.error("--criteria population asks which earlier user a user is like: it needs --prior population (the earlier users)")
    start = time.time()
    replays, targets = build(args)
    out = {}
    for rule in args.rules:
        replay = replays[cl.kind_of(rule)]
        curves, fitted = {}, {}
        for criterion in args.criteria:
            if criterion == "random":
                runs = [replay.run(rule, "random", args.rounds, random.Random(f"{args.seed}-{rule}-{u}"))[0] for u in range(args.randoms)]
                curves[criterion] = [round(float(v), 4) for v in np.mean(runs, axis=0)]
            else:
                curve, fitted[criterion] = replay.run(rule, criterion, args.rounds)
                curves[criterion] = [round(v, 4) for v in curve]
        rate, pairs = replay.all_pairs_rate(rule)
        out[rule] = {"pairs": pairs, "all_pairs": round(rate, 4), "curves": curves, "fitted": fitted,
                     "rounds_to_70": {c: rounds_to(v) for c, v in curves.items()}}
        print(f"{rule:18s} all pool pairs ({pairs}) {rate:.2f}; rounds to 70%: "
              + "  ".join(f"{c} {'-' if r is None else r}" for c, r in out[rule]["rounds_to_70"].items()), file=sys.stderr, flush=True)
        for c, v in curves.items():
            print(f"    {c:10s} " + " ".join(f"{x:.2f}" for x in v), file=sys.stderr, flush=True)

    summary = {"target": args.target, "prior": args.prior, "rounds": args.rounds, "sets": {k: len(v) for k, v in targets.items()}, "rules": out}
    if "oracle" in args.criteria and "random" in args.criteria:  # could any greedy questionnaire halve random pairs' rounds?
        summary["oracle_halves"] = {rule: r["rounds_to_70"]["oracle"] is not None and r["rounds_to_70"]["oracle"] <= (
            args.rounds if r["rounds_to_70"]["random"] is None else r["rounds_to_70"]["random"]) / 2 for rule, r in out.items()}
    if args.recorded:
        recorded = {rule: {} for rule in cl.RULES}
        for path in args.recorded:
            for rule, arms in json.loads(path.read_text())["probe_rate"].items():
                recorded[rule].update(arms)
        # from the first round with a fitted comparison: before it the service serves the user by MaxMin
        summary["replay_matches"] = {
            arm: {rule: all(abs(mine - theirs) <= 1e-3 for mine, theirs, n in
                            zip(out[rule]["curves"][c], recorded[rule][arm], out[rule]["fitted"][c], strict=True) if n > 0)
                  for rule in out if arm in recorded.get(rule, {})}
            for c, arm in RECORDED_ARMS.items() if c in args.criteria}
        print(f"replay against {[str(p) for p in args.recorded]}: {summary['replay_matches']}", file=sys.stderr)
    if args.deadlines:
        reached = json.loads(args.deadlines.read_text())["probe_rounds_to_70"]
        deadlines = {rule: (args.rounds if reached[rule]["ask_random"] is None else reached[rule]["ask_random"]) // 2 for rule in args.rules}
        summary["deadlines"], summary["exists"], trees = deadlines, {}, {}
        for kind in ("style", "persona"):
            mine = {rule: d for rule, d in deadlines.items() if cl.kind_of(rule) == kind}
            if not mine:
                continue
            try:
                trees[kind] = questionnaire_exists(replays[kind], mine, budget=args.budget)
                summary["exists"][kind] = trees[kind] is not None
            except Budget:
                summary["exists"][kind] = None
            print(f"a questionnaire meeting {mine} on the {args.target} sets: "
                  f"{ {True: 'exists', False: 'none (exhaustive)', None: 'undecided (budget)'}[summary['exists'][kind]] }", file=sys.stderr)
        if args.tree_out:
            args.tree_out.write_text(json.dumps(trees, indent=1))
    if args.tree:
        trees = json.loads(args.tree.read_text())
        summary["tree_rounds_to_70"] = {rule: follow(replays[cl.kind_of(rule)], trees[cl.kind_of(rule)], rule)
                                        for rule in args.rules if trees.get(cl.kind_of(rule))}
        print(f"following {args.tree} on the {args.target} sets, rounds to 70%: {summary['tree_rounds_to_70']}", file=sys.stderr)
    summary["seconds"] = round(time.time() - start, 1)
    print(f"questionnaire bound ({args.target}, {summary['sets']} sets, {args.rounds} rounds): {summary['seconds']} s")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
