"""The dashboard for a screen-reader user, a keyboard-only user, at 400% zoom (320 CSS px), in a dark
colour scheme, with forced colours and for colour-blind viewers of its charts: the page as
`render_dashboard` writes it (every section filled), opened in headless Chromium, checked by axe-core
and by hand where axe cannot tell."""

from __future__ import annotations

import shutil

import msgspec
import pytest

from pluralign.user.summary import Example, PrototypeDescription
from service.admin.dashboard import render_dashboard
from tests.a11y import axe_violations, chromium, controls, emulate, tab_walk
from tests.unit.test_dashboard import jobs, report

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


def full_page() -> str:
    history = [report(1_764_000_000 + 3600 * i, 0.6 + 0.1 * i) for i in range(3)]
    prototypes = [PrototypeDescription(prototype=k, highest=[Example(prompt="Tea or coffee?", answer=f"Tea, always {k}.", score=1.5)],
                                       lowest=[Example(prompt="Tea or coffee?", answer="Coffee.", score=-0.5)]) for k in range(2)]
    return render_dashboard(history[-1], history[::-1], jobs(), signed_in=True, prototypes=prototypes, population="pal-3")


def no_value_page() -> str:
    """An audit whose groups are the value "(no value)" a client sent and the group of comparisons without a value,
    NO_VALUE (" (no value)"), each the worst of one model."""
    from pluralign.fairness.audit import NO_VALUE
    from tests.unit.test_dashboard import group

    audit = msgspec.structs.replace(report(1_764_000_000, 0.5), groups=[group(NO_VALUE, 0.5, 0.9), group("(no value)", 0.9, 0.4),
                                                                       group("trial", 0.7, 0.7)],
                                    worst_group=NO_VALUE, base_worst_group="(no value)")
    return render_dashboard(audit, [audit], [])


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("a11y")
    (folder / "full.html").write_text(full_page())
    (folder / "empty.html").write_text(render_dashboard(None, [], []))
    (folder / "no-value.html").write_text(no_value_page())
    driver = chromium(folder / "profile")
    yield lambda name: driver.get((folder / f"{name}.html").as_uri()) or driver
    driver.quit()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_in_light_or_dark(page, scheme):
    """Before: color-contrast (grey #718096 text, white on pale job-state pills), landmark-one-main
    and region (no main landmark: everything outside landmarks)."""
    for name in ("full", "empty"):
        driver = page(name)
        emulate(driver, prefers_color_scheme=scheme)
        assert axe_violations(driver) == {}, name
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        rgb = [int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]]
        assert (sum(rgb) < 150) == (scheme == "dark"), background  # the page follows the reader's scheme
    emulate(driver)


def test_every_chart_has_its_numbers_as_text(page):
    """Before: the charts were `role=img` named "accuracy per group" etc., with the numbers only in
    tooltips a screen reader never reaches. Now each chart names what it shows, and its numbers are in
    a table with column headers (and a row header per group / audit)."""
    from selenium.webdriver.common.by import By

    driver = page("full")
    for chart in ("group-accuracy", "worst-group-over-time", "job-states"):
        svg = driver.find_element(By.ID, chart)
        assert svg.get_attribute("role") == "img" and len(svg.accessible_name) > 30, (chart, svg.accessible_name)
    groups = driver.find_element(By.ID, "group-accuracy-numbers")
    assert [th.text for th in groups.find_elements(By.CSS_SELECTOR, "thead th")][:4] == ["group", "users", "personalized", "one-size-fits-all"]
    assert all(th.get_attribute("scope") == "col" for th in groups.find_elements(By.CSS_SELECTOR, "thead th"))
    rows = {th.text: [td.text for td in th.find_elements(By.XPATH, "following-sibling::td")]
            for th in groups.find_elements(By.CSS_SELECTOR, "tbody th[scope=row]")}
    assert rows["minority"][1:3] == ["0.800", "0.120"] and rows["majority"][1:3] == ["0.950", "0.930"]
    over_time = driver.find_element(By.ID, "worst-group-over-time-numbers")
    assert len(over_time.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3
    states = driver.find_element(By.ID, "job-states").accessible_name
    assert "1 running" in states and "1 failed" in states and "1 succeeded" in states
    for table in driver.find_elements(By.TAG_NAME, "table"):  # every table: headers scoped, a caption naming it
        assert table.find_element(By.TAG_NAME, "caption").get_attribute("textContent")  # (one is folded in a <details>)
        assert all(th.get_attribute("scope") in ("col", "row") for th in table.find_elements(By.TAG_NAME, "th"))


def test_series_differ_by_more_than_colour(page):
    """Before: personalized and one-size-fits-all were blue and orange only (bars, lines, points and the
    legend's squares). Now one-size-fits-all bars are hatched, its line dashed with square points, and
    the legend draws and says both."""
    driver = page("full")
    cues = driver.execute_script("""
      const f = s => [...document.querySelectorAll(s)].map(e => getComputedStyle(e));
      return {personal: f('rect.bar.personalized').map(s => s.fill), base: f('rect.bar.base').map(s => s.fill),
              dash: f('.line.base').map(s => s.strokeDasharray), solid: f('.line.personalized').map(s => s.strokeDasharray),
              basePoints: [...document.querySelectorAll('.point.base')].map(e => e.tagName),
              points: [...document.querySelectorAll('.point.personalized')].map(e => e.tagName),
              legend: [...document.querySelectorAll('.legend')].map(e => e.innerText)}""")
    assert cues["base"] and all(fill.startswith("url(") for fill in cues["base"])  # a pattern, not a flat colour
    assert cues["personal"] and not any(fill.startswith("url(") for fill in cues["personal"])
    assert cues["dash"] and all(d != "none" for d in cues["dash"]) and all(d == "none" for d in cues["solid"])
    assert set(cues["basePoints"]) == {"rect"} and set(cues["points"]) == {"circle"}
    assert all("hatched" in text and "dashed" in text for text in cues["legend"]), cues["legend"]


def test_reflows_at_320_css_px_without_scrolling_sideways(page):
    """Before: the charts were drawn 760 px wide and the job table as wide as its text, so at 400%
    zoom (320 CSS px) the whole page scrolled sideways. Now charts scale down and wide tables scroll
    inside their own (keyboard-focusable, named) region."""
    from selenium.webdriver.common.by import By

    driver = page("full")
    emulate(driver, width=320)
    try:
        driver.refresh()
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 320
        chart = driver.find_element(By.ID, "group-accuracy").rect
        assert chart["width"] <= 320 and chart["height"] > 50
        assert axe_violations(driver) == {}
    finally:
        emulate(driver)


def test_keyboard_walk_reaches_every_control_in_order_with_visible_focus(page):
    """Before: the first Tab went to "Sign out" (no skip link), the wide tables could not be scrolled
    from the keyboard and nothing marked focus beyond the browser's default. Now: a skip link first,
    that moves focus to the main content, then every control in reading order, each with a 2 px+
    outline and on screen when focused."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = page("full")
    expected = controls(driver)
    stops = tab_walk(driver, len(expected) + 1)
    assert [s["name"] for s in stops] == expected
    assert stops[0]["text"].lower().startswith("skip to") and stops[1]["id"] == "sign-out"
    assert all(s["outline"] and s["inView"] for s in stops), [s for s in stops if not (s["outline"] and s["inView"])]
    assert len(expected) >= 5  # skip link, sign out, the numbers over time, two scrollable tables
    tab_walk(driver, 1)
    ActionChains(driver).send_keys(Keys.ENTER).perform()  # the skip link
    assert driver.execute_script("return document.activeElement.id") == "main"


def test_forced_colours_keep_the_charts_and_the_legend(page):
    """Forced colours (Windows high contrast) drop backgrounds: the legend's colour squares were
    spans with a background, so they vanished and the legend named nothing. Now the swatches are drawn
    (SVG, like the charts) and both series stay told apart."""
    driver = page("full")
    emulate(driver, forced_colors="active")
    try:
        swatches = driver.execute_script("""return [...document.querySelectorAll('.legend svg')].map(s => {
            const r = s.getBoundingClientRect(); return r.width * r.height; })""")
        assert len(swatches) >= 2 and all(area >= 100 for area in swatches)
        assert driver.execute_script("return matchMedia('(forced-colors: active)').matches")
        assert axe_violations(driver) == {}
    finally:
        emulate(driver)


def test_the_group_without_a_value_reads_apart_from_the_value_no_value(page):
    """The group of comparisons with no value of the attribute, `" (no value)"` in the JSON (a name no value can have:
    values are trimmed), and a client's value `"(no value)"`: before, the page wrote both as they are, and HTML drops the
    leading space, so the table, the chart's labels and tooltips and the summary's worst groups read the same."""
    from selenium.webdriver.common.by import By

    driver = page("no-value")
    table = driver.find_element(By.ID, "group-accuracy-numbers")
    rows = [th.text for th in table.find_elements(By.CSS_SELECTOR, "tbody th[scope=row]")]
    assert len(rows) == 3 and len(set(rows)) == 3 and "(no value)" in rows and "trial" in rows, rows
    chart = driver.find_element(By.ID, "group-accuracy")
    labels = [e.get_attribute("textContent") for e in chart.find_elements(By.CSS_SELECTOR, "text.group-label")]
    assert len(set(labels)) == 3, labels
    tips = driver.execute_script("return [...document.querySelectorAll('rect.bar.personalized title')].map(e => e.textContent)")
    assert len({t.replace("\u2068", "").replace("\u2069", "").strip() for t in tips}) == 3, tips
    said = chart.accessible_name
    summary = driver.find_element(By.CSS_SELECTOR, "#h-groups + p").text
    without = rows[[i for i, r in enumerate(rows) if r not in ("(no value)", "trial")][0]]
    assert without in summary and f"{without}:" in said and "\u201c(no value)\u201d:" in said, (summary, said)  # a value: quoted
