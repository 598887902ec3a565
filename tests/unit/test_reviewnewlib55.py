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
