"""The dashboard with user text in right-to-left and other scripts: each piece of user text (group
labels, the audit's grouping, stored prompts and answers, job parameters and notes) is isolated in a
<bdi> (its own direction, so an Arabic group name does not carry the numbers after it to its side),
and a long job note is cut between graphemes."""

from __future__ import annotations

import html
import time
from html.parser import HTMLParser

import regex

from pluralign.fairness.report import AuditReport, GroupMetrics
from pluralign.user.summary import Example, PrototypeDescription
from service.admin.dashboard import render_dashboard
from training.jobs.record import Job

HEBREW, ARABIC = "קבוצה א", "المجموعة ب"
PROMPT, ANSWER = "ما رأيك؟", "שלום! 👋🏽 תשובה קצרה."


class UserText(HTMLParser):
    """Each text node with whether it is isolated: inside a <bdi> in HTML; in a chart's SVG (where
    <bdi> does not exist), a <text> with unicode-bidi="plaintext" (a tooltip's <title> is left out)."""

    def __init__(self):
        super().__init__()
        self.stack, self.nodes = [], []

    def handle_starttag(self, tag, attrs):
        self.stack.append((tag, dict(attrs).get("unicode-bidi")))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        tags = [t for t, _ in self.stack]
        if "title" in tags and "svg" in tags:
            return
        inside = "bdi" in tags if "svg" not in tags else self.stack[-1] == ("text", "plaintext")
        self.nodes.append((data, inside))


def page(note: str = "") -> str:
    groups = [GroupMetrics(group=name, users=10, comparisons=200, personalized_accuracy=acc, base_accuracy=0.5,
                           personalized_ece=0.05, base_ece=0.1) for name, acc in ((HEBREW, 0.9), (ARABIC, 0.6))]
    report = AuditReport(group_by="منطقة", created_at=1_764_000_000, encoder_id="e", personalized_model="online-logistic",
                         base_model="crossfit-logistic", users=20, comparisons=400, groups=groups, worst_group=ARABIC,
                         worst_group_accuracy=0.6, gap=0.3, base_worst_group=HEBREW, base_worst_group_accuracy=0.5, base_gap=0.0)
    jobs = [Job(id="j1", kind="adapter", params={"user": "u1", "label": "عربي"}, state="failed", error=note, created_at=time.time())]
    prototypes = [PrototypeDescription(prototype=0, highest=[Example(prompt=PROMPT, answer=ANSWER, score=1.0)], lowest=[])]
    return render_dashboard(report, [report], jobs, prototypes=prototypes, population="v1")


def test_user_text_in_the_page_is_isolated_in_bdi():
    parser = UserText()
    parser.feed(page())
    for text in (ARABIC, HEBREW, "منطقة", PROMPT, ANSWER, "label=عربي"):
        found = [inside for data, inside in parser.nodes if text in data]
        assert found and all(found), (text, found)


def test_a_long_job_note_is_cut_between_graphemes():
    note = "x" + "👨‍👩‍👧‍👦" * 60
    cell = next(data for data, _ in (lambda p: (p.feed(page(note)), p.nodes)[1])(UserText()) if "👨" in data)
    shown = regex.findall(r"\X", html.unescape(cell).rstrip("…"))
    assert shown == regex.findall(r"\X", note)[: len(shown)] and len(shown) > 10, cell


def test_a_charts_tooltip_isolates_the_label_it_names():
    """SVG's <title> (a bar's tooltip, what a screen reader says) has no <bdi>: a label in Arabic took the
    numbers after it to its side ("0.600 :personalized المجموعة ب"). Its label is now between U+2068 FIRST
    STRONG ISOLATE and U+2069 POP DIRECTIONAL ISOLATE, Unicode's plain-text isolation (review31a)."""
    titles = [html.unescape(t) for t in regex.findall(r"<title>(.*?)</title>", page())[1:]]  # the page's own <title> first
    named = [t for t in titles if any(label in t for label in (ARABIC, HEBREW, "منطقة"))]
    assert len(named) >= 4, titles
    for title in named:
        for label in (ARABIC, HEBREW, "منطقة"):
            if label in title:
                assert f"\u2068{label}\u2069" in title, title
