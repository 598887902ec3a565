"""Audits in session 49: small groups give no user's own figures away, the one-size-fits-all model sees every direction,
and `ties_skipped` counts the ties of the comparisons scored (`since`). The CLI tests drive `pluralign audit --store`
(`main`, in this process, as the admin route's audit job runs it) on a real LanceDB store in a temp folder, or
`pluralign audit --data` on a preference file."""

from __future__ import annotations

import json

import msgspec
import numpy as np

from tests.unit.clitools import cli, write_jsonl


def _store(folder, sizes: dict[str, int], per_user: int = 6, ties_per_user: int = 0) -> None:
    """A store of tenant acme: `sizes[segment]` users in each segment, `per_user` comparisons each at times 0, 1, ...,
    and `ties_per_user` ties each at times 0, 1, ..."""
    from pluralign.store import Store, StoredPreference

    rng = np.random.default_rng(3)
    stored = []
    for segment, users in sizes.items():
        for u in range(users):
            user = f"{segment}-{u}"
            for i in range(per_user + ties_per_user):
                tie, at = i >= per_user, float(i if i < per_user else i - per_user)
                stored.append(StoredPreference(tenant="acme", user_id=user, pref_id=f"{user}-{i}", prompt=f"q{i}",
                                               chosen=f"a {user} {i}", rejected=f"b {user} {i}", kind="comparison", tie=tie,
                                               created_at=at, attributes={"segment": segment}))
    diff = (rng.standard_normal((len(stored), 8)) + np.r_[0.7, np.zeros(7)]).astype(np.float32)
    Store(str(folder), "enc", 8).add_preferences(stored, diff, diff, np.zeros_like(diff))


def _audit(capsys, folder, *options: str) -> tuple[list[str], dict]:
    code, out, err = cli(capsys, "audit", "--store", str(folder), "--group-by", "segment", "--min-comparisons", "0", *options)
    assert code == 0, err
    *table, last = out.strip().splitlines()
    return table, json.loads(last)


def test_no_group_of_the_audit_gives_one_users_own_figures_away(tmp_path, capsys):
    """A group of 2 or 3 users had a 95% interval whose ends were its worst and best user's own accuracy (a resample of
    one user's comparisons alone is 25% likely at 2 users, 4% at 3: inside the 2.5%-97.5% percentiles); a group of
    one user (the default `min_group_size` is 1) had its user's accuracy, ECE and win rate as its figures; and with it
    suppressed, the overall figures less the groups shown gave them back. Failed before: `solo` was shown, `pair` and
    `trio` had intervals ([0.33, 0.83] was pair's: its two users' own accuracies)."""
    _store(tmp_path / "db", {"big": 6, "pair": 2, "trio": 3, "solo": 1})
    table, report = _audit(capsys, tmp_path / "db")
    groups = {g["group"]: g for g in report["groups"]}
    assert {name: g["users"] for name, g in groups.items()} == {"big": 6, "pair": 2, "trio": 3}
    assert report["suppressed_groups"] == 1 and report["min_group_size"] == 1  # as asked; a group of one: suppressed all the same
    assert report["interval_min_users"] == 5
    assert groups["big"]["personalized_accuracy_interval"] is not None and groups["big"]["base_accuracy_interval"] is not None
    for small in ("pair", "trio"):
        assert groups[small]["personalized_accuracy_interval"] is None and groups[small]["base_accuracy_interval"] is None
    # the overall less big, pair and trio would be solo's own figures: withheld; nor is there a gap interval (pair and
    # trio are ranked, and have no resamples to bound every ranked pair with)
    assert report["overall"] is None
    assert report["gap"] is not None and report["gap_interval"] is None and report["base_gap_interval"] is None
    assert report["users"] == 12 and report["comparisons"] == 72  # the counts stand
    # the table says what is withheld and why
    rows = {line.split()[0].strip('"'): line for line in table[2:] if line.startswith('  "')}
    assert rows["pair"].split()[4] == rows["trio"].split()[4] == "withheld" and "withheld" not in rows["big"], table
    text = "\n".join(table)
    assert "intervals withheld for groups of fewer than 5 users: their ends would be their users' own accuracies" in text, text
    assert "overall figures withheld: the suppressed groups hold fewer than 2 users" in text, text


def test_the_overall_figures_stand_when_the_suppressed_groups_hold_enough_users(tmp_path, capsys):
    """`min_group_size` 3 suppresses pair (2 users), solo and lone (1 each): together 4 users, more than a group shown
    must hold, so the overall (over them too) is shown, with its interval (13 users). `min_group_size` 7 suppresses every
    group: the overall, over all 13 users, is shown. (With solo alone under 2 users, neither is: review session 49,
    tests/unit/test_reviewaudit49.py.)"""
    _store(tmp_path / "db", {"big": 6, "pair": 2, "trio": 3, "solo": 1, "lone": 1})
    _, report = _audit(capsys, tmp_path / "db", "--min-group-size", "3")
    assert [g["group"] for g in report["groups"]] == ["big", "trio"] and report["suppressed_groups"] == 3
    assert report["overall"] is not None and report["overall"]["users"] == 13
    assert report["overall"]["personalized_accuracy_interval"] is not None
    _, report = _audit(capsys, tmp_path / "db", "--min-group-size", "7")
    assert report["groups"] == [] and report["suppressed_groups"] == 5 and report["overall"]["users"] == 13


def test_a_tenant_of_one_user_shows_no_figure_of_theirs(tmp_path, capsys):
    """One user audited: their group is suppressed and the overall is theirs alone, withheld. Before: both were shown."""
    _store(tmp_path / "db", {"solo": 1})
    _, report = _audit(capsys, tmp_path / "db")
    assert report["groups"] == [] and report["overall"] is None and report["suppressed_groups"] == 1
    assert report["worst_group"] is None and report["gap"] is None


def test_a_report_stored_before_schema_4_is_read_without_its_small_groups_intervals():
    """trial48b's release stored intervals for groups of any size (schema 3). Read now, a group of fewer than 5 users
    (and a gap among whose ranked groups there is one) has none, as a new audit gives; larger groups keep theirs."""
    from pluralign.fairness.report import AuditReport, GroupMetrics, decode_report, report_encoder

    def group(name, users, interval):
        return GroupMetrics(group=name, users=users, comparisons=10 * users, personalized_accuracy=0.6, base_accuracy=0.5,
                            personalized_ece=0.1, base_ece=0.1, personalized_accuracy_interval=interval,
                            base_accuracy_interval=interval)

    report = AuditReport(group_by="segment", created_at=1.0, encoder_id="e", personalized_model="online-logistic",
                         base_model="crossfit-logistic", users=8, comparisons=80, groups=[group("a", 6, (0.5, 0.7)),
                         group("b", 2, (0.33, 0.83))], overall=group("all", 8, (0.55, 0.65)), gap=0.0, gap_interval=(-0.2, 0.2),
                         base_gap=0.0, base_gap_interval=(-0.2, 0.2))
    old = msgspec.json.encode({k: v for k, v in msgspec.to_builtins(report).items() if k != "interval_min_users"} | {"schema_version": 3})
    read = decode_report(old)
    assert read.schema_version == 4 and read.interval_min_users == 5
    assert [g.personalized_accuracy_interval for g in read.groups] == [(0.5, 0.7), None]
    assert read.groups[1].base_accuracy_interval is None and read.overall.personalized_accuracy_interval == (0.55, 0.65)
    assert read.gap_interval is None and read.base_gap_interval is None
    assert decode_report(report_encoder.encode(read)) == read


def test_a_store_audit_since_a_time_counts_the_ties_of_that_time_on(tmp_path, capsys):
    """`ties_skipped` counted every stored tie of the audited users whatever `since` said, while `comparisons` counted
    only those scored. Each of 4 users: 6 comparisons and 4 ties at times 0-5 and 0-3; since 2: 16 comparisons and
    8 ties. Failed before: 16 ties."""
    _store(tmp_path / "db", {"a": 2, "b": 2}, ties_per_user=4)
    _, report = _audit(capsys, tmp_path / "db")
    assert (report["comparisons"], report["ties_skipped"]) == (24, 16)
    _, report = _audit(capsys, tmp_path / "db", "--since", "2")
    assert (report["comparisons"], report["ties_skipped"]) == (16, 8)


def test_a_file_audit_since_a_time_counts_the_ties_of_that_time_on(tmp_path, capsys):
    """The same for `pluralign audit --data`: a tie before `since` is not counted. Failed before: 2 ties, not 1."""
    from tests.conftest import REPO

    rows = [{"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
             "created_at": 1_700_000_000 + i, "attributes": {"segment": f"s{u % 2}"}} for u in range(4) for i in range(4)]
    rows += [{"user_id": "u0", "prompt": "A tie?", "chosen": "Yes.", "rejected": "No.", "tie": True, "created_at": 1_700_000_000 + t,
              "attributes": {"segment": "s0"}} for t in (0, 3)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    cache = ["--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")]
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--min-comparisons", "0", "--json", *cache)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["ties_skipped"] == 2
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--min-comparisons", "0", "--json",
                         "--since", "1700000002", *cache)
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["comparisons"], report["ties_skipped"]) == (8, 1)


def test_the_one_size_fits_all_model_sees_every_direction_of_the_differences():
    """What separates chosen from rejected lies in a direction of small spread (the 100th of 128 here, as on
    UKPConvArg1 much of it lies past the top 64: 0.702 with 64, 0.746 with all 384): the base model on the top 64
    directions could not see it and was near chance, so the audit credited personalization with the whole of it.
    Failed before: base accuracy 0.5 +- 0.03."""
    from pluralign.fairness.audit import AuditConfig, Comparisons, audit

    rng = np.random.default_rng(0)
    users, per_user, d = 40, 50, 128
    n = users * per_user
    scale = np.r_[np.full(99, 3.0), 0.3, np.full(d - 100, 0.2)]  # the signal's direction: the 100th by spread
    diff = rng.standard_normal((n, d)) * scale
    diff[:, 99] = np.abs(diff[:, 99]) * np.where(rng.random(n) < 0.9, 1.0, -1.0)  # chosen along it 90% of the time
    user = np.repeat(np.arange(users), per_user)
    c = Comparisons(diff=diff.astype(np.float32), user=user, users=[f"u{i:02d}" for i in range(users)],
                    group=(user % 2).astype(np.int64), groups=["a", "b"], time=np.tile(np.arange(per_user, dtype=np.float64), users),
                    policy_win=np.zeros(n, np.int8), encoder_id="synthetic")
    report = audit(c, "segment", AuditConfig(min_comparisons=1, resamples=100))
    assert report.overall.base_accuracy > 0.75, report.overall  # (0.80: 2,000 comparisons, 128 directions, ridge 1)
    # the top 64 alone, as until session 49 (now a setting): near chance
    assert abs(audit(c, "segment", AuditConfig(min_comparisons=1, resamples=100, base_dim=64)).overall.base_accuracy - 0.5) < 0.05
