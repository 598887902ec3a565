"""Review of session newlib55's library and CLI fixes: what still broke when they were driven as a user would."""

from __future__ import annotations

import re


def test_per_user_accuracy_names_a_missing_user_index_and_takes_whole_numbers_of_any_kind():
    """newlib55 made `user_accuracy` and `macro` refuse user indices that are not whole numbers. Its check read numpy
    dtypes only: a list holding a missing index ([0, 1, None], an object array) failed inside the check itself with
    "AttributeError: 'int' object has no attribute 'item'", naming neither `users` nor the element, and an object array
    of whole numbers (a pandas column cast to object), which int() had read, was refused. A table of indices (N, 2)
    whose length matched was flattened and its first N entries read as the users, a wrong answer without a word."""
    import numpy as np
    import pytest

    from pluralign.evaluation import macro, user_accuracy
    from pluralign.fairness.metrics import credit

    correct = credit([0.9, 0.1, 0.8])
    for users, problem in (([0, 1, None], "element 2 is None"), (np.array([0, "bob", 1], dtype=object), "element 1 is 'bob'"),
                           ([0, 1.5, 1], "element 1 is 1.5"), (np.array([[0, 1], [1, 0], [0, 0]]), "shape (3, 2)")):
        for accuracy in (user_accuracy, macro):
            with pytest.raises(ValueError, match=re.escape("`users`") + ".*" + re.escape(problem)):
                accuracy(correct, users)
    for users in (np.array([0, 1, 0], dtype=object), [0, np.int64(1), 0.0]):
        assert user_accuracy(correct, users) == {0: 1.0, 1: 0.0}
        assert macro(correct, users) == 0.5


def test_train_fspo_on_a_file_of_one_user_is_not_refused_for_its_shots(capsys, tmp_path):
    """newlib55 made `train fspo` refuse a --shots no unseen user can be scored with (the held-out users lost to
    training for a score that could not be taken). A file of one user holds no user out (the training needs one:
    `unseen_users`), so nothing is lost; yet the run was refused, blaming the shots: "--shots 2: ... no unseen user of
    --data ... has that many (at most 0, among 0 unseen users); lower --shots", which no --shots mends. It trains as it
    did before newlib55 (here: as far as loading the base model)."""
    from tests.unit.clitools import cli, write_jsonl

    rows = [{"user_id": "ann", "prompt": f"Pick {i}?", "chosen": "yes", "rejected": f"no {i}"} for i in range(10)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    code, out, err = cli(capsys, "train", "fspo", "--population", "file", "--data", data, "--shots", "2",
                         "--base", str(tmp_path / "no-model"), "--out", str(tmp_path / "fspo"))
    assert code == 2 and "--shots" not in err and "no-model" in err, err  # it got as far as loading the base model


def test_ranked_pairs_of_no_candidates_is_no_comparison_and_takes_a_tensor_that_requires_grad():
    """newlib55 made `ranked_pairs` check its scores, (n,) finite numbers, "a numpy array, a list or a CPU tensor". A
    prompt with no candidates left (all filtered out) has none to rank, yet the default pairing failed with numpy's
    "attempt to get argmax of an empty sequence"; and scores straight from a reward model (a tensor that requires grad)
    failed with torch's "Can't call numpy() on Tensor that requires grad". Both are read now (a tensor detached, as
    `user_accuracy` reads its tensors)."""
    import torch

    from pluralign.policy.maxmin import all_pairs, best_vs_rest, ranked_pairs

    for pairing in (best_vs_rest, all_pairs):
        assert ranked_pairs("q", [], [], source="s", pairing=pairing) == []
    scores = torch.tensor([0.1, 0.5, 0.2], requires_grad=True) * 2
    pairs = ranked_pairs("q", ["a", "b", "c"], scores, source="s")
    assert [(p.chosen, p.rejected) for p in pairs] == [("b", "a"), ("b", "c")]


def test_group_accuracy_names_the_missing_label_when_labels_of_two_kinds_are_as_many():
    """newlib55 named a group label of another kind than the most common one ("`groups` element 1 is None, a NoneType
    among str labels"). When the two kinds were as many (half the comparisons without a group), the kind named the
    odd one was whichever `set` gave first: ['a', None] was answered "element 0 is 'a', a str among NoneType labels",
    blaming the one good label. str labels (what `groups` takes) now win a tie; a majority still decides."""
    import pytest

    from pluralign.evaluation import group_accuracy
    from pluralign.fairness.metrics import credit

    for groups, named in ((["a", None], "element 1 is None, a NoneType among str labels"),
                          ([None, "a"], "element 0 is None, a NoneType among str labels"),
                          ([1, 2, "x"], "element 2 is 'x', a str among int labels")):
        with pytest.raises(ValueError, match=re.escape(f"`groups` {named}")):
            group_accuracy(credit([0.9, 0.1, 0.8][: len(groups)]), groups)


def test_ranked_pairs_names_scores_too_far_apart_for_a_comparisons_margin():
    """`ranked_pairs` records each comparison's score difference as its `margin`, which a Preference holds up to
    MAX_MARGIN (1e6, what the importers and the API take). Finite scores further apart than that (raw rewards of
    another scale; 1e308 and -1e308, whose difference is inf) passed newlib55's check and then failed in Preference
    with "`margin` must be a number >= 0 ... and at most 1e6 (MAX_MARGIN), got 2000000.0" (for inf: "...: leave it out
    (or null)"), which reads as ranked_pairs' own `margin` (1e-6 here), one the caller never set. Now a ValueError
    naming `scores` and how far apart they are."""
    import pytest

    from pluralign.policy.maxmin import all_pairs, best_vs_rest, ranked_pairs

    for scores in ([0.0, 2e6, 1.0], [1e308, -1e308, 0.0]):
        for pairing in (best_vs_rest, all_pairs):
            with pytest.raises(ValueError, match=re.escape("`scores` span ") + ".*" + re.escape("MAX_MARGIN")):
                ranked_pairs("q", ["a", "b", "c"], scores, source="s", pairing=pairing)
    assert len(ranked_pairs("q", ["a", "b", "c"], [0.0, 1e6, 1.0], source="s")) == 2  # up to MAX_MARGIN apart: taken


def test_ranked_pairs_refuses_only_the_comparisons_it_makes_that_are_too_far_apart():
    """Review of review newlib55: the MAX_MARGIN check read the span of all the scores, so a pairing of its caller's
    (`Pairing` is public) that pairs neighbours only, each pair well within MAX_MARGIN, was refused, and so were
    identical candidates, which are never paired. Now the comparisons made are checked, each naming its two
    candidates."""
    import numpy as np
    import pytest

    from pluralign.policy.maxmin import best_vs_rest, ranked_pairs

    def neighbours(scores, margin):  # each candidate over the next one down
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [(int(a), int(b)) for a, b in zip(order, order[1:], strict=False) if scores[a] - scores[b] > margin]

    made = ranked_pairs("q", ["a", "b", "c"], [0.0, 9e5, 1.8e6], source="s", pairing=neighbours)
    assert [(p.chosen, p.rejected, p.margin) for p in made] == [("c", "b", 9e5), ("b", "a", 9e5)], made
    assert ranked_pairs("q", ["a", "a"], [0.0, 2e6], source="s") == []  # identical: no comparison, no margin to hold
    with pytest.raises(ValueError, match=r"`scores` span 2e\+06 between candidates 1 and 0.*MAX_MARGIN"):
        ranked_pairs("q", ["a", "b", "c"], [0.0, 2e6, 1.0], source="s", pairing=best_vs_rest)
