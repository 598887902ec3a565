"""Reranking: a known user's reward orders the candidates; a new user gets the MaxMin candidate."""

import numpy as np

from pluralign.policy.rerank import pickable_first, rerank, rerank_maxmin


def linear(direction):
    return lambda prompt, response: response @ np.asarray(direction, dtype=np.float64)


def test_rerank_orders_by_the_users_reward():
    candidates = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    ranked = rerank(linear([1.0, 0.0]), np.zeros(2), candidates)
    assert ranked.order == [1, 2, 0] and ranked.best == 1


def test_maxmin_serves_the_compromise_the_population_reward_passes_over():
    # a majority wants dimension 0, a minority dimension 1; the population reward is the majority's
    candidates = np.array([[1.0, -1.0], [-1.0, 1.0], [0.6, 0.6], [0.9, -0.2]])
    majority, minority = linear([1.0, 0.0]), linear([0.0, 1.0])
    population = rerank(majority, np.zeros(2), candidates)
    assert population.best == 0  # the single reward serves the majority's extreme
    ranked = rerank_maxmin([majority, minority], majority, np.zeros(2), candidates)
    assert ranked.best == 2  # the worst-off group fares best with the compromise
    assert sorted(ranked.order) == [0, 1, 2, 3] and ranked.scores == population.scores


def test_maxmin_takes_the_worst_group_not_the_groups_average():
    """The candidate the majority loves and the minority dislikes has the best average of the groups'
    standardized rewards (0.12 against the compromise's -0.14); MaxMin still serves the compromise,
    whose worst group fares best (-0.46 against -0.73), and the rest follow the population's order."""
    candidates = np.array([[4.0, 0.0], [0.0, 4.0], [1.6, 1.6], [3.9, -0.5]])
    majority, minority = linear([1.0, 0.0]), linear([0.0, 1.0])
    ranked = rerank_maxmin([majority, minority], majority, np.zeros(2), candidates)
    assert ranked.order == [2, 0, 3, 1]
    assert ranked.scores == [4.0, 0.0, 1.6, 3.9]


def test_pickable_first_puts_blank_answers_and_second_spellings_after_the_rest_in_rank_order():
    texts = ["Yes.", "\u3164", "No.", "Yes.\u200b", "", "Maybe."]
    # ranked: the filler best, then the second spelling of "Yes." before "Yes." itself
    assert pickable_first([1, 3, 0, 4, 2, 5], texts) == [3, 2, 5, 1, 0, 4]  # "Yes.\u200b" is the best-ranked spelling: kept
    assert pickable_first([0, 1, 2], ["", "\u3164", ""]) == [0, 1, 2]  # nothing to pick: the order as it was
