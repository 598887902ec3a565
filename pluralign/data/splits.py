"""Deterministic splits for the two evaluation protocols.

*Seen users*: each user's pairs split train/val/test. *Unseen users*: users disjoint from the seen
ones, each with an ordered support pool (its first k pairs are the k-shot set) and a query set.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from pluralign.checks import whole
from pluralign.data.record import Preference
from pluralign.data.text import question_key

SHOTS = (1, 2, 5, 10, 20, 50)


@dataclass
class SeenSplit:
    """Seen users' comparisons: `train` to fit on, `val` (the same users) to stop early and choose
    K by, `test` to report."""

    train: list[Preference]
    val: list[Preference]
    test: list[Preference]


@dataclass
class UnseenSplit:
    """New users, never trained on: per user, an ordered support pool (its first k comparisons are
    the k-shot set a model fits the user from) and a fixed query set to score."""

    support: dict[str, list[Preference]]  # user -> ordered pool; the first k are the k-shot set
    query: dict[str, list[Preference]]


@dataclass
class Protocol:
    """An evaluation protocol: its seen and unseen users, the true group of each user where the
    population is synthetic (`true_groups`), and the record attribute that names a pair's group."""

    name: str
    seen: SeenSplit
    unseen: UnseenSplit
    true_groups: dict[str, str] = field(default_factory=dict)  # known only for synthetic users
    group_attribute: str = "group"  # the record attribute that names a pair's group
    # user -> strict comparisons, for each user of a file with too few to be a seen user (`file_protocol`)
    left_out: dict[str, int] = field(default_factory=dict)


def by_user(records: list[Preference]) -> dict[str, list[Preference]]:
    users: dict[str, list[Preference]] = defaultdict(list)
    for r in records:
        users[r.user_id].append(r)
    return dict(users)


def comparison_key(record: Preference) -> tuple[str, frozenset[str]]:
    """What makes two of a user's records one comparison: the prompt and the two answers, whichever was
    chosen (`answer_key`: invisible characters and Unicode forms aside). A row given twice, or the same
    two answers judged both ways, is one comparison asked again."""
    return question_key(record.prompt, record.chosen, record.rejected)  # the question next-comparison asks once


def repeats_together(pairs: list[Preference]) -> list[list[Preference]]:
    """`pairs` grouped by `comparison_key`, groups in the order of their first record."""
    groups: dict[tuple[str, frozenset[str]], list[Preference]] = {}
    for pair in pairs:
        groups.setdefault(comparison_key(pair), []).append(pair)
    return list(groups.values())


def _take(groups: list[list[Preference]], at_least: int, leave: int) -> list[Preference]:
    """Whole groups from the front of `groups` (removed from it) until `at_least` records, keeping `leave` groups."""
    taken: list[Preference] = []
    while groups and len(taken) < at_least and len(groups) > leave:
        taken.extend(groups.pop(0))
    return taken


def _rest(pairs: list[Preference], *taken: list[Preference]) -> list[Preference]:
    """`pairs` but those `taken`, in their order: the first k of a support pool are the k-shot set, and a
    comparison's copies kept side by side would make it [A, A] where the shuffle gives two different ones."""
    gone = {id(pair) for part in taken for pair in part}
    return [pair for pair in pairs if id(pair) not in gone]


def hold_out(pairs: list[Preference], n: int) -> tuple[list[Preference], list[Preference]]:
    """(held out, rest) of `pairs`, in their order: the first `n` records (a few more where the last comparison
    taken repeats: `comparison_key`, a repeat goes with the comparison it repeats), and the rest, one comparison at
    least (so fewer are held out where repeats leave too few different ones). Without repeats: pairs[:n], pairs[n:]."""
    held = _take(repeats_together(pairs), n, leave=1)
    return held, _rest(pairs, held)


def split_seen(
    users: dict[str, list[Preference]], seed: int, val: float = 0.1, test: float = 0.2
) -> SeenSplit:
    """Split each user's pairs into train/val/test, the same way for the same seed: round(n * test)
    test pairs and round(n * val) validation pairs per user, at least one of each, and the rest
    (at least one) to train on. The records of one comparison asked again (`comparison_key`: a row
    given twice, or judged both ways) go to one split together, so no test pair was trained on
    (a split may then take a few records more than its count). Raises ValueError naming `val` or
    `test` unless both are in [0, 1) with val + test < 1 (else no pair is left to train on), and
    naming the first user left nothing to train on (fewer than 3 pairs, or more at large fractions,
    or fewer than 3 different comparisons): a seen user the model never trains on would be scored
    with the weights it started from."""
    for name, value in (("val", val), ("test", test)):
        if not 0 <= value < 1:
            raise ValueError(f"`{name}` must be a fraction in [0, 1), got {value!r}")
    if val + test >= 1:
        raise ValueError(f"`val` + `test` must be below 1 (the rest trains), got {val} + {test}")
    split = SeenSplit(train=[], val=[], test=[])
    for user in sorted(users):
        pairs = list(users[user])
        random.Random(f"{seed}:{user}").shuffle(pairs)
        n_test = max(1, round(len(pairs) * test))
        n_val = max(1, round(len(pairs) * val))
        if len(pairs) - n_test - n_val < 1:
            raise ValueError(f"user {user!r} has {len(pairs)} comparisons: {n_test} go to test and {n_val} to validation, "
                             f"none is left to train on (at least {n_test + n_val + 1} needed); leave the user out "
                             "or fit them as a new user (`fit_user`)")
        groups = repeats_together(pairs)  # without repeats: one record each, the split as by counts alone
        if len(groups) < 3:
            raise ValueError(f"user {user!r} has {len(pairs)} comparisons but only {len(groups)} different ones (the rest "
                             "repeat them): a test, a validation and a training comparison need 3; leave the user out "
                             "or fit them as a new user (`fit_user`)")
        test_pairs = _take(groups, n_test, leave=2)
        val_pairs = _take(groups, n_val, leave=1)
        split.test.extend(test_pairs)
        split.val.extend(val_pairs)
        split.train.extend(_rest(pairs, test_pairs, val_pairs))
    return split


def split_unseen(
    users: dict[str, list[Preference]], seed: int, query_fraction: float = 0.3, min_query: int = 10
) -> UnseenSplit:
    """Per user: a fixed query set of max(min_query, round(n * query_fraction)) pairs (a few more where the
    last comparison taken repeats: its repeats go with it, `comparison_key`), and the rest as an ordered support pool. Raises ValueError naming `query_fraction` (not in [0, 1]) or
    `min_query` (not a whole number >= 0: 1.5 is refused)."""
    if not 0 <= query_fraction <= 1:
        raise ValueError(f"`query_fraction` must be a fraction in [0, 1], got {query_fraction!r}")
    whole("split_unseen", 0, min_query=min_query)
    split = UnseenSplit(support={}, query={})
    for user in sorted(users):
        pairs = list(users[user])
        random.Random(f"{seed}:{user}").shuffle(pairs)
        n_query = max(min_query, round(len(pairs) * query_fraction))
        # a comparison asked again is a query or in the pool, never both
        split.query[user] = _take(repeats_together(pairs), n_query, leave=0)
        split.support[user] = _rest(pairs, split.query[user])
    return split


def ukp_protocol(records: list[Preference], seed: int = 0) -> Protocol:
    """UKP: seen = workers with >= 100 non-tie judgments, unseen = workers with 50 to 99."""
    users = by_user([r for r in records if not r.tie])
    seen = {u: p for u, p in users.items() if len(p) >= 100}
    unseen = {u: p for u, p in users.items() if 50 <= len(p) < 100}
    return Protocol(
        name="ukp",
        seen=split_seen(seen, seed),
        unseen=split_unseen(unseen, seed),
        group_attribute="worker_stance",
    )


MIN_FILE_PAIRS = 5  # strict comparisons a user of a preference file needs to be a seen user (`file_protocol`)


def file_protocol(records: list[Preference], seed: int = 0, min_pairs: int = MIN_FILE_PAIRS) -> Protocol:
    """Any preference file (e.g. a snapshot of the service's own feedback): every user with at least
    `min_pairs` different strict comparisons (a repeated one counts once: `comparison_key`) is a seen user, split train/val/test (`split_seen`); there are
    no unseen users; a user with fewer is left out, counted in `left_out`. Raises ValueError naming `min_pairs` below 3 (each seen user needs one
    comparison to test, one to validate and one to train on), and when no user has that many
    (saying how many records are ties), and naming `seed` when it is not a whole number >= 0 (1.5 is refused, not
    taken as a seed by its text)."""
    whole("file_protocol", 0, seed=seed)
    if min_pairs < 3:
        raise ValueError(f"`min_pairs` must be >= 3 (a test, a validation and a training pair per user), got {min_pairs!r}")
    strict = by_user([r for r in records if not r.tie and r.rejected])
    different = {u: len({comparison_key(r) for r in p}) for u, p in strict.items()}
    users = {u: p for u, p in strict.items() if different[u] >= min_pairs}
    if not users:
        ties = sum(r.tie for r in records)
        rows, repeats = sum(map(len, strict.values())), sum(len(p) - different[u] for u, p in strict.items())
        notes = [f"of {len(records)} records, {ties} of them ties: equal answers, which pairwise models leave out"] if ties else []
        if repeats:  # a user may have more rows than the threshold in the file: say why they count less
            notes.append(f"{repeats} of the {rows} strict records repeat a comparison their user gave before, which counts once")
        among = f" ({'; '.join(notes)})" if notes else ""
        raise ValueError(f"no user has {min_pairs} or more strict comparisons to train on{among}")
    # every user of the file who is not a seen user, one with ties only (0 strict comparisons) too
    left_out = {u: len(strict.get(u, ())) for u in sorted({r.user_id for r in records}) if u not in users}
    return Protocol(name="file", seen=split_seen(users, seed), unseen=UnseenSplit(support={}, query={}), left_out=left_out)
