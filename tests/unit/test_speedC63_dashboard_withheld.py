"""The dashboard's words for what an audit withholds to protect its users (session 49), on a report like the one
tests/service/test_break18_audit.py's slow-marked test audits over the real app (two groups of two users, one group of
one user suppressed): render_dashboard directly, no service, no audit job's worker (speedC63)."""

from __future__ import annotations

from pluralign.fairness.report import AuditReport, GroupMetrics
from service.admin.dashboard import render_dashboard


def test_a_page_of_groups_too_small_for_an_interval_says_why_each_figure_is_withheld():
    groups = [GroupMetrics(group=name, users=2, comparisons=12, personalized_accuracy=0.75, base_accuracy=0.5,
                           personalized_ece=0.05, base_ece=0.1) for name in ("east", " (no value)")]
    report = AuditReport(group_by="segment", created_at=1_764_000_000, encoder_id="e", personalized_model="online-logistic",
                         base_model="crossfit-logistic", users=5, comparisons=30, groups=groups, worst_group="east",
                         worst_group_accuracy=0.75, gap=0.0, suppressed_groups=1, overall=None)
    assert report.interval_min_users == 5 and all(g.personalized_accuracy_interval is None for g in groups)
    page = render_dashboard(report, [report], [], tenants=["acme"])
    assert page.count("(no interval: fewer than 5 users)") == 4, page  # each group's two accuracies
    assert "Intervals withheld for groups of fewer than 5 users: their ends would be their users&#x27; own accuracies." in page, page
    assert "Overall figures withheld: the suppressed groups hold fewer than 2 users" in page, page
    assert "<bdi>east</bdi>" in page
