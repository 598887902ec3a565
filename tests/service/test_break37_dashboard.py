"""Session 37: the dashboard in headless Chromium with hostile data, stored through the real app over
HTTP: group labels, prompts and answers holding markup, an RTL override, 256-character words (the
longest attribute value there may be), emoji. No script runs and nothing is fetched (the page's CSP);
before, the layout broke: the bar chart drew each group's label whole under its bars, so one long
label ran over every other (the labels a smear), and a long word in a table cell widened the table
to 4,000 px, its numbers off to the right of a 1,200 px window."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_browser_pages import CHROMEDRIVER, CHROMIUM, local, wait_for
from tests.service.tiny import start_service
from tests.stores import wait_for as wait_until

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Debian's chromium and chromium-driver are not installed")

LONG = "W" * 256  # the longest attribute value the API takes
HOSTILE = ['"><img src=x onerror=document.title=1>', "<script>document.title='pwned'</script>", "\u202egnp.exe",
           LONG, "\U0001F600\U0001F469\u200d\U0001F469\u200d\U0001F467" * 20, "\u0645\u0631\u062d\u0628\u0627"]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("hostile-data"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server:
        yield service


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from tests.a11y import chromium

    driver = chromium(tmp_path_factory.mktemp("chrome-profile"), width=1200, height=1000)
    yield driver
    driver.quit()


def signed_in_as_admin(browser, svc) -> None:
    """Sign in on the login page with the admin key, as an admin would, and wait for the signed-in page."""
    browser.get(local(svc, "/admin/login"))
    browser.find_element(By.ID, "key").send_keys(svc.keys["admin"])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, "#sign-out")


@pytest.mark.slow  # a service, an audit and Chromium: ~30 s on two busy cores
def test_hostile_labels_and_answers_run_no_script_and_keep_the_layout(svc, browser):
    with svc.client("acme") as c, svc.client("admin") as admin:
        for u, group in enumerate(HOSTILE):
            for user, i in ((user, i) for user in (f"h{u}", f"h{u}b") for i in range(3)):  # two a group: one is suppressed (session 49)
                r = c.post("/v1/feedback", json={
                    "type": "comparison", "user": user, "prompt": f"{HOSTILE[(u + i) % len(HOSTILE)]} q{i}",
                    "chosen": f"{HOSTILE[(u + 1) % len(HOSTILE)]} good {i}", "rejected": f"bad {i} {'W' * 5000}", "attributes": {"seg": group}})
                assert r.status_code == 201, r.text
        # one audit of every tenant (the page) and one of acme (?tenant=acme shows acme's audits only, since 095c82f1)
        for tenant in ({}, {"tenant": "acme"}):
            r = admin.get("/admin/audits/fairness", params={"group_by": "seg", "wait": 120, "min_comparisons": 1, **tenant})
            assert r.status_code == 200 and len(r.json()["groups"]) == len(HOSTILE), r.text
    signed_in_as_admin(browser, svc)
    for path in ("/admin/dashboard", "/admin/dashboard?tenant=acme"):
        browser.get(local(svc, path))
        wait_for(browser, "#group-accuracy")
        page = browser.execute_script(
            "return {title: document.title, images: document.images.length, scripts: document.scripts.length,"
            " width: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth}")
        assert page["title"] == "pluralign: fairness and jobs" and page["images"] == 0 and page["scripts"] == 0, page
        assert page["scroll"] <= page["width"], page  # the page itself never scrolls sideways
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        # the bar chart's group labels: each inside its own slot, none over its neighbour
        boxes = browser.execute_script(
            "return Array.from(document.querySelectorAll('#group-accuracy text.group-label')).map(t => {"
            " const b = t.getBoundingClientRect(); return [b.left, b.right]; })")
        assert len(boxes) == len(HOSTILE), boxes
        for (_, right), (left, _) in zip(boxes, boxes[1:], strict=False):
            assert right <= left + 1, boxes
        # the tables of user text fit the window: the numbers are on screen, not 3,000 px to the right
        for table in ("group-accuracy-numbers", "jobs", *(("prototypes",) if "tenant" in path else ())):
            sizes = browser.execute_script(
                f"const t = document.getElementById('{table}'); return [t.scrollWidth, t.parentElement.clientWidth]")
            assert sizes[0] <= sizes[1] + 1, (table, sizes)
        shown = browser.find_element(By.ID, "group-accuracy-numbers").text
        assert "<script>document.title='pwned'</script>" in shown and '"><img src=x onerror=document.title=1>' in shown
        # an RTL override in stored text is shown, not obeyed (session pool52): a prompt "\u202egnp.exe q0" read
        # "0q exe.png" in its <bdi> (a group label holds none: attributes are stored without it)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "\u202e" not in body
        if "tenant" in path:
            assert "[U+202E]gnp.exe" in browser.find_element(By.ID, "prototypes").text, ascii(body)
            marked = browser.execute_script("return Array.from(document.querySelectorAll('.bidi-control')).map(e => e.title)")
            assert marked and set(marked) == {"U+202E RIGHT-TO-LEFT OVERRIDE"}, marked
        assert shown.count("W") >= 256  # the long label is whole in the table, wrapped


# an audit's `group_by` is an attribute's name in any script (`training.jobs.params`): markup passes, and its job's params,
# and its failed job's error quoting it, are shown in the dashboard's jobs table
HOSTILE_NAMES = ['"><img src=x onerror=document.title=1>', "</bdi></td></tr></table><script>document.title='pwned'</script>",
                 '<meta http-equiv="refresh" content="0;url=http://evil.example/"><iframe src="http://evil.example/"></iframe>',
                 '<link rel="stylesheet" href="http://evil.example/x.css"><svg onload=document.title=2>']


@pytest.mark.slow  # the service's audit workers and Chromium
def test_hostile_audit_names_in_the_jobs_table_run_no_script_and_fetch_nothing(svc, browser):
    """review breakB62: the jobs table (each job's params, a failed job's error) with markup in an audit's `group_by`,
    rendered in Chromium (breakB62 checked the HTML over HTTP only): nothing runs, nothing is fetched, the text is shown."""
    with svc.client("admin") as admin:
        jobs = []
        for name in HOSTILE_NAMES:
            r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": name, "tenant": "acme", "min_comparisons": 1}})
            assert r.status_code in (200, 201), r.text
            jobs.append(r.json()["id"])
        for job_id in jobs:
            wait_until(lambda job_id=job_id: admin.get(f"/admin/jobs/{job_id}").json()["state"] in ("succeeded", "failed"), 240)
    signed_in_as_admin(browser, svc)
    for path in ("/admin/dashboard", "/admin/dashboard?tenant=acme"):
        browser.get(local(svc, path))
        wait_for(browser, "#jobs")
        page = browser.execute_script(
            "return {title: document.title, scripts: document.scripts.length, fetched: performance.getEntriesByType('resource').length,"
            " hostile: document.querySelectorAll('img, iframe, meta[http-equiv], link, [onerror], [onload]').length}")
        assert page == {"title": "pluralign: fairness and jobs", "scripts": 0, "fetched": 0, "hostile": 0}, page
        assert browser.current_url == local(svc, path)  # no refresh took it elsewhere
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors  # a fetch the CSP refused is logged here
        shown = browser.find_element(By.ID, "jobs").text
        assert all(name in shown for name in HOSTILE_NAMES), shown
