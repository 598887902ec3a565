"""Review of session 49's audits: what two audits of one store give away together. The CLI tests drive
`pluralign audit --store` (`main`, in this process, as the admin route's audit job runs it) on a real LanceDB store in a
temp folder (`tests/unit/test_audit49.py`'s store)."""

from __future__ import annotations

import msgspec

from tests.unit.test_audit49 import _audit, _store


def _correct(g: dict, which: str = "personalized_accuracy") -> float:
    return g[which] * g["comparisons"]


def test_no_min_group_size_shows_the_overall_that_less_the_groups_shown_is_one_users(tmp_path, capsys):
    """By segment, solo's one user is suppressed and the overall withheld (big's 6 and pair's 2 users are shown). The
    same audit asked with `--min-group-size 3` suppresses pair too: 3 users, as many as it asks, so it showed its
    overall, over the same comparisons, and that less big and pair (as the first audit shows them) was solo's own
    accuracy, as the first one's withheld overall would have given. The one-user floor holds whatever a request asks:
    an overall is withheld in every audit while the groups of fewer than 2 users hold one user. Failed before: the
    second audit showed its overall (3 users suppressed, 3 asked)."""
    _store(tmp_path / "db", {"big": 6, "pair": 2, "solo": 1})
    table, first = _audit(capsys, tmp_path / "db")
    assert [g["group"] for g in first["groups"]] == ["big", "pair"] and first["overall"] is None
    # one group, counted in the singular (session admin55; before, '1 groups suppressed' where the dashboard says
    # '1 group of fewer than 2 users suppressed')
    assert "(0 ties skipped, 1 group suppressed)" in table[0], table[0]
    for size in ("3", "9"):  # pair + solo (3 users), or every group (9 users): none of them shows the overall
        table, second = _audit(capsys, tmp_path / "db", "--min-group-size", size)
        assert second["overall"] is None, (size, second["overall"])
        assert "or one user alone is in a group of their own" in "\n".join(table), table  # the table says why
    # a group of two users beside it (solo is no longer alone in the groups under the floor): the overall is shown
    _store(tmp_path / "db2", {"big": 6, "pair": 2, "solo": 1, "other": 1})
    _, third = _audit(capsys, tmp_path / "db2", "--min-group-size", "3")
    assert third["overall"] is not None and third["overall"]["users"] == 10


def test_the_dashboard_says_at_what_size_groups_were_suppressed_and_what_would_show_them(tmp_path, capsys):
    """A group of one user is suppressed whatever `min_group_size` says (session 49), but the dashboard went on saying
    the request's: "1 group of fewer than 1 users suppressed", and for a tenant of one user "lower min_group_size to see
    small groups", which no setting can. Failed before: both sentences, on the page rendered from the real audit."""
    from pluralign.fairness.report import AuditReport
    from service.admin.dashboard import render_dashboard

    _store(tmp_path / "db", {"big": 2, "solo": 1})
    _, report = _audit(capsys, tmp_path / "db")
    report = msgspec.convert(report, AuditReport)
    page = render_dashboard(report, [report], [], tenants=["acme"])
    assert "1 group of fewer than 2 users suppressed" in page, page
    assert "groups of at least 2 users" in page, page  # the chart's settings: what a group shown holds
    _store(tmp_path / "one", {"solo": 1})
    _, report = _audit(capsys, tmp_path / "one")
    page = render_dashboard(msgspec.convert(report, AuditReport), [], [])
    assert "1 group of fewer than 2 users suppressed: no worst group to show (a group of one user is never shown)." in page, page
    assert "lower <code>min_group_size</code>" not in page


def test_a_report_stored_before_schema_4_shows_no_group_of_one_user_nor_the_overall_that_gives_it_back():
    """A report of schema 3 named groups of one user (the default `min_group_size` of 1 suppressed none): read now, as a
    new audit gives, such a group is suppressed (counted, not shown), the worst group and gaps are drawn from the groups
    left, and the overall is withheld (less the groups shown it would be that user's). Until review session 49 they were
    read as stored: the dashboard's table of every stored audit named `solo` as the worst group with its one user's
    accuracy, however many audits came since (docs/admin.md said to run the audit again: that adds an audit, it replaces
    none). Failed before: `solo` on the page, 0.300."""
    from pluralign.fairness.report import AuditReport, GroupMetrics, decode_report
    from service.admin.dashboard import render_dashboard

    def group(name, users, accuracy):
        return GroupMetrics(group=name, users=users, comparisons=10 * users, personalized_accuracy=accuracy,
                            base_accuracy=accuracy - 0.05, personalized_ece=0.1, base_ece=0.1)

    report = AuditReport(group_by="segment", created_at=1.0, encoder_id="e", personalized_model="online-logistic",
                         base_model="crossfit-logistic", users=9, comparisons=90, suppressed_groups=0,
                         groups=[group("big", 6, 0.7), group("pair", 2, 0.6), group("solo", 1, 0.3)], overall=group("all", 9, 0.63),
                         worst_group="solo", worst_group_accuracy=0.3, gap=0.4, base_worst_group="solo", base_worst_group_accuracy=0.25,
                         base_gap=0.4)
    old = msgspec.json.encode({k: v for k, v in msgspec.to_builtins(report).items() if k != "interval_min_users"} | {"schema_version": 3})
    read = decode_report(old)
    assert [g.group for g in read.groups] == ["big", "pair"] and read.suppressed_groups == 1 and read.overall is None
    assert (read.worst_group, read.worst_group_accuracy, read.base_worst_group) == ("pair", 0.6, "pair")
    assert abs(read.gap - 0.1) < 1e-9 and abs(read.base_gap - 0.1) < 1e-9
    assert (read.users, read.comparisons, read.withheld_groups) == (9, 90, 0)  # the counts stand, as a new audit's do
    page = render_dashboard(read, [read], [])
    assert "solo" not in page and "0.300" not in page, page
    # a schema-3 report without such a group reads as it was (its intervals aside)
    kept = msgspec.structs.replace(report, groups=report.groups[:2], worst_group="pair", worst_group_accuracy=0.6, gap=0.1)
    old = msgspec.json.encode({k: v for k, v in msgspec.to_builtins(kept).items() if k != "interval_min_users"} | {"schema_version": 3})
    assert decode_report(old).overall == report.overall and decode_report(old).worst_group == "pair"
