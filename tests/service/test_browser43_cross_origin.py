"""A chat app on another origin, in headless Chromium (Debian's chromium and chromedriver): the page
is served from a second local port, as a real app's would be, and calls the service with plain
`fetch`, sending the headers the `openai` JS SDK sends and reading the headers a UI needs. The
browser enforces CORS, so what it refuses shows here as a `TypeError` and a console line, as it
would to the app's developer."""

from __future__ import annotations

import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.service.tiny import start_service

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
PAGE = b"<!doctype html><html lang=en><meta charset=utf-8><title>chat app</title><h1>chat app</h1>"
# what openai-node (v4-v6) puts on every request beside Authorization and Content-Type: its platform
# headers (src/internal/detect-platform.ts), the retry count and timeout (src/client.ts, buildHeaders),
# OpenAI-Organization / OpenAI-Project when the client is given them
SDK_HEADERS = {
    "X-Stainless-Lang": "js", "X-Stainless-Package-Version": "5.23.0", "X-Stainless-OS": "Unknown",
    "X-Stainless-Arch": "unknown", "X-Stainless-Runtime": "browser:chrome", "X-Stainless-Runtime-Version": "140.0.0",
    "X-Stainless-Retry-Count": "0", "X-Stainless-Timeout": "600", "OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1",
}


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def app_origin():
    """The app's own origin: another port, and `localhost` where the service is `127.0.0.1`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm, app_origin):
    server, service = start_service(tmp_path_factory.mktemp("cors-data"), tiny_generator_dir, tiny_pal_dir, minilm, cors_origins=(app_origin,))
    with server:
        yield service


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from tests.a11y import chromium

    driver = chromium(tmp_path_factory.mktemp("chrome-profile"))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


APP_SCRIPT = """
const [api, key, sdkHeaders, done] = arguments;
const auth = {'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'};
const seen = {};
async function call(name, path, init, read) {
  try {
    const r = await fetch(api + path, init);
    seen[name] = {status: r.status};
    for (const h of read) seen[name][h] = r.headers.get(h);
    await r.text();
  } catch (e) { seen[name] = {blocked: String(e)}; }
}
(async () => {
  await call('stated', '/v1/users/ui-user/stated-preferences', {headers: auth}, ['etag', 'x-request-id', 'ratelimit-remaining']);
  const tag = (seen.stated && seen.stated.etag) || '"0"';
  await call('patch', '/v1/users/ui-user/stated-preferences',
             {method: 'PATCH', headers: {...auth, 'If-Match': tag}, body: JSON.stringify({preferences: {length: 'less'}})}, ['etag']);
  const feedback = {method: 'POST', headers: {...auth, 'Idempotency-Key': 'ui-1'},
                    body: JSON.stringify({type: 'comparison', user: 'ui-user', prompt: 'Which pet?', chosen: 'A cat', rejected: 'A dog'})};
  await call('feedback', '/v1/feedback', feedback, []);
  await call('again', '/v1/feedback', feedback, ['idempotent-replayed']);
  await call('export', '/v1/users/ui-user/export', {headers: auth}, ['content-disposition']);
  await call('sdk', '/v1/models', {headers: {...auth, ...sdkHeaders}}, ['x-request-id']);
})().then(() => done(seen), e => done({thrown: String(e)}));
"""


def test_a_browser_app_on_another_origin_sends_what_sdks_send_and_reads_what_it_needs(svc, browser, app_origin):
    """Before: the preflight of a PATCH with `If-Match` (docs/api.md's conditional change, for a settings
    page open on two devices) and of any request the `openai` JS SDK makes (`X-Stainless-*`,
    `OpenAI-Organization`) was a 400 (`Access-Control-Request-Headers`), so Chromium blocked the call
    ("Failed to fetch"); and only `X-Request-Id` was exposed, so the app read `ETag`,
    `Idempotent-Replayed`, `Content-Disposition` and `RateLimit-*` as null."""
    browser.get(app_origin + "/")
    browser.get_log("browser")  # what the page load logged
    seen = browser.execute_async_script(APP_SCRIPT, svc.url, svc.keys["acme"], SDK_HEADERS)
    console = [e["message"] for e in browser.get_log("browser") if "CORS" in e["message"]]
    assert console == [], console
    assert seen["stated"]["status"] == 200 and seen["stated"]["etag"] == '"0"', seen
    assert seen["stated"]["x-request-id"].startswith("req_") and seen["stated"]["ratelimit-remaining"] is not None, seen
    assert seen["patch"]["status"] == 200 and re.fullmatch(r'"[0-9a-f]{16}\.1"', seen["patch"]["etag"] or ""), seen
    assert seen["feedback"]["status"] == 201 and seen["again"] == {"status": 201, "idempotent-replayed": "true"}, seen
    assert seen["export"]["status"] == 200 and "attachment" in (seen["export"]["content-disposition"] or ""), seen
    assert seen["sdk"]["status"] == 200 and seen["sdk"]["x-request-id"].startswith("req_"), seen
    # what a browser client retries by (the `openai` SDK reads `retry-after`), though no 429 is provoked here
    preflight = httpx.options(svc.url + "/v1/chat/completions", headers={"Origin": app_origin, "Access-Control-Request-Method": "POST"})
    exposed = {h.strip().lower() for h in preflight.headers.get("access-control-expose-headers", "").split(",")}
    answer = httpx.get(svc.url + "/health", headers={"Origin": app_origin})
    exposed |= {h.strip().lower() for h in answer.headers.get("access-control-expose-headers", "").split(",")}
    assert {"retry-after", "ratelimit-reset", "location"} <= exposed, exposed


DRAINING_SCRIPT = """
const [api, key, done] = arguments;
fetch(api + '/v1/users/ui-user/stated-preferences', {method: 'PATCH', body: JSON.stringify({preferences: {length: 'more'}}),
      headers: {'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'}})
  .then(async r => done({status: r.status, retryAfter: r.headers.get('retry-after'), error: (await r.json()).error.message}),
        e => done({blocked: String(e)}));
"""


def test_a_browser_app_reads_the_503_of_a_service_that_is_stopping(svc, browser, app_origin):
    """Before: while `pluralign serve` drains (told to stop, `stop_drain_s`), every request is answered 503
    with Retry-After so clients retry elsewhere, but that answer (made outside Litestar's CORS) carried no
    `Access-Control-Allow-Origin`: a page on another origin got "Failed to fetch" and could not tell a
    rolling restart from a dead service. The flag is the one `pluralign serve` sets on SIGTERM."""
    browser.get(app_origin + "/")
    app = svc.server.server.config.app
    app.state.draining = True
    try:
        seen = browser.execute_async_script(DRAINING_SCRIPT, svc.url, svc.keys["acme"])
    finally:
        app.state.draining = False
    assert seen.get("status") == 503 and seen["retryAfter"] == "5" and "stopping" in seen["error"], seen
