"""An import too large for one request, sent as docs/api.md shows it (`curl --data-binary @FILE`), against
the real app over HTTP.

Before: the 413 said only "`body`: N bytes over the limit of M bytes a request (PLURALIGN_MAX_BODY_BYTES)",
the same words as for an oversized chat, though a preference file of any size has a way in: `pluralign data
import` sends it in pieces under the limit. Now the import's 413 names that command; other routes' 413s
keep their words."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.service.tiny import start_service

LIMIT = 4096


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm, max_body_bytes=LIMIT)
    with server:
        yield service


def test_an_import_over_the_limit_names_the_command_that_sends_it_in_pieces(svc):
    rows = "".join(json.dumps({"prompt": f"Question {i}?", "chosen": "Yes.", "rejected": "No."}) + "\n" for i in range(200))
    r = httpx.post(svc.url + "/v1/users/ann/import", content=rows.encode(),  # curl --data-binary's form type
                   headers={"Authorization": f"Bearer {svc.keys['acme']}", "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["param"] == "body" and error["code"] == "request_too_large", error
    assert error["message"].startswith(f"`body`: the body is {len(rows)} bytes, larger than the limit of {LIMIT} bytes a request (PLURALIGN_MAX_BODY_BYTES)"), error
    assert "pluralign data import --source jsonl --path FILE --url URL --key KEY" in error["message"], error


def test_the_import_s_413_does_not_reflect_the_host_header(svc):
    """Sig session 40: the suggested `--url` was the request's Host header, so `Host: evil.example` came back
    as `--url http://evil.example` (behind a proxy: the internal host name, and http:// to an https client)."""
    rows = "".join(json.dumps({"prompt": f"Question {i}?", "chosen": "Yes.", "rejected": "No."}) + "\n" for i in range(200))
    r = httpx.post(svc.url + "/v1/users/ann/import", content=rows.encode(),
                   headers={"Host": "evil.example", "Authorization": f"Bearer {svc.keys['acme']}"})
    assert r.status_code == 413, r.text
    message = r.json()["error"]["message"]
    assert "--url URL" in message and "evil.example" not in message and "http" not in message, message


def test_another_route_s_413_keeps_its_words(svc):
    body = {"type": "comparison", "user": "ann", "prompt": "p" * LIMIT, "chosen": "a", "rejected": "b"}
    r = httpx.post(svc.url + "/v1/feedback", json=body, headers={"Authorization": f"Bearer {svc.keys['acme']}"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["message"].endswith("bytes a request (PLURALIGN_MAX_BODY_BYTES)"), r.text
