"""newlib56: what a new user of the library met, driven as docs/library.md shows it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pluralign.evaluation import group_accuracy
from pluralign.fairness.metrics import percentile_interval, resampled_means
from pluralign.store import Store, StoredPreference


def test_group_accuracy_reads_group_labels_given_as_a_tensor_or_array_by_their_values():
    """Group labels as a torch tensor (a PairBatch-like field of group indices) were keyed by each 0-d tensor, whose
    hash is its identity: every comparison was its own group, {tensor(0): 1.0, tensor(0): 0.0, ...}, four groups for
    two, and min() of it no worst group at all. A numpy array's labels were numpy scalars (np.str_('a'))."""
    correct = [1.0, 0.0, 1.0, 1.0]
    expected = ({0: 1.0, 1: 0.5}, {0: 2, 1: 2})
    assert group_accuracy(correct, torch.tensor([0, 1, 0, 1])) == expected
    assert group_accuracy(torch.tensor(correct), np.array([0, 1, 0, 1])) == expected
    acc, pairs = group_accuracy(correct, np.array(["a", "b", "a", "b"]))
    assert (acc, pairs) == ({"a": 1.0, "b": 0.5}, {"a": 2, "b": 2}) and all(type(g) is str for g in acc)
    with pytest.raises(ValueError, match=r"`groups` must be one label per comparison, \(N,\), got shape \(2, 2\)"):
        group_accuracy(correct, torch.tensor([[0, 1], [0, 1]]))


def test_percentile_interval_names_no_samples_and_a_level_that_is_not_a_share():
    """No resamples (`resampled_means(..., resamples=0, rng)`) gave numpy's 'index -1 is out of bounds for axis 0 with
    size 0', and level=95 (a percent) 'Percentiles must be in the range [0, 100]', naming neither argument."""
    none_drawn = resampled_means([1.0, 0.0, 1.0], ["a", "b", "a"], 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"`samples` must be one or more finite numbers \(B,\), got shape \(0,\)"):
        percentile_interval(none_drawn)
    with pytest.raises(ValueError, match=r"`level` must be a share in \(0, 1\) \(0.95 for 95%\), got 95"):
        percentile_interval(np.array([0.5, 0.75]), level=95)
    with pytest.raises(ValueError, match="`samples` must be one or more finite numbers"):
        percentile_interval(np.array([0.5, np.nan]))
    assert percentile_interval(torch.tensor([0.0, 1.0]), level=0.5) == [0.25, 0.75]


def test_a_store_opens_at_a_pathlib_path_with_a_numpy_width(tmp_path):
    """`Store(tmp_path / "lance", ...)` failed with "'PosixPath' object has no attribute 'startswith'", and a width
    read from a numpy shape or config (np.int64(8)) was refused as not 'a whole number >= 1'."""
    store = Store(tmp_path / "lance ü", encoder_id="test-encoder", dim=np.int64(8))
    assert store.uri == str(tmp_path / "lance ü") and type(store.dim) is int
    row = StoredPreference(tenant="default", user_id="ann", pref_id="p1", prompt="q", chosen="yes", rejected="no",
                           kind="comparison", created_at=time.time())
    vectors = np.eye(3, 8, dtype=np.float32)
    assert store.add_preferences([row], vectors[:1], vectors[1:2], vectors[2:3]) == 1
    assert store.preferences_for("default", "ann")[1] == 1
    assert Store(tmp_path / "lance ü", encoder_id="test-encoder", dim=8).preferences_for("default", "ann")[1] == 1
    with pytest.raises(Exception, match="a whole number >= 1"):
        Store(tmp_path / "other", encoder_id="test-encoder", dim=np.float64(8.0))


def test_an_audit_s_user_groups_keyed_by_numbers_is_named_not_read_as_every_user_without_a_group(minilm):
    """A DataFrame's int user_id column makes the records' users '0', '1', ... (read_rows), while the same frame's
    groupby(...).to_dict() keys the groups by 0, 1, ...: no key matched, every user was in ' (no value)', and the audit
    ran and reported one group of 6 users, without a word. `pluralign audit --user-groups` refuses a file naming none of
    the users (check_user_groups); the library did not."""
    import pandas as pd

    from pluralign.data.io import read_rows
    from pluralign.fairness.audit import comparisons_from_records

    frame = pd.DataFrame([{"user_id": u, "prompt": f"When, {i}?", "chosen": f"At {i}.", "rejected": f"Later than {i}, sorry."}
                          for u in range(4) for i in range(3)])
    records, _ = read_rows(frame)
    by_number = {u: "odd" if u % 2 else "even" for u in range(4)}
    with pytest.raises(ValueError, match=r"`user_groups` names none of the 4 users of `records` \(its keys: 0 \(int\), "
                                         r"\.\.\.; the records' users: '0', \.\.\.\): key it by the records' user ids"):
        comparisons_from_records(records, minilm, "group", user_groups=by_number)
    c = comparisons_from_records(records, minilm, "group", user_groups={str(u): g for u, g in by_number.items()})
    assert sorted(c.groups) == ["even", "odd"]
    c = comparisons_from_records(records, minilm, "group", user_groups={"0": "even"})  # users it leaves out: no value
    assert sorted(c.groups) == [" (no value)", "even"]


def test_select_active_names_a_design_or_prior_it_cannot_use_before_it_chooses():
    """select_active checked its inputs only in the first fit_posterior, after a first choice: a zero prior precision
    (an improper prior) was "`cov` is not finite (NaN or inf)", a `cov` the caller never gave, after numpy's
    divide-by-zero warning; one comparison given as a (D,) row was "`design` has shape (1,)", not its shape (4,)."""
    from pluralign.user.active import select_active

    design = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(ValueError, match=r"`prior_precision` must be > 0 .*element 0 is 0.0"):
        select_active(design, np.zeros(4), np.zeros(4), 2)
    with pytest.raises(ValueError, match=r"`design` has shape \(4,\), expected \(N, D\)"):
        select_active(design[0], np.zeros(4), np.ones(4), 1)
    assert select_active(torch.tensor(design), torch.zeros(4), torch.ones(4), 2) == select_active(design, np.zeros(4), np.ones(4), 2)
