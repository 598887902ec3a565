"""Accessibility checks in a real browser: axe-core (the `selenium-axe-python` wheel ships its JS,
injected from disk: nothing fetched), Chromium's emulation of user settings (dark scheme, reduced
motion, forced colours, a 320 px wide window) and a keyboard-only walk with Tab."""

from __future__ import annotations

import json

# WCAG 2.0-2.2 A and AA, and axe's best practices (landmarks, one h1, regions)
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_violations(driver, context: dict | None = None) -> dict[str, list]:
    """axe-core's violations on the page now: rule id -> the elements (CSS selectors) failing it."""
    from selenium_axe_python import Axe

    axe = Axe(driver)
    axe.inject()
    options = json.dumps({"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]})
    result = axe.run(context=json.dumps(context) if context else None, options=options)
    return {v["id"]: [n["target"] for n in v["nodes"]] for v in result["violations"]}


def emulate(driver, width: int | None = None, **media: str) -> None:
    """Emulate a window `width` CSS px wide (as a desktop at 400% zoom of 1280 px) and media features
    (`prefers_color_scheme="dark"`, `prefers_reduced_motion="reduce"`, `forced_colors="active"`);
    nothing given: back to the window as it is."""
    if width is None:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    else:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    features = [{"name": name.replace("_", "-"), "value": value} for name, value in media.items()]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex='-1'])"
DESCRIBE = """const e = document.activeElement; if (!e || e === document.body) return null;
const s = getComputedStyle(e);
return {id: e.id, tag: e.tagName.toLowerCase(), text: (e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 60),
        outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2, inView: (() => {const r = e.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < innerHeight;})()};"""


def controls(driver) -> list[str]:
    """The page's focusable controls in document order, each named as `tab_walk` names them."""
    return driver.execute_script(
        f"return [...document.querySelectorAll({json.dumps(FOCUSABLE)})].filter(e => e.checkVisibility({{visibilityProperty: true}}))"
        ".map(e => e.tagName.toLowerCase() + '#' + e.id + ':' + (e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 60))"
    )


def tab_walk(driver, presses: int) -> list[dict]:
    """Press Tab `presses` times from the top of the page; what has focus after each press."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    # focus the page itself: the next Tab starts from its top (a blur would leave the start where focus was)
    driver.execute_script("const b = document.body; b.tabIndex = -1; b.focus(); b.removeAttribute('tabindex');")
    stops = []
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        here = driver.execute_script(DESCRIBE)
        if here is None:  # past the last control: focus left the page
            break
        here["name"] = f"{here['tag']}#{here['id']}:{here['text']}"
        stops.append(here)
    return stops


def chromium(profile_dir, width: int = 1200, height: int = 1000):
    """Debian's headless Chromium under chromedriver (the caller quits it)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--no-first-run", "--disable-extensions", f"--user-data-dir={profile_dir}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    return driver
