"""The operator's dashboard: one self-contained HTML page with inline SVG charts (no script, no CDN).

`render_dashboard` is a pure function of an audit report, earlier reports and the job list, so it
is tested without a server and rendered the same way by the service.

Made to be read without sight, without a mouse, zoomed to 400% and in any colour scheme: landmarks
and a skip link, each chart named with its numbers and followed by a table of them, series told apart
by pattern, dash and marker shape as well as colour, focus always drawn, the charts scaled down and
wide tables scrolled in their own region at 320 CSS px, and colours for a dark scheme and forced colours
(docs/admin.md, "Accessibility").
"""

from __future__ import annotations

import html
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence

from pluralign.data.text import BIDI_CONTROL, bidi_controls_shown, bidi_shown, shorten
from pluralign.fairness.audit import NO_VALUE
from pluralign.fairness.report import MIN_SHOWN_USERS, AuditReport, audit_settings, withheld_notes
from pluralign.user.summary import PrototypeDescription
from training.jobs.record import Job

PERSONAL, BASE = "#2b6cb0", "#dd6b20"
# white text on each is >= 4.5:1 (the pills in the job table); each differs from the next in lightness too
STATE_COLORS = {"queued": "#553c9a", "running": "#2b6cb0", "succeeded": "#276749", "failed": "#c53030", "cancelled": "#4a5568"}
HATCH = "url(#hatch-base)"  # one-size-fits-all bars: hatched, not only orange
LABEL_CHAR_PX = 12  # a 12 px label's widest characters (W, a CJK ideograph, an emoji's part): the chart cuts labels to fit

STYLE = """
:root{color-scheme:light dark;--fg:#1a202c;--muted:#4a5568;--bg:#f7fafc;--card:#fff;--line:#e2e8f0;--grid:#e2e8f0;--focus:#1a4f8b}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:16px;color:var(--fg);background:var(--bg);line-height:1.4}
header{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:4px 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:0 0 8px} .muted{color:var(--muted);font-size:13px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px;margin:16px 0}
main:focus{outline:none}
svg.chart{display:block;max-width:100%;height:auto} svg text{fill:var(--fg)} svg .tick{fill:var(--muted)} svg .grid{stroke:var(--grid)}
svg .on-bar{fill:#fff}
bdi{overflow-wrap:anywhere}
.bidi-control{font-family:ui-monospace,monospace;font-size:.9em;border:1px dashed currentColor;border-radius:3px;padding:0 1px}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:13px;width:100%} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:break-word}
thead th{border-bottom:2px solid var(--muted)} caption{text-align:left;font-size:13px;color:var(--muted);padding:4px 0}
.state{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;border:1px solid transparent}
.legend{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:4px 20px}
.legend svg{vertical-align:middle;margin-right:6px}
.flag{color:#975a16}
button{font:inherit;font-size:14px;padding:6px 12px;border:1px solid var(--muted);border-radius:6px;background:var(--card);color:var(--fg);cursor:pointer}
summary{cursor:pointer;margin:8px 0}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip{position:absolute;left:16px;top:-100px;background:var(--card);color:var(--fg);padding:8px 12px;border:2px solid var(--focus);border-radius:6px;z-index:1}
.skip:focus{top:8px}
.hatch-fill{fill:#dd6b20} .hatch-line{fill:#fff}
@media (prefers-color-scheme:dark){
:root{--fg:#f7fafc;--muted:#cbd5e0;--bg:#171923;--card:#1a202c;--line:#4a5568;--grid:#4a5568;--focus:#90cdf4}
.bar.personalized,.point.personalized,.swatch.personalized{fill:#63b3ed} .line.personalized{stroke:#63b3ed}
.hatch-fill{fill:#f6ad55} .hatch-line{fill:#1a202c} .point.base{fill:#f6ad55} .line.base{stroke:#f6ad55} .flag{color:#f6e05e}
}
@media (forced-colors:active){
.state{border-color:CanvasText} .legend svg,svg.chart .bar,svg.chart .point,svg.chart .line,svg.chart .state-bar{forced-color-adjust:none}
}
@media (prefers-reduced-motion:reduce){*,*::before,*::after{animation:none!important;transition:none!important;scroll-behavior:auto!important}}
"""
# one-size-fits-all's hatching, defined once per page (every chart and legend swatch refers to it)
PATTERNS = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true" focusable="false"><defs>'
    '<pattern id="hatch-base" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">'
    f'<rect class="hatch-fill" width="6" height="6" fill="{BASE}"/><rect class="hatch-line" width="2" height="6" fill="#fff"/>'
    "</pattern></defs></svg>"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _control(match) -> str:
    c = match.group()
    return f'<span class="bidi-control" title="U+{ord(c):04X} {unicodedata.name(c, "BIDI CONTROL")}">{bidi_shown(c)}</span>'


def _text(value: object) -> str:
    """User text escaped for HTML, its bidi control characters shown, each as its code point in a marked span naming it
    (`pluralign.data.text.bidi_controls_shown`), not obeyed: obeyed, a stored "\u202eLUN htiw 1 tpmorp
    live" would read "evil prompt 1 with NUL" to the auditor."""
    return BIDI_CONTROL.sub(_control, _e(value))


def _bdi(value: object) -> str:
    """User text (a group label, a stored answer) isolated from the text around it: an Arabic or
    Hebrew label takes its own direction and does not carry the numbers after it to its side. Its own bidi
    controls are shown, not obeyed (`_text`)."""
    return f"<bdi>{_text(value)}</bdi>"


def _isolated(value: object) -> str:
    """User text where HTML's <bdi> cannot go (an SVG <title>, a tooltip): between U+2068 FIRST STRONG
    ISOLATE and U+2069 POP DIRECTIONAL ISOLATE, plain text's isolation, to the same effect; its own bidi
    controls shown as their code points (a tooltip holds no markup)."""
    return f"\u2068{_e(bidi_controls_shown(str(value)))}\u2069"


# how the page writes the group NO_VALUE (" (no value)": comparisons whose attribute neither they nor their user carry). As
# it is, HTML drops its leading space and it reads as a client's value "(no value)" (the JSON tells the two apart)
NO_VALUE_SHOWN = "without a value"


def _group_text(name: str) -> str:
    """A group's name as a chart's label (drawn in italics for NO_VALUE, as the table writes it): NO_VALUE in the page's own words."""
    return NO_VALUE_SHOWN if name == NO_VALUE else name


def _group_said(name: str) -> str:
    """A group's name in plain text that carries no italics (a chart's screen-reader name): a client's value in
    quotation marks, NO_VALUE in the page's own words without, so a value "without a value" reads apart from it."""
    return NO_VALUE_SHOWN if name == NO_VALUE else f"\u201c{bidi_controls_shown(name)}\u201d"


def _group_tip(name: str) -> str:
    """`_group_said` in a tooltip's HTML: the value isolated (`_isolated`) inside its quotation marks."""
    return NO_VALUE_SHOWN if name == NO_VALUE else f"\u201c{_isolated(name)}\u201d"


def _group(name: str) -> str:
    """A group's name in HTML: user text in <bdi>; NO_VALUE in the page's own words, in italics, outside it (and
    marked `no-value`), so it never reads as a value a client sent."""
    if name == NO_VALUE:
        return f'<i class="no-value" title="comparisons that carry no value of the attribute, nor does their user">{NO_VALUE_SHOWN}</i>'
    return _bdi(name)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC" if ts else "-"


def _scroll(table: str, caption_id: str) -> str:
    """A table in a region of its own that scrolls sideways when the page is narrow (not the page):
    focusable, so a keyboard scrolls it too, and named by the table's caption."""
    return f'<div class="scroll" role="region" tabindex="0" aria-labelledby="{caption_id}">{table}</div>'


def group_bars(report: AuditReport, width: int = 760, height: int = 300) -> str:
    """Grouped bars: each group's personalized (solid) and one-size-fits-all (hatched) accuracy, 0 to 1."""
    left, bottom, top = 48, 56, 16
    plot_h = height - bottom - top
    groups = report.groups
    n = max(1, len(groups))
    slot = (width - left - 8) / n
    bar = min(48.0, slot * 0.35)
    said = "; ".join(f"{_group_said(g.group)}: {g.personalized_accuracy:.2f} personalized, {g.base_accuracy:.2f} one-size-fits-all" for g in groups[:8])
    label = (f"Bar chart of accuracy per group, 0 to 1, personalized (solid bars) and one-size-fits-all (hatched bars): {said}"
             + ("; more groups in the table below" if len(groups) > 8 else "; the table below gives the numbers"))
    parts = [f'<svg id="group-accuracy" class="chart" role="img" aria-label="{_e(label)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#4a5568">{tick:.2f}</text>')
    for i, g in enumerate(groups):
        x0 = left + i * slot + slot / 2 - bar
        for j, (value, color, series) in enumerate(((g.personalized_accuracy, PERSONAL, "personalized"), (g.base_accuracy, HATCH, "base"))):
            h = plot_h * max(0.0, min(1.0, value))
            x = x0 + j * bar
            parts.append(
                f'<rect class="bar {series}" data-group="{_e(g.group)}" data-value="{value:.4f}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar - 2:.1f}" height="{h:.1f}" fill="{color}" stroke="{BASE if series == "base" else PERSONAL}">'
                f"<title>{_group_tip(g.group)} {series}: {value:.3f}</title></rect>"
            )
            parts.append(f'<text x="{x + bar / 2 - 1:.1f}" y="{top + plot_h - h - 3:.1f}" font-size="10" text-anchor="middle">{value:.2f}</text>')
        # cut to what its slot holds at the widest glyphs (the whole label is in its tooltip and the table
        # below): drawn whole, one long label ran over every other; SVG has no <bdi>: the label's own direction
        mark = " *" if g.too_few_comparisons else ""
        name = _e(shorten(bidi_controls_shown(_group_text(g.group)), max(2, int(slot // LABEL_CHAR_PX) - len(mark)))) + mark
        italic = ' font-style="italic"' if g.group == NO_VALUE else ""  # not a value: written as the table writes it
        parts.append(f'<text class="group-label" x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" font-size="12" '
                     f'text-anchor="middle" unicode-bidi="plaintext"{italic}><title>{_group_tip(g.group)}</title>{name}</text>')
        parts.append(f'<text class="tick" x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 30}" font-size="10" text-anchor="middle" fill="#4a5568">{_count(g.users, "user")}, {_count(g.comparisons, "pair")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def every_group_flagged(report: AuditReport) -> bool:
    """Every group shown has fewer than `min_comparisons` comparisons: the audit then ranks them all (`extremes`),
    so its worst group is one of them and the page may not call them unranked."""
    return bool(report.groups) and all(g.too_few_comparisons for g in report.groups)


def flag_note(report: AuditReport) -> str:
    """What a flagged group's mark says: not ranked, or ranked all the same when every group is flagged."""
    fewer = f"fewer than {report.min_comparisons} comparisons"
    return f"{fewer}: ranked all the same (every group has)" if every_group_flagged(report) else f"{fewer}: not ranked"


def _with_interval(value: float, bounds: tuple[float, float] | None, users: int = 0, minimum: int = 0) -> str:
    """An accuracy and, where the report has one, its 95% interval over the group's users (`GroupMetrics`); for a group
    of fewer than `minimum` users (the report's `interval_min_users`) why it has none."""
    if bounds is None:
        return f'{value:.3f} <span class="muted">(no interval: fewer than {minimum} users)</span>' if users < minimum else f"{value:.3f}"
    return f'{value:.3f} <span class="muted">({bounds[0]:.3f} to {bounds[1]:.3f})</span>'


def gap_said(gap: float | None, bounds: tuple[float, float] | None) -> str:
    """The gap and, where the report has one, its 95% interval and whether it tells the two groups apart."""
    if bounds is None:
        return f"gap {(gap or 0):.3f}"
    apart = "the audit cannot tell these groups apart" if bounds[0] <= 0 <= bounds[1] else "the groups differ"
    return f"gap {(gap or 0):.3f}, 95% interval {bounds[0]:.3f} to {bounds[1]:.3f}: {apart}"


def group_table(report: AuditReport) -> str:
    """The bar chart's numbers, one row per group, each accuracy with its 95% interval (in a report that has them)."""
    note = flag_note(report)
    rows = "".join(
        f'<tr><th scope="row">{_group(g.group)}</th><td>{g.users}</td>'
        f'<td>{_with_interval(g.personalized_accuracy, g.personalized_accuracy_interval, g.users, report.interval_min_users)}</td>'
        f'<td>{_with_interval(g.base_accuracy, g.base_accuracy_interval, g.users, report.interval_min_users)}</td>'
        f'<td>{g.comparisons}</td><td>{note if g.too_few_comparisons else ""}</td></tr>'
        for g in report.groups
    )
    head = ('<thead><tr><th scope="col">group</th><th scope="col">users</th><th scope="col">personalized</th>'
            '<th scope="col">one-size-fits-all</th><th scope="col">comparisons</th><th scope="col">note</th></tr></thead>')
    intervals = ", each with its 95% interval over the group's users" if any(g.personalized_accuracy_interval for g in report.groups) else ""
    caption = f'<caption id="group-accuracy-numbers-caption">Accuracy per group: the chart\'s numbers{intervals}</caption>'
    body = rows or '<tr><td colspan="6">no group to show</td></tr>'
    return _scroll(f'<table id="group-accuracy-numbers">{caption}{head}<tbody>{body}</tbody></table>', "group-accuracy-numbers-caption")


def worst_group_over_time(history: Sequence[AuditReport], width: int = 760, height: int = 240) -> str:
    """Worst-group accuracy of each stored audit, personalized (solid line, round points) and
    one-size-fits-all (dashed line, square points), in time order."""
    left, bottom, top, right = 48, 36, 16, 16
    plot_w, plot_h = width - left - right, height - bottom - top
    points = sorted((r for r in history if r.worst_group_accuracy is not None), key=lambda r: r.created_at)
    if points:
        last = points[-1]
        label = (f"Line chart of the worst group's accuracy in {_count(len(points), 'stored audit')}, {_when(points[0].created_at)} to "
                 f"{_when(last.created_at)}, personalized (solid line, round points) and one-size-fits-all (dashed line, square points); "
                 f"latest {last.worst_group_accuracy:.2f} personalized, {(last.base_worst_group_accuracy or 0):.2f} one-size-fits-all. "
                 "The numbers of every audit are in the table below.")
    else:
        label = "Line chart of the worst group's accuracy over time: no stored audits yet"
    parts = [f'<svg id="worst-group-over-time" class="chart" role="img" aria-label="{_e(label)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for tick in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#4a5568">{tick:.1f}</text>')
    if points:
        t0, t1 = points[0].created_at, points[-1].created_at
        span = (t1 - t0) or 1.0

        def xy(r: AuditReport, value: float) -> tuple[float, float]:
            x = left + (plot_w * (r.created_at - t0) / span if len(points) > 1 else plot_w / 2)
            return x, top + plot_h * (1 - max(0.0, min(1.0, value)))

        for series, color, dash, value_of in (
            ("personalized", PERSONAL, "", lambda r: r.worst_group_accuracy),
            ("base", BASE, ' stroke-dasharray="7 4"', lambda r: r.base_worst_group_accuracy if r.base_worst_group_accuracy is not None else 0.0),
        ):
            coords = [xy(r, value_of(r)) for r in points]
            if len(coords) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                parts.append(f'<polyline class="line {series}" points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for (x, y), r in zip(coords, points, strict=True):
                tip = f"<title>{_when(r.created_at)} {series}: {value_of(r):.3f} ({_isolated(r.group_by)})</title>"
                if series == "base":  # a square, not only another colour
                    parts.append(f'<rect class="point {series}" x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{color}">{tip}</rect>')
                else:
                    parts.append(f'<circle class="point {series}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}">{tip}</circle>')
        parts.append(f'<text class="tick" x="{left}" y="{height - 10}" font-size="10" fill="#4a5568">{_when(t0)}</text>')
        parts.append(f'<text class="tick" x="{width - right}" y="{height - 10}" font-size="10" text-anchor="end" fill="#4a5568">{_when(t1)}</text>')
    else:
        parts.append(f'<text class="tick" x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#4a5568">no stored audits yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def _audited(tenant: str | None) -> str:
    """Whose users an audit covered, in words: its job's `tenant` param (None: every tenant's)."""
    return "every tenant" if tenant is None else f"tenant {_bdi(tenant)}"


def worst_group_table(history: Sequence[AuditReport], tenants: Sequence[str | None] = ()) -> str:
    """The line chart's numbers, one row per stored audit (newest first), folded away: there may be many.
    `tenants`: the tenant each of `history` audited (None: every tenant), shown in a column of its own; () when not known."""
    audited = list(zip(history, tenants, strict=True)) if tenants else [(r, None) for r in history]
    points = sorted(((r, t) for r, t in audited if r.worst_group_accuracy is not None), key=lambda rt: rt[0].created_at, reverse=True)
    if not points:
        return ""
    rows = "".join(
        f'<tr><th scope="row">{_when(r.created_at)}</th>{f"<td>{_audited(t)}</td>" if tenants else ""}<td>{_bdi(r.group_by)}</td>'
        f'<td>{_group(r.worst_group)}</td><td>{r.worst_group_accuracy:.3f}</td>'
        f'<td>{_group(r.base_worst_group or "-")}</td><td>{(r.base_worst_group_accuracy or 0):.3f}</td></tr>'
        for r, t in points
    )
    head = ('<thead><tr><th scope="col">audit</th>' + ('<th scope="col">of</th>' if tenants else "")
            + '<th scope="col">grouped by</th><th scope="col">worst group</th><th scope="col">personalized</th>'
            '<th scope="col">one-size-fits-all worst group</th><th scope="col">one-size-fits-all</th></tr></thead>')
    caption = '<caption id="worst-group-over-time-numbers-caption">Worst-group accuracy of every stored audit, newest first</caption>'
    table = f'<table id="worst-group-over-time-numbers">{caption}{head}<tbody>{rows}</tbody></table>'
    return f"<details><summary>The numbers: {_count(len(points), 'stored audit')}</summary>{_scroll(table, 'worst-group-over-time-numbers-caption')}</details>"


def job_states(jobs: Sequence[Job], width: int = 760, height: int = 28) -> str:
    """One stacked bar: how many jobs are in each state (each segment edged; the counts are said in words beside it)."""
    counts = Counter(j.state for j in jobs)
    total = sum(counts.values()) or 1
    said = ", ".join(f"{counts[state]} {state}" for state in STATE_COLORS if counts[state]) or "no jobs"
    parts = [f'<svg id="job-states" class="chart" role="img" aria-label="Jobs by state: {_e(said)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    x = 0.0
    for state, color in STATE_COLORS.items():
        if counts[state]:
            w = width * counts[state] / total
            parts.append(f'<rect class="state-bar {state}" data-count="{counts[state]}" x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{color}" stroke="#fff" stroke-width="2"><title>{state}: {counts[state]}</title></rect>')
            if w > 60:
                parts.append(f'<text class="on-bar" x="{x + w / 2:.1f}" y="{height / 2 + 4}" font-size="12" text-anchor="middle" fill="#fff">{state} {counts[state]}</text>')
            x += w
    parts.append("</svg>")
    return "".join(parts) + f'<p class="muted">{_e(said)}</p>'


def job_table(jobs: Sequence[Job], limit: int = 25, tenant: str | None = None) -> str:
    """The newest `limit` of `jobs`; `tenant`: they are that tenant's (the caption says so), None: every job."""
    rows = []
    for j in jobs[:limit]:
        note = j.error or j.promotion_note or ""
        params = ", ".join(f"{k}={v}" for k, v in j.params.items())
        rows.append(
            f'<tr><th scope="row">{_e(j.id)}</th><td>{_e(j.kind)}</td><td>{_bdi(params)}</td>'
            f'<td><span class="state" style="background:{STATE_COLORS[j.state]}">{_e(j.state)}</span></td>'
            f"<td>{j.progress:.0%}</td><td>{_when(j.created_at)}</td><td>{_bdi(shorten(note, 160))}</td></tr>"
        )
    head = "".join(f'<th scope="col">{name}</th>' for name in ("job", "kind", "params", "state", "progress", "created", "note"))
    shown = f"the {min(limit, len(jobs))} newest of {len(jobs)}" if len(jobs) > limit else "newest first"
    whose = f"Jobs of tenant {_bdi(tenant)}" if tenant is not None else "Jobs"
    caption = f'<caption id="jobs-caption">{whose}, {shown}</caption>'
    body = "".join(rows) or '<tr><td colspan="7">no jobs</td></tr>'
    return _scroll(f'<table id="jobs">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>', "jobs-caption")


SIGN_OUT = (
    '<form method="post" action="/admin/logout" style="margin:0">'
    '<button id="sign-out" type="submit">Sign out</button></form>'
)


def prototype_section(prototypes: Sequence[PrototypeDescription], population: str = "", backlog: int = 0, unmoved: str = "") -> str:
    """The population's prototypes, each shown by the stored answers it scores highest and lowest
    (`pluralign.user.summary.describe_prototypes`): the same description a user's profile gives.
    `backlog`: more than this many acknowledged comparisons are still being stored (0: none); `unmoved`: why the
    acknowledged comparisons waiting in the feedback log cannot be moved into the table ("": they can)."""
    if unmoved:
        return (f'<p class="muted">acknowledged comparisons cannot be stored yet ({_e(unmoved)}): described by what '
                'is stored so far</p>') + prototype_section(prototypes, population, backlog)
    if backlog:
        return (f'<p class="muted">more than {backlog} comparisons are still being stored (an import): described by what '
                'is stored so far</p>') + prototype_section(prototypes, population)
    if not prototypes:
        return '<p class="muted">no population model loaded</p>'
    if not any(p.highest for p in prototypes):
        return '<p class="muted">no stored comparisons yet: prototypes are described by stored answers once there are some</p>'
    rows = []
    for p in prototypes:
        cell = lambda examples: "".join(  # noqa: E731  (each example of a page of every tenant's names its tenant)
            f'<li><span class="muted">{"" if x.tenant is None else f"tenant {_bdi(x.tenant)}: "}{_bdi(x.prompt)}</span><br>'
            f'{_bdi(x.answer)} <span class="muted">({x.score:.2f})</span></li>' for x in examples)
        rows.append(f'<tr class="prototype" data-prototype="{p.prototype}"><th scope="row">{p.prototype}</th>'
                    f"<td><ul>{cell(p.highest)}</ul></td><td><ul>{cell(p.lowest)}</ul></td></tr>")
    head = ('<thead><tr><th scope="col">prototype</th><th scope="col">stored answers it scores highest</th>'
            '<th scope="col">and lowest</th></tr></thead>')
    caption = '<caption id="prototypes-caption">Each prototype by the stored answers it scores highest and lowest (prompt, answer, score)</caption>'
    note = f'<p class="muted">population model {_e(population)}; rewards compare within a prototype only</p>' if population else ""
    return note + _scroll(f'<table id="prototypes">{caption}{head}<tbody>{"".join(rows)}</tbody></table>', "prototypes-caption")


def legend() -> str:
    """What tells the two series apart, drawn and said: colour, fill, line and marker."""
    def swatch(series: str, fill: str, stroke: str) -> str:
        return (f'<svg class="swatch-svg" aria-hidden="true" focusable="false" width="16" height="16" viewBox="0 0 16 16">'
                f'<rect class="swatch {series}" x="1" y="1" width="14" height="14" fill="{fill}" stroke="{stroke}"/></svg>')

    return (
        '<ul class="legend">'
        f"<li>{swatch('personalized', PERSONAL, PERSONAL)}personalized (prequential): blue, solid bars, solid line, round points</li>"
        f"<li>{swatch('base', HATCH, BASE)}one-size-fits-all: orange, hatched bars, dashed line, square points</li>"
        "</ul>"
    )


def unreadable_reports(unreadable: Sequence[str]) -> str:
    """The stored audit reports this release cannot read (each why, naming its job), which the page's figures leave out."""
    if not unreadable:
        return ""
    items = "".join(f"<li>{_e(u)}</li>" for u in unreadable)
    return (f'<div class="flag"><p>{_count(len(unreadable), "stored audit report")} cannot be read by this release '
            f"and {'is' if len(unreadable) == 1 else 'are'} left out of this page:</p><ul>{items}</ul></div>")


def tenant_of(report: AuditReport, history: Sequence[AuditReport], tenants: Sequence[str | None]) -> str | None:
    """The tenant `report` (one of `history`) audited, by `tenants` (each of `history`'s; None: every tenant)."""
    return next(t for r, t in zip(history, tenants, strict=True) if r is report)


def comparable(report: AuditReport | None, history: Sequence[AuditReport], tenants: Sequence[str | None]) -> list[AuditReport]:
    """The audits of `history` drawn on one line with `report`: with `tenants` (each one's audited tenant, None for every
    tenant) those of its tenant and settings (`audit_settings`: its attribute, `since`, thresholds, model and method), as the
    API's change since the previous audit is; without, all of them."""
    if report is None or not tenants:
        return list(history)
    mine, settings = tenant_of(report, history, tenants), audit_settings(report)
    return [r for r, t in zip(history, tenants, strict=True) if audit_settings(r) == settings and t == mine]


def _shown_from(report: AuditReport) -> int:
    """The fewest users a group the audit shows holds: its `min_group_size`, and 2 whatever that says (MIN_SHOWN_USERS:
    the request's alone could have the page say "1 group of fewer than 1 users suppressed")."""
    return max(report.min_group_size, MIN_SHOWN_USERS)


def drawn(report: AuditReport | None, history: Sequence[AuditReport], tenants: Sequence[str | None]) -> str:
    """Which audits the line chart draws, said above it (`comparable`), when the page knows their tenants."""
    if report is None or not tenants:
        return ""
    since = f"comparisons since {_when(report.since)}" if report.since is not None else "every comparison"
    return (f'<p class="muted">Drawn: the audits of {_audited(tenant_of(report, history, tenants))} by {_bdi(report.group_by)} '
            f"with the latest one's settings ({since}, groups of at least {_count(_shown_from(report), 'user')}, ranked from "
            f"{_count(report.min_comparisons, 'comparison')}, {_e(report.personalized_model)}), those it is compared with; "
            "the numbers of every stored audit are below.</p>")


def render_dashboard(report: AuditReport | None, history: Sequence[AuditReport], jobs: Sequence[Job], signed_in: bool = False,
                     prototypes: Sequence[PrototypeDescription] = (), population: str = "", backlog: int = 0, unmoved: str = "",
                     unreadable: Sequence[str] = (), tenants: Sequence[str | None] = (), line: Sequence[AuditReport] | None = None,
                     jobs_of: str | None = None, unseen: bool = False, admin_label: bool = False) -> str:
    """The page; `signed_in` (a browser session, not a bearer key) adds a sign-out button;
    `prototypes` describe the population's prototypes by stored answers (`population`: its version; `backlog`:
    more than this many comparisons still being stored, 0 for none; `unmoved`: why those waiting in the feedback log
    cannot be moved into the table, "" when they can); `unreadable`, why each stored audit report
    this release cannot read is left out (`unreadable_reports`); `tenants`, the tenant each of `history` audited
    (None: every tenant; `report` is one of `history`): the page names it, and draws over time only the audits of
    the latest one's tenant and settings (not one line through every tenant's audits); `line`, those
    audits when read apart (the service reads up to 50 of them, not only those among `history`; None: drawn from `history`);
    `jobs_of`: the tenant whose jobs `jobs` are (a tenant's page), said in the job table's caption; None: every job;
    `unseen`: `jobs_of` shows nowhere (no key, no removal, nothing held: a typo?), said above everything else;
    `admin_label`: admin keys are labelled `jobs_of` (their tenant only labels them), said instead of "no key"."""
    if report is not None:
        suppressed = report.suppressed_groups
        of = f"of {_audited(tenant_of(report, history, tenants))} " if tenants else ""
        summary = (
            f"Audit {of}by <b>{_bdi(report.group_by)}</b> at {_when(report.created_at)}: {_count(report.users, 'user')}, "
            f"{_count(report.comparisons, 'comparison')}"
            + (f", {_count(suppressed, 'group')} of fewer than {_shown_from(report)} users suppressed" if suppressed else "")
            + (f", {_count(report.withheld_groups, 'group')} withheld (users in them were deleted after the audit)" if report.withheld_groups else "")
        )
        if report.worst_group is None:  # every group suppressed (or none at all): nothing is ranked
            summary += (": no worst group to show (a group of one user is never shown)." if report.min_group_size <= MIN_SHOWN_USERS
                        else ": no worst group to show (lower <code>min_group_size</code> to see small groups; a group of one user is never shown).")
        else:
            summary += (
                f". Worst group <b>{_group(report.worst_group)}</b> "
                f"{(report.worst_group_accuracy or 0):.3f} personalized ({gap_said(report.gap, report.gap_interval)}); one-size-fits-all worst "
                f"<b>{_group(report.base_worst_group)}</b> {(report.base_worst_group_accuracy or 0):.3f} "
                f"({gap_said(report.base_gap, report.base_gap_interval)})."
            )
        flagged = any(g.too_few_comparisons for g in report.groups)
        note = f'<p class="muted">* flagged: {flag_note(report)}</p>' if flagged else ""
        # what the audit withholds to protect the users audited, and why (`withheld_notes`)
        note += "".join(f'<p class="muted">{_e(n[:1].upper() + n[1:])}.</p>' for n in withheld_notes(report))
        bars = group_bars(report) + note + group_table(report)
    else:
        # stored reports this release cannot read (listed below) are audits that were run
        summary = "No audit this release can read is stored" if unreadable else "No audit has been run yet"
        # the page has no form (no script): it names the route that runs one, and what it groups by; a tenant's page
        # shows that tenant's audits only, so the route names it (an audit without `tenant` is of every tenant)
        of_tenant = "" if jobs_of is None else f"&amp;tenant={_e(jobs_of)}"
        summary, bars = (f"{summary}: run one with <code>GET /admin/audits/fairness?group_by=ATTRIBUTE{of_tenant}</code> and an admin "
                         "key (or queue an audit job, <code>POST /admin/jobs</code>), ATTRIBUTE a label the comparisons "
                         "carry, sent with the feedback in <code>attributes</code> (docs/admin.md, Fairness audits)."), ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>pluralign: fairness and jobs</title>'
        f"<style>{STYLE}</style></head><body>"
        '<a class="skip" href="#main">Skip to the dashboard</a>'
        "<header><div><h1>pluralign operations</h1>"
        f'<p class="muted">rendered {_when(time.time())}</p></div>'
        + (SIGN_OUT if signed_in else "")
        + '</header><main id="main" tabindex="-1">'
        + (f'<p role="status">Tenant <b>{_e(jobs_of)}</b> shows nowhere here: '
           + (f"its only keys are admin keys, whose <code>--tenant {_e(jobs_of)}</code> only labels them (they reach no "
              "tenant's data), it has no removal and nothing held, so what follows is empty.</p>" if admin_label else
              "it has no key, no removal and nothing held (a typo? <code>pluralign keys list</code> names the tenants "
              "with keys), so what follows is empty.</p>")
           if unseen and jobs_of is not None else "")
        + PATTERNS
        + f'<section aria-labelledby="h-groups"><h2 id="h-groups">Accuracy per group</h2><p>{summary}</p>{unreadable_reports(unreadable)}{legend()}{bars}</section>'
        f'<section aria-labelledby="h-time"><h2 id="h-time">Worst-group accuracy over time</h2>{legend()}{drawn(report, history, tenants)}{worst_group_over_time(comparable(report, history, tenants) if line is None else line)}{worst_group_table(history, tenants)}</section>'
        f'<section aria-labelledby="h-jobs"><h2 id="h-jobs">Jobs</h2>{job_states(jobs)}{job_table(jobs, tenant=jobs_of)}</section>'
        f'<section aria-labelledby="h-prototypes"><h2 id="h-prototypes">The population\'s prototypes</h2>{prototype_section(prototypes, population, backlog, unmoved)}</section>'
        "</main></body></html>"
    )
