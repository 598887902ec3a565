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
    _, first = _audit(capsys, tmp_path / "db")
    assert [g["group"] for g in first["groups"]] == ["big", "pair"] and first["overall"] is None
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
