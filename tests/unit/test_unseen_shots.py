"""The evaluation splits: the k-shot evaluation of new users gives each model exactly each user's
first k support comparisons (the pool's order) and leaves out users whose pool is shorter than k;
a seen user's pairs are split into train, validation and test, a new user's into query and support,
without overlap."""

from __future__ import annotations

import numpy as np

from pluralign.data.record import Preference
from pluralign.data.splits import Protocol, SeenSplit, UnseenSplit, split_seen, split_unseen
from pluralign.evaluation import unseen_by_k


class NumberEncoder:
    """'c7' -> [7, 1]: a text's number read back from its embedding."""

    encoder_id = "test/number"
    dim = 2

    def encode(self, texts):
        return np.array([[float(t[1:]) if t[1:].isdigit() else -1.0, 1.0] for t in texts], np.float32)


def pairs(user: str, numbers) -> list[Preference]:
    return [Preference(user_id=user, prompt="q", chosen=f"c{n}", rejected=f"r{n}") for n in numbers]


def test_each_user_gets_their_first_k_support_comparisons():
    protocol = Protocol(
        name="tiny", seen=SeenSplit(train=[], val=[], test=[]),
        unseen=UnseenSplit(support={"ann": pairs("ann", [10, 11, 12]), "bob": pairs("bob", [20])},
                           query={"ann": pairs("ann", [90]), "bob": pairs("bob", [91])}))
    given = []  # one call per k that some user has enough support for

    def prob_new_users(support, query):
        given.append(([support.users[u] for u in support.user.tolist()], support.chosen[:, 0].tolist(),
                      query.chosen[:, 0].tolist()))
        return np.ones(len(query))

    acc = unseen_by_k(prob_new_users, protocol, NumberEncoder(), shots=(1, 2, 3, 5))
    assert acc == {"1": 1.0, "2": 1.0, "3": 1.0}  # no user has 5 comparisons: that k is left out
    assert given == [
        (["ann", "bob"], [10.0, 20.0], [90.0, 91.0]),  # k = 1: both users, their first comparison
        (["ann", "ann"], [10.0, 11.0], [90.0]),  # k = 2: bob has 1, so only ann's first two
        (["ann", "ann", "ann"], [10.0, 11.0, 12.0], [90.0]),  # k = 3: ann's whole pool
    ]


def test_a_seen_users_pairs_go_to_exactly_one_of_train_val_and_test():
    """split_seen: per user round(n * test) test pairs, round(n * val) validation pairs and the rest
    to train on, each pair in one part only (a validation pair also trained on would make early
    stopping and the choice of K look better than they are)."""
    users = {"ann": pairs("ann", range(20)), "bob": pairs("bob", range(100, 110))}
    split = split_seen(users, seed=0, val=0.1, test=0.2)
    for user, expected in (("ann", (14, 2, 4)), ("bob", (7, 1, 2))):
        parts = [[r.chosen for r in part if r.user_id == user] for part in (split.train, split.val, split.test)]
        assert tuple(map(len, parts)) == expected
        assert sorted(sum(parts, [])) == sorted(r.chosen for r in users[user])  # disjoint, and none lost


def test_a_new_users_query_and_support_pool_do_not_share_a_pair():
    """split_unseen: max(min_query, round(n * query_fraction)) query pairs and the rest as the support
    pool, disjoint (a support pair scored again as a query would flatter every few-shot figure)."""
    users = {"ann": pairs("ann", range(30)), "bob": pairs("bob", range(100, 112))}
    split = split_unseen(users, seed=0, query_fraction=0.3, min_query=10)
    for user, n_query in (("ann", 10), ("bob", 10)):
        query, support = [r.chosen for r in split.query[user]], [r.chosen for r in split.support[user]]
        assert len(query) == n_query and len(support) == len(users[user]) - n_query
        assert sorted(query + support) == sorted(r.chosen for r in users[user])
    assert len(split_unseen(users, seed=0, query_fraction=0.5, min_query=0).query["ann"]) == 15
