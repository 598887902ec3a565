"""The operator's dashboard: one self-contained HTML page with inline SVG charts (no script, no CDN).

`render_dashboard` is a pure function of an audit report, earlier reports and the job list, so it
is tested without a server and rendered the same way by the service.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Sequence

from pluralign.data.text import shorten
from pluralign.fairness.report import AuditReport
from pluralign.user.summary import PrototypeDescription
from training.jobs.record import Job

PERSONAL, BASE = "#2b6cb0", "#dd6b20"
STATE_COLORS = {"queued": "#a0aec0", "running": "#3182ce", "succeeded": "#38a169", "failed": "#e53e3e", "cancelled": "#718096"}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1a202c;background:#f7fafc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:0 0 8px} .muted{color:#718096;font-size:13px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:16px;margin:16px 0}
table{border-collapse:collapse;font-size:13px;width:100%} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf2f7}
.state{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.flag{color:#b7791f}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _bdi(value: object) -> str:
    """User text (a group label, a stored answer) isolated from the text around it: an Arabic or
    Hebrew label takes its own direction and does not carry the numbers after it to its side."""
    return f"<bdi>{_e(value)}</bdi>"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC" if ts else "-"


def group_bars(report: AuditReport, width: int = 760, height: int = 300) -> str:
    """Grouped bars: each group's personalized and one-size-fits-all accuracy, 0 to 1."""
    left, bottom, top = 48, 56, 16
    plot_h = height - bottom - top
    groups = report.groups
    n = max(1, len(groups))
    slot = (width - left - 8) / n
    bar = min(48.0, slot * 0.35)
    parts = [f'<svg id="group-accuracy" role="img" aria-label="accuracy per group" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#4a5568">{tick:.2f}</text>')
    for i, g in enumerate(groups):
        x0 = left + i * slot + slot / 2 - bar
        for j, (value, color, series) in enumerate(((g.personalized_accuracy, PERSONAL, "personalized"), (g.base_accuracy, BASE, "base"))):
            h = plot_h * max(0.0, min(1.0, value))
            x = x0 + j * bar
            parts.append(
                f'<rect class="bar {series}" data-group="{_e(g.group)}" data-value="{value:.4f}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar - 2:.1f}" height="{h:.1f}" fill="{color}"><title>{_e(g.group)} {series}: {value:.3f}</title></rect>'
            )
            parts.append(f'<text x="{x + bar / 2 - 1:.1f}" y="{top + plot_h - h - 3:.1f}" font-size="10" text-anchor="middle">{value:.2f}</text>')
        label = _e(g.group) + (" *" if g.too_few_comparisons else "")  # SVG has no <bdi>: the label's own direction
        parts.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" font-size="12" text-anchor="middle" unicode-bidi="plaintext">{label}</text>')
        parts.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 30}" font-size="10" text-anchor="middle" fill="#718096">{_count(g.users, "user")}, {_count(g.comparisons, "pair")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def worst_group_over_time(history: Sequence[AuditReport], width: int = 760, height: int = 240) -> str:
    """Worst-group accuracy of each stored audit, personalized and one-size-fits-all, in time order."""
    left, bottom, top, right = 48, 36, 16, 16
    plot_w, plot_h = width - left - right, height - bottom - top
    points = sorted((r for r in history if r.worst_group_accuracy is not None), key=lambda r: r.created_at)
    parts = [f'<svg id="worst-group-over-time" role="img" aria-label="worst-group accuracy over time" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for tick in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#4a5568">{tick:.1f}</text>')
    if points:
        t0, t1 = points[0].created_at, points[-1].created_at
        span = (t1 - t0) or 1.0

        def xy(r: AuditReport, value: float) -> tuple[float, float]:
            x = left + (plot_w * (r.created_at - t0) / span if len(points) > 1 else plot_w / 2)
            return x, top + plot_h * (1 - max(0.0, min(1.0, value)))

        for series, color, value_of in (
            ("personalized", PERSONAL, lambda r: r.worst_group_accuracy),
            ("base", BASE, lambda r: r.base_worst_group_accuracy if r.base_worst_group_accuracy is not None else 0.0),
        ):
            coords = [xy(r, value_of(r)) for r in points]
            if len(coords) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                parts.append(f'<polyline class="line {series}" points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for (x, y), r in zip(coords, points, strict=True):
                parts.append(f'<circle class="point {series}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"><title>{_when(r.created_at)} {series}: {value_of(r):.3f} ({_e(r.group_by)})</title></circle>')
        parts.append(f'<text x="{left}" y="{height - 10}" font-size="10" fill="#718096">{_when(t0)}</text>')
        parts.append(f'<text x="{width - right}" y="{height - 10}" font-size="10" text-anchor="end" fill="#718096">{_when(t1)}</text>')
    else:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#718096">no stored audits yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def job_states(jobs: Sequence[Job], width: int = 760, height: int = 28) -> str:
    """One stacked bar: how many jobs are in each state."""
    counts = Counter(j.state for j in jobs)
    total = sum(counts.values()) or 1
    parts = [f'<svg id="job-states" role="img" aria-label="jobs by state" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    x = 0.0
    for state, color in STATE_COLORS.items():
        if counts[state]:
            w = width * counts[state] / total
            parts.append(f'<rect class="state-bar {state}" data-count="{counts[state]}" x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{color}"><title>{state}: {counts[state]}</title></rect>')
            if w > 60:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{height / 2 + 4}" font-size="12" text-anchor="middle" fill="#fff">{state} {counts[state]}</text>')
            x += w
    parts.append("</svg>")
    return "".join(parts)


def job_table(jobs: Sequence[Job], limit: int = 25) -> str:
    rows = []
    for j in jobs[:limit]:
        note = j.error or j.promotion_note or ""
        params = ", ".join(f"{k}={v}" for k, v in j.params.items())
        rows.append(
            f"<tr><td>{_e(j.id)}</td><td>{_e(j.kind)}</td><td>{_bdi(params)}</td>"
            f'<td><span class="state" style="background:{STATE_COLORS[j.state]}">{_e(j.state)}</span></td>'
            f"<td>{j.progress:.0%}</td><td>{_when(j.created_at)}</td><td>{_bdi(shorten(note, 160))}</td></tr>"
        )
    head = "<tr><th>job</th><th>kind</th><th>params</th><th>state</th><th>progress</th><th>created</th><th>note</th></tr>"
    return f'<table id="jobs">{head}{"".join(rows) or "<tr><td colspan=7>no jobs</td></tr>"}</table>'


SIGN_OUT = (
    '<form method="post" action="/admin/logout" style="float:right;margin:0">'
    '<button id="sign-out" type="submit" style="padding:6px 12px;border:1px solid #cbd5e0;border-radius:6px;background:#fff;cursor:pointer">'
    "Sign out</button></form>"
)


def prototype_section(prototypes: Sequence[PrototypeDescription], population: str = "") -> str:
    """The population's prototypes, each shown by the stored answers it scores highest and lowest
    (`pluralign.user.summary.describe_prototypes`): the same description a user's profile gives."""
    if not prototypes:
        return '<p class="muted">no population model loaded</p>'
    if not any(p.highest for p in prototypes):
        return '<p class="muted">no stored comparisons yet: prototypes are described by stored answers once there are some</p>'
    rows = []
    for p in prototypes:
        cell = lambda examples: "".join(  # noqa: E731
            f'<li><span class="muted">{_bdi(x.prompt)}</span><br>{_bdi(x.answer)} <span class="muted">({x.score:.2f})</span></li>' for x in examples)
        rows.append(f'<tr class="prototype" data-prototype="{p.prototype}"><td>{p.prototype}</td>'
                    f"<td><ul>{cell(p.highest)}</ul></td><td><ul>{cell(p.lowest)}</ul></td></tr>")
    head = "<tr><th>prototype</th><th>stored answers it scores highest</th><th>and lowest</th></tr>"
    note = f'<p class="muted">population model {_e(population)}; rewards compare within a prototype only</p>' if population else ""
    return f'{note}<table id="prototypes">{head}{"".join(rows)}</table>'


def render_dashboard(report: AuditReport | None, history: Sequence[AuditReport], jobs: Sequence[Job], signed_in: bool = False,
                     prototypes: Sequence[PrototypeDescription] = (), population: str = "") -> str:
    """The page; `signed_in` (a browser session, not a bearer key) adds a sign-out button;
    `prototypes` describe the population's prototypes by stored answers (`population`: its version)."""
    if report is not None:
        suppressed = report.suppressed_groups
        summary = (
            f"Audit by <b>{_bdi(report.group_by)}</b> at {_when(report.created_at)}: {_count(report.users, 'user')}, "
            f"{_count(report.comparisons, 'comparison')}"
            + (f", {_count(suppressed, 'group')} of fewer than {report.min_group_size} users suppressed" if suppressed else "")
        )
        if report.worst_group is None:  # every group suppressed (or none at all): nothing is ranked
            summary += ": no worst group to show (lower <code>min_group_size</code> to see small groups)."
        else:
            summary += (
                f". Worst group <b>{_bdi(report.worst_group)}</b> "
                f"{(report.worst_group_accuracy or 0):.3f} personalized (gap {(report.gap or 0):.3f}); one-size-fits-all worst "
                f"<b>{_bdi(report.base_worst_group)}</b> {(report.base_worst_group_accuracy or 0):.3f} (gap {(report.base_gap or 0):.3f})."
            )
        flagged = any(g.too_few_comparisons for g in report.groups)
        note = f'<p class="muted">* flagged: fewer than {report.min_comparisons} comparisons, not ranked</p>' if flagged else ""
        bars = group_bars(report) + note
    else:
        summary, bars = "No audit has been run yet: queue an audit job.", ""
    legend = f'<div class="legend muted"><span style="background:{PERSONAL}"></span>personalized (prequential)<span style="background:{BASE}"></span>one-size-fits-all</div>'
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pluralign: fairness and jobs</title>"
        f"<style>{STYLE}</style></head><body>"
        + (SIGN_OUT if signed_in else "")
        + "<h1>pluralign operations</h1>"
        f'<p class="muted">rendered {_when(time.time())}</p>'
        f"<section><h2>Accuracy per group</h2><p>{summary}</p>{legend}{bars}</section>"
        f"<section><h2>Worst-group accuracy over time</h2>{legend}{worst_group_over_time(history)}</section>"
        f"<section><h2>Jobs</h2>{job_states(jobs)}{job_table(jobs)}</section>"
        f"<section><h2>The population's prototypes</h2>{prototype_section(prototypes, population)}</section>"
        "</body></html>"
    )
