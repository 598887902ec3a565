"""What review session trial48b found in the audit's 95% intervals (trial48b): each test drives `pluralign audit --store`
(`main`, in this process, as the admin route's audit job runs it) on a real LanceDB store in a temp folder."""

from __future__ import annotations

import json

import numpy as np

from tests.unit.clitools import cli


def _store(folder, groups: int, users: int = 4, per_user: int = 6) -> None:
    """`groups` segments of `users` users each; every group's users give the same comparisons (the same vectors, in the
    same order) as the first group's, so every group's accuracies come out the same, both models'."""
    from pluralign.store import Store, StoredPreference

    rng = np.random.default_rng(7)
    theirs = rng.standard_normal((users, per_user, 8)) + np.r_[0.5, np.zeros(7)]  # (users, per_user, d)
    stored, diffs = [], []
    for g in range(groups):
        for u in range(users):
            for i in range(per_user):
                stored.append(StoredPreference(tenant="acme", user_id=f"g{g}u{u}", pref_id=f"p{g}-{u}-{i}", prompt=f"q{i}",
                                               chosen=f"a{g}-{u}-{i}", rejected=f"b{g}-{u}-{i}", kind="comparison",
                                               created_at=float(i), attributes={"segment": f"s{g}"}))
                diffs.append(theirs[u, i])
    diff = np.asarray(diffs, np.float32)
    Store(str(folder), "enc", 8).add_preferences(stored, diff, diff, np.zeros_like(diff))


def _audit(capsys, folder, *more: str):
    code, out, err = cli(capsys, "audit", "--store", str(folder), "--group-by", "segment", "--min-comparisons", "0", *more)
    assert code == 0, err
    return out


def test_two_groups_of_equal_accuracy_get_the_interval_of_their_difference_not_zero(tmp_path, capsys):
    """Two groups of 4 users whose accuracies come out equal: `extremes` names the first as both worst and best, and the
    gap's interval was that group's resamples minus themselves, [0, 0], as if the audit were sure to the last digit
    that the groups are served alike. It is the interval of one group's accuracy minus the other's: about +-0.3 for
    groups this small. Failed before: [0.0, 0.0] for both models."""
    _store(tmp_path / "db", groups=2)
    report = json.loads(_audit(capsys, tmp_path / "db", "--json").splitlines()[-1])
    s0, s1 = report["groups"]
    assert s0["personalized_accuracy"] == s1["personalized_accuracy"] and s0["base_accuracy"] == s1["base_accuracy"], report
    for name in ("gap_interval", "base_gap_interval"):
        lo, hi = report[name]
        assert lo < -0.1 and hi > 0.1, (name, lo, hi)  # holds 0, and is as wide as two groups of 4 users allow


def test_one_group_has_no_gap_interval_and_is_not_said_to_be_told_apart_from_itself(tmp_path, capsys):
    """A tenant whose comparisons all fall in one group: the gap is 0 (best and worst are that group) and there is no
    second group to tell it from; the report said [0, 0] and the table 'cannot tell the groups apart'. Now no interval
    (null), as for no gap, and the table says the gap alone. Failed before: [0.0, 0.0]."""
    _store(tmp_path / "db", groups=1)
    report = json.loads(_audit(capsys, tmp_path / "db", "--json").splitlines()[-1])
    assert (report["gap"], report["gap_interval"], report["base_gap_interval"]) == (0.0, None, None), report
    assert report["groups"][0]["personalized_accuracy_interval"] is not None  # the group's own interval stands
    table = _audit(capsys, tmp_path / "db")
    assert "cannot tell" not in table and "gap 0.000 (base:" in table, table
