"""The questionnaire replay's search for a questionnaire meeting per-rule deadlines
(`benchmarks.questionnaire_bound`), on a pool and target sets whose coordinates are known."""

from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks import questionnaire_bound as qb
from pluralign.user.model import ResidualPrior


class Model:
    prior = ResidualPrior()
    names = ("list_items", "length")


def answer(items: int, words: int) -> str:
    """An answer with `items` list lines and about `words` words of prose."""
    return "\n".join([" ".join(["word"] * words)] + [f"- item {i}" for i in range(items)])


def coords(text: str) -> np.ndarray:
    """(2,): list items and words / 10 (what the rules `lists` and `long` read)."""
    return np.array([text.count("\n- "), len(text.split()) / 10])


def replay(pool, targets) -> qb.Replay:
    r = qb.Replay.__new__(qb.Replay)
    r.model, r.pool, r._scored, r.encoder = Model(), pool, {}, None
    r.pool_x = [np.stack([coords(t) for t in texts]) for _, texts in pool]
    r.targets = [(texts, np.stack([coords(t) for t in texts])) for _, texts in targets]
    r.pairs = [(s, i, j) for s, (_, texts) in enumerate(pool) for i in range(len(texts)) for j in range(i + 1, len(texts))]
    r.all_diff = np.array([r.pool_x[s][i] - r.pool_x[s][j] for s, i, j in r.pairs])
    r.prior_mean, r.prior_precision, r.particles = np.zeros(2), np.full(2, 1 / 25), None
    return r


@pytest.fixture
def lists_pool():
    rng = random.Random(0)
    targets = [(f"t{k}", [answer(rng.randint(0, 3), rng.randint(5, 30)) for _ in range(4)]) for k in range(12)]
    pool = [("list or prose", [answer(3, 10), answer(0, 10)]), ("long or short", [answer(0, 30), answer(0, 5)])]
    return replay(pool, targets)


def test_one_clean_question_settles_each_rule_and_the_tree_says_which(lists_pool):
    tree = qb.questionnaire_exists(lists_pool, {"lists": 1, "no_lists": 1})
    assert tree is not None and tree["pair"][0] == "list or prose"  # the length question cannot settle both
    assert set(tree["children"]) == {"1", "-1"} and all(sub == {} for sub in tree["children"].values())
    assert qb.follow(lists_pool, tree, "lists") == 1 and qb.follow(lists_pool, tree, "no_lists") == 1


def test_no_questionnaire_beats_a_deadline_the_pool_cannot_meet(lists_pool):
    # before any answer the prior ranks at chance: nothing reaches 70% at round 0
    assert qb.questionnaire_exists(lists_pool, {"lists": 0}) is None
    with pytest.raises(qb.Budget):
        qb.questionnaire_exists(lists_pool, {"lists": 2, "long": 2}, budget=1)


def test_the_replayed_criteria_run_past_the_pool_and_the_oracle_is_never_behind_at_round_one(lists_pool):
    for criterion in ("bald", "predictive", "oracle"):
        curve, fitted = lists_pool.run("lists", criterion, rounds=3)
        assert len(curve) == len(fitted) == 4 and all(0 <= v <= 1 for v in curve) and fitted[-1] <= 2
    oracle = lists_pool.run("lists", "oracle", rounds=1)[0][1]
    assert oracle >= max(lists_pool.run("lists", c, rounds=1)[0][1] for c in ("bald", "predictive"))
    assert qb.rounds_to([0.1, 0.69, 0.7, 0.2]) == 2 and qb.rounds_to([0.1]) is None


def test_the_population_prior_is_wide_where_earlier_users_differ(lists_pool, monkeypatch):
    """Earlier users of `lists` and `no_lists` disagree on list items and agree (not at all) on
    length: the prior's variance on list items is well above its variance on length, and a
    questionnaire fitted from it settles both list rules after one answer."""
    rng = random.Random(1)
    cohort = [(f"c{k}", [answer(rng.randint(0, 3), rng.randint(5, 30)) for _ in range(4)]) for k in range(8)]
    monkeypatch.setattr(qb.Replay, "_x", lambda self, prompt, texts, encoder: np.stack([coords(t) for t in texts]))
    monkeypatch.setattr(qb.cl, "RULES", {r: qb.cl.RULES[r] for r in ("lists", "no_lists")})
    mean, precision, about = qb.population_prior({"style": lists_pool}, {"style": cohort}, users=4, answers=12, spread=0.2, seed=0)
    cov = np.linalg.inv(precision)
    assert about["users"] == 8 and cov[0, 0] > 3 * cov[1, 1]
    lists_pool.prior_mean, lists_pool.prior_precision = mean, precision
    for rule in ("lists", "no_lists"):
        curve, _ = lists_pool.run(rule, "predictive", 1)
        assert curve[1] >= 0.7, (rule, curve)


def test_the_population_and_lookahead_criteria_ask_what_separates_earlier_users(lists_pool, monkeypatch):
    """Earlier users split on list items: asked which of them a new user is like (`population`, the
    route's `target: population` over the cohort), the first question is the list one, which settles
    both list rules. EPIG planned two answers ahead (`lookahead`) settles them within two (a pool of
    two questions asks both, in either order). Without a cohort the CLI refuses `population`."""
    rng = random.Random(1)
    cohort = [(f"c{k}", [answer(rng.randint(0, 3), rng.randint(5, 30)) for _ in range(4)]) for k in range(8)]
    monkeypatch.setattr(qb.Replay, "_x", lambda self, prompt, texts, encoder: np.stack([coords(t) for t in texts]))
    monkeypatch.setattr(qb.cl, "RULES", {r: qb.cl.RULES[r] for r in ("lists", "no_lists")})
    lists_pool.prior_mean, lists_pool.prior_precision, _ = qb.population_prior(
        {"style": lists_pool}, {"style": cohort}, users=4, answers=12, spread=0.2, seed=0)
    assert len(lists_pool.particles) == 8 and lists_pool.particles.means[:4, 0].mean() > 0 > lists_pool.particles.means[4:, 0].mean()
    for rule in ("lists", "no_lists"):
        curve, fitted = lists_pool.run(rule, "population", 2)
        assert curve[1] >= 0.7 and fitted[1] == 1, (rule, curve)
        assert lists_pool.run(rule, "lookahead", 2)[0][2] >= 0.7
    with pytest.raises(SystemExit):
        qb.main(["--criteria", "population"])


def test_two_step_planning_values_a_question_at_least_as_much_as_one_step():
    """The value of a question planned two answers ahead adds what the best second question is
    expected to carry, so it is never below EPIG's one-step value of the same question."""
    from pluralign.user.active import predictive_information

    rng = np.random.default_rng(0)
    diff, targets = rng.normal(size=(6, 3)), rng.normal(size=(10, 3))
    mean, cov = np.zeros(3), np.eye(3) * 4
    two, one = qb.two_step_predictive(diff, targets, mean, cov), predictive_information(diff, targets, mean, cov)
    assert two.shape == (6,) and np.all(two >= one - 1e-9) and np.any(two > one + 0.01)
