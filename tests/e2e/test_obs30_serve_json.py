"""A real `pluralign serve` with `PLURALIGN_LOG_FORMAT=json`: every log line on its stderr is one JSON
object (but the development key's line, printed for a person), each request has its access line with
the route template and the id the client sent, an error's line carries the id its body names, and no
key, prompt, feedback text or user id appears anywhere in what the process wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.e2e.test_e2e_serve import ROOT, ServeProcess
from tests.service.tiny import free_port

PROMPT = "prompt-marker-Qs81 plan my weekend"
CHOSEN, REJECTED = "chosen-marker-Wd20 a quiet hike", "rejected-marker-Ze37 a loud party"
USER = "user-marker-Lp55"


@pytest.mark.slow  # one server start: ~15-40 s on two busy cores
def test_serve_writes_json_lines_with_request_ids_and_no_secrets(tmp_path, tiny_generator_dir, tiny_pal_dir):
    serve = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, PLURALIGN_LOG_FORMAT="json")
    try:
        key = serve.dev_key()
        auth = {"Authorization": f"Bearer {key}"}
        fb = {"type": "comparison", "user": USER, "prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}
        with httpx.Client(base_url=serve.url, headers=auth, timeout=120) as c:
            assert c.post("/v1/feedback", json=fb, headers={"X-Request-Id": "e2e-fb-1"}).status_code == 201
            chat = c.post("/v1/chat/completions", headers={"X-Request-Id": "e2e-chat-2"},
                          json={"model": "pluralign", "user": USER, "messages": [{"role": "user", "content": PROMPT}]})
            assert chat.status_code == 200 and chat.headers["X-Request-Id"] == "e2e-chat-2", chat.text
            missing = c.get("/admin/jobs/nope", headers={"X-Request-Id": "e2e-err-3"})  # a tenant key on an admin route
            assert missing.status_code == 403 and missing.json()["error"]["request_id"] == "e2e-err-3", missing.text
            assert c.get(f"/v1/users/{USER}", headers={"X-Request-Id": "e2e-user-4"}).status_code == 200
    finally:
        serve.stop()
    written = serve.log.read_text()
    lines = [line for line in written.splitlines() if line.strip()]
    records = []
    for line in lines:
        if line.startswith("development API key"):
            continue
        records.append(json.loads(line))  # every other line is one JSON object
    access = {r["request_id"]: r for r in records if r["logger"] == "pluralign.access"}
    assert {k: access["e2e-fb-1"][k] for k in ("method", "route", "status", "tenant")} == {
        "method": "POST", "route": "/v1/feedback", "status": 201, "tenant": "default"}
    assert access["e2e-chat-2"]["route"] == "/v1/chat/completions" and access["e2e-chat-2"]["duration_ms"] > 0
    assert access["e2e-err-3"]["status"] == 403 and access["e2e-err-3"]["route"] == "/admin/jobs/{job_id}"
    assert access["e2e-user-4"]["route"] == "/v1/users/{user_id}"
    for secret in (key, PROMPT, CHOSEN, REJECTED, USER, "prompt-marker", "chosen-marker", "rejected-marker", "user-marker"):
        assert secret not in written.replace(f"development API key for tenant `default` (shown once, stored hashed): {key}", ""), secret


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("PLURALIGN_LOG_FORMAT", "xml", "`log_format` must be `text` or `json`, got 'xml'"),
    ("PLURALIGN_ACCESS_LOG", "maybe", "expected `bool`: `true` or `false` (or `1`, `0`; in any case), got 'maybe'"),
])
def test_a_bad_logging_setting_is_one_line_naming_the_variable(tmp_path, variable, value, problem):
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLURALIGN_DATA_DIR": str(data), variable: value}
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    setting = variable.removeprefix("PLURALIGN_").lower()
    assert done.returncode == 2 and done.stderr == f"pluralign: error: {variable} (setting {setting}): {problem}\n", done.stderr
    assert not data.exists()
