"""The dashboard page: SVG charts in the HTML, and drawn when headless Chromium renders it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import msgspec
import numpy as np
import pytest

from pluralign.fairness.report import AuditReport, GroupMetrics
from service.admin.dashboard import BASE, PERSONAL, render_dashboard
from training.jobs.record import Job


def group(name: str, personal: float, base: float, users: int = 10) -> GroupMetrics:
    return GroupMetrics(group=name, users=users, comparisons=users * 20, personalized_accuracy=personal,
                        base_accuracy=base, personalized_ece=0.05, base_ece=0.1)


def report(at: float, minority_personal: float) -> AuditReport:
    groups = [group("majority", 0.95, 0.93, 90), group("minority", minority_personal, 0.12, 10)]
    return AuditReport(
        group_by="segment", created_at=at, encoder_id="e", personalized_model="online-logistic", base_model="crossfit-logistic",
        users=100, comparisons=2000, groups=groups, worst_group="minority", worst_group_accuracy=minority_personal,
        gap=0.95 - minority_personal, base_worst_group="minority", base_worst_group_accuracy=0.12, base_gap=0.81,
    )


def jobs() -> list[Job]:
    now = time.time()
    return [
        Job(id="j1", kind="adapter", params={"user": "alice"}, state="succeeded", created_at=now, promoted=False,
            promotion_note="kept, not served: held-out accuracy 0.70 < 0.80"),
        Job(id="j2", kind="audit", params={"group_by": "segment"}, state="running", progress=0.4, created_at=now),
        Job(id="j3", kind="em", state="failed", error="exit code 2: <boom>", created_at=now),
    ]


def page() -> str:
    history = [report(1_764_000_000 + 3600 * i, 0.6 + 0.1 * i) for i in range(3)]
    return render_dashboard(history[-1], history[::-1], jobs())


def test_the_page_holds_the_three_charts_and_the_job_table():
    html = page()
    bars = re.findall(r'<rect class="bar (personalized|base)" data-group="(\w+)" data-value="([0-9.]+)"', html)
    assert sorted(bars) == sorted([("personalized", "majority", "0.9500"), ("base", "majority", "0.9300"),
                                   ("personalized", "minority", "0.8000"), ("base", "minority", "0.1200")])
    heights = {(s, g): float(h) for s, g, h in re.findall(r'class="bar (\w+)" data-group="(\w+)" data-value="[0-9.]+" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)"', html)}
    assert heights[("personalized", "minority")] > 6 * heights[("base", "minority")]  # bars scale with accuracy
    assert html.count('class="point personalized"') == 3 and 'class="line base"' in html  # three audits over time
    assert re.search(r'class="state-bar failed" data-count="1"', html) and 'data-count="1"' in html
    assert "&lt;boom&gt;" in html and "<boom>" not in html  # job text is escaped
    assert "kept, not served" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html  # nothing fetched


def test_an_empty_page_still_renders():
    html = render_dashboard(None, [], [])
    assert "No audit has been run yet" in html and "no stored audits yet" in html and "no jobs" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(html: str, tmp_path) -> np.ndarray:  # (H, W, 3) uint8
    from PIL import Image

    tmp_path.mkdir(parents=True, exist_ok=True)
    source, shot = tmp_path / "dashboard.html", tmp_path / "dashboard.png"
    source.write_text(html)
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=900,1500", f"--screenshot={shot}", source.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return np.asarray(Image.open(shot).convert("RGB"))


def _count(pixels: np.ndarray, hex_color: str) -> int:
    want = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels.astype(np.int64) - want) <= 8).all(axis=-1).sum())


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_headless_chromium_draws_the_charts(tmp_path):
    drawn = _screenshot(page(), tmp_path / "full")
    empty = _screenshot(render_dashboard(None, [], []), tmp_path / "empty")
    # the legend squares alone are a few hundred pixels; drawn bars and points are thousands
    assert _count(empty, PERSONAL) < 800 and _count(empty, BASE) < 800
    assert _count(drawn, PERSONAL) > 10_000 and _count(drawn, BASE) > 4_000
    assert _count(drawn, PERSONAL) > _count(drawn, BASE)  # personalized bars are taller here


def test_an_audit_whose_every_group_is_suppressed_names_no_worst_group():
    """Before: docs/admin.md's audit (`min_group_size=5`) on a young service suppressed every group, and the
    page read "Worst group <b>None</b> 0.000 personalized (gap 0.000)", as if a group scored 0; and a
    group of one user was "1 users, 1 pairs"."""
    empty = AuditReport(group_by="segment", created_at=1_764_000_000, encoder_id="e", personalized_model="online-logistic",
                        base_model="crossfit-logistic", users=2, comparisons=2, groups=[], suppressed_groups=2, min_group_size=5)
    html = render_dashboard(empty, [empty], [])
    assert "None" not in html and "0.000" not in html, re.search(r"Audit by.{0,300}", html)[0]
    assert "2 groups of fewer than 5 users suppressed" in html and "no worst group" in html
    one = AuditReport(group_by="segment", created_at=1_764_000_000, encoder_id="e", personalized_model="online-logistic",
                      base_model="crossfit-logistic", users=1, comparisons=1, groups=[group("solo", 1.0, 0.0, users=1)],
                      worst_group="solo", worst_group_accuracy=1.0, gap=0.0, base_worst_group="solo", base_worst_group_accuracy=0.0, base_gap=0.0)
    one.groups[0].comparisons = 1
    html = render_dashboard(one, [one], [])
    assert "1 user, 1 comparison." in html and ">1 user, 1 pair<" in html, re.findall(r"1 users?,[^<.]*", html)


def test_groups_flagged_for_few_comparisons_are_called_unranked_only_when_the_audit_did_not_rank_them():
    """An audit ranks flagged groups (fewer than `min_comparisons`) all the same when every group is flagged
    (`extremes`): the API names a worst group among them. Before, the page said under the chart and in every row
    "fewer than 50 comparisons: not ranked" and, in the summary above, "Worst group none 0.500" (a live audit of
    4 UKP workers, 100 comparisons)."""
    from pluralign.fairness.report import extremes

    def flagged(name: str, personal: float, comparisons: int) -> GroupMetrics:
        return msgspec.structs.replace(group(name, personal, 0.5, 3), comparisons=comparisons, too_few_comparisons=comparisons < 50)

    def audit(groups: list[GroupMetrics]) -> AuditReport:
        worst, worst_acc, gap = extremes(groups, lambda g: g.personalized_accuracy)  # as the audit ranks them
        return AuditReport(group_by="worker_stance", created_at=1_764_000_000, encoder_id="e", personalized_model="p",
                           base_model="b", users=6, comparisons=sum(g.comparisons for g in groups), min_comparisons=50,
                           groups=groups, worst_group=worst, worst_group_accuracy=worst_acc, gap=gap)

    every = audit([flagged("none", 0.5, 20), flagged("same", 0.7, 40)])
    assert every.worst_group == "none"  # ranked though flagged
    html = render_dashboard(every, [every], [])
    assert "not ranked" not in html, html
    assert "Worst group <b><bdi>none</bdi></b>" in html
    assert html.count("fewer than 50 comparisons: ranked all the same (every group has)") == 3  # the note and both rows

    some = audit([flagged("none", 0.5, 20), flagged("same", 0.7, 80)])
    assert some.worst_group == "same"  # the flagged group is left out of the ranking
    html = render_dashboard(some, [some], [])
    assert html.count("fewer than 50 comparisons: not ranked") == 2 and "ranked all the same" not in html  # the note and its row


def test_a_clients_value_without_a_value_reads_apart_from_the_group_without_one_in_the_charts_plain_text():
    """The page writes the group of comparisons without a value (NO_VALUE) "without a value"; a client may send that
    very value (any visible text up to 256 characters is one). The table and the chart's labels tell the two apart by
    italics, which the chart's screen-reader name and its tooltips (plain text) cannot carry: there a client's value is
    now in quotation marks, the group without one is not. Before (review session 44) both read "without a value: 0.50
    personalized, ..." and "without a value personalized: 0.500", as " (no value)" and "(no value)" had until
    session 44."""
    import html as htmllib

    from pluralign.fairness.audit import NO_VALUE
    from service.admin.dashboard import group_bars

    audit = msgspec.structs.replace(report(1_764_000_000, 0.5), groups=[group(NO_VALUE, 0.5, 0.9), group("without a value", 0.9, 0.4),
                                                                       group("trial", 0.7, 0.7)])
    svg = group_bars(audit)
    label = htmllib.unescape(re.search(r'aria-label="([^"]*)"', svg).group(1))
    said = [part.split(": ")[0] for part in label.split("hatched bars): ")[1].split("; ")[:3]]
    assert len(said) == 3 and len(set(said)) == 3, label
    strip = str.maketrans("", "", "\u2068\u2069")
    for tips in (re.findall(r'<rect class="bar personalized"[^>]*><title>(.*?)</title>', svg),
                 re.findall(r'<text class="group-label"[^>]*><title>(.*?)</title>', svg)):
        assert len(tips) == 3 and len({htmllib.unescape(t).translate(strip) for t in tips}) == 3, tips


def test_a_suppressed_group_of_one_user_is_said_as_the_audit_suppressed_it():
    """Trial 49: since audit49 a group of one user is suppressed whatever `min_group_size` says (1 by default). The page
    read "1 group of fewer than 1 users suppressed" (no group has fewer than 1 user), and with every group of one user
    suppressed it advised "lower min_group_size to see small groups", which shows none of them. Failed before."""
    solo = AuditReport(group_by="segment", created_at=1_764_000_000, encoder_id="e", personalized_model="online-logistic",
                       base_model="crossfit-logistic", users=2, comparisons=40, groups=[], suppressed_groups=2, min_group_size=1)
    html = render_dashboard(solo, [solo], [])
    assert "fewer than 1 users" not in html and "lower <code>min_group_size</code>" not in html, re.search(r"Audit by.{0,400}", html)[0]
    assert "2 groups of fewer than 2 users suppressed" in html and "no worst group" in html
    assert "groups of at least 2 users," in render_dashboard(solo, [solo], [], tenants=["acme"])  # the line chart's caption, not "1 user"
    five = AuditReport(group_by="segment", created_at=1_764_000_000, encoder_id="e", personalized_model="online-logistic",
                       base_model="crossfit-logistic", users=8, comparisons=40, groups=[], suppressed_groups=2, min_group_size=5)
    assert "lower <code>min_group_size</code>" in render_dashboard(five, [five], [])  # 2 to 4 users' groups would show
