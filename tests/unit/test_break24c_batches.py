"""group_batches cuts a context group longer than the batch size (session 24c): one user's episodes
without shots are all one group, and uncut they made every adapter step one packed row of all the
user's comparisons (`--batch-size` ignored; the real SmolLM2 adapter job held over 6 GB)."""

from __future__ import annotations

from pluralign.policy.fspo import group_batches


def test_a_group_longer_than_the_batch_size_is_cut_into_batches_of_that_size():
    batches = group_batches([list(range(153))], 4)
    assert [len(b) for b in batches] == [4] * 38 + [1]
    assert [i for b in batches for i in b] == list(range(153))  # every episode once, in order


def test_groups_within_the_batch_size_are_never_split():
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13, 14], [15]]
    batches = group_batches(groups, 4)
    assert batches == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13], [14, 15]]
    assert group_batches([[0, 1], [2, 3], [4, 5], [6, 7]], 8) == [[0, 1, 2, 3, 4, 5, 6, 7]]  # FSPO's packed rows, as before
