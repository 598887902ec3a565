"""A first-day user's import bodies, sent with curl the way people do: each mistake is a 400 naming
the line and saying what to send instead."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.hf_datasets import have_datasets
from tests.service.tiny import field_named, start_service

ROW = {"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("newuser31"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    adapter_every=1_000_000)
    with server:
        yield service


def curl(svc, path, *argv: str, content_type: str = "application/x-ndjson") -> dict:
    out = subprocess.run(["curl", "-s", svc.url + path, "-H", f"Authorization: Bearer {svc.keys['acme']}",
                          "-H", f"Content-Type: {content_type}", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_file_sent_with_curl_d_is_told_to_use_data_binary(svc, tmp_path):
    """`curl -d @prefs.jsonl` strips the file's newlines, so every row arrives on one line. Before:
    "`line 1`: malformed JSON (JSON is malformed: trailing characters (byte 63))"."""
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    body = curl(svc, "/v1/users/nu31a/import", "-d", f"@{path}")
    assert body["error"]["param"] == "line 1" and body["error"]["code"] == "invalid_json", body
    assert "several JSON objects on one line" in body["error"]["message"], body
    assert "--data-binary @FILE" in body["error"]["message"], body
    assert curl(svc, "/v1/users/nu31a/import", "--data-binary", f"@{path}")["user"] == "nu31a"  # as told: stored


def test_a_json_array_body_is_told_to_send_json_lines(svc, tmp_path):
    """A JSON array of rows (what `json.dump(rows, f)` writes). Before: "`line 1`: expected a JSON object"."""
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps([ROW, ROW]))
    body = curl(svc, "/v1/users/nu31b/import", "--data-binary", f"@{path}")
    assert body["error"]["param"] == "line 1" and "JSON array: the rows go one JSON object a line" in body["error"]["message"], body
    with svc.client() as c:
        assert c.get("/v1/users/nu31b").status_code == 404  # nothing stored
        r = c.post("/v1/users/nu31b/import", content=json.dumps([ROW], indent=2), headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 400 and field_named(r) == "line 1" and "it opens a JSON array" in r.text, r.text


def test_a_key_sent_without_bearer_is_not_echoed_back(svc):
    """`curl -H "Authorization: $KEY"` (the word `Bearer` forgotten). Before: "the scheme must be
    `Bearer` (an API key), got `pk-...`" with the key's first 16 characters, a third of its secret."""
    key = svc.keys["acme"]
    out = subprocess.run(["curl", "-s", "-i", svc.url + "/v1/models", "-H", f"Authorization: {key}"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("HTTP/1.1 401"), out.stdout
    assert key[:8] not in out.stdout, out.stdout  # "pk-" and 5 characters of the secret: none of it echoed
    body = json.loads(out.stdout.split("\n\n", 1)[1])  # text mode: \r\n read as \n
    assert body["error"]["message"] == "`Authorization`: a key without its scheme: send `Authorization: Bearer <API key>`", body


def test_a_parquet_file_or_a_pretty_printed_row_is_told_what_to_send(svc, tmp_path):
    """A Parquet file (`datasets`' `to_parquet`) posted as the body, and one row pretty-printed
    (`json.dump(row, f, indent=2)`). Before: "malformed JSON (...); it holds NUL bytes: a binary file,
    not JSON lines" and "malformed JSON (Input data was truncated)", neither saying what to send."""
    if not have_datasets():  # found, not imported: this worker hosts the service's threads
        pytest.skip("datasets is not installed")
    parquet = tmp_path / "prefs.parquet"
    # in a process of its own, as in a user's script: not in this worker, which also hosts the service's threads
    written = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                              "import datasets, json, sys; datasets.Dataset.from_list([json.loads(sys.argv[1])]).to_parquet(sys.argv[2])",
                              json.dumps(ROW), str(parquet)], capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, f"exit {written.returncode}:\n{written.stderr[-4000:]}"
    body = curl(svc, "/v1/users/nu31c/import", "--data-binary", f"@{parquet}")
    assert body["error"]["param"] == "line 1", body
    assert "a Parquet file: `pluralign data import --source parquet --path FILE` sends its rows" in body["error"]["message"], body
    pretty = tmp_path / "row.json"
    pretty.write_text(json.dumps(ROW, indent=2))
    body = curl(svc, "/v1/users/nu31c/import", "--data-binary", f"@{pretty}")
    assert body["error"]["param"] == "line 1", body
    assert "a JSON object spread over several lines" in body["error"]["message"] and "jq -c ." in body["error"]["message"], body


def test_a_choice_sent_with_its_user_says_the_response_names_the_user(svc):
    """A comparison needs `user`, so a new user sends it with a choice too (the chat was alice's).
    Before: "`user`: unknown field (docs/api.md lists the fields this API takes)", nothing more."""
    import openai

    client = openai.OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0)
    reply = client.chat.completions.create(model="pluralign", user="nu31d", n=2, max_tokens=4,
                                           messages=[{"role": "user", "content": "Tea or coffee?"}])
    choice = {"type": "choice", "user": "nu31d", "response_id": reply.id, "chosen_index": 1}
    body = curl(svc, "/v1/feedback", "--data-binary", json.dumps(choice), content_type="application/json")
    assert body["error"]["param"] == "user" and body["error"]["code"] == "unknown_parameter", body
    assert "a `choice`, `rating` or `edit` takes no `user`: its `response_id` names the chat, and the chat its user" in body["error"]["message"], body
    del choice["user"]
    assert curl(svc, "/v1/feedback", "--data-binary", json.dumps(choice), content_type="application/json")["user"] == "nu31d"


def test_an_empty_body_says_to_send_a_json_object(svc):
    """`curl -X POST .../next-comparison` with no body (every field of it is optional). Before: "`body`:
    the request body is not valid JSON: Input data was truncated"."""
    out = subprocess.run(["curl", "-s", "-X", "POST", svc.url + "/v1/users/nu31e/next-comparison",
                          "-H", f"Authorization: Bearer {svc.keys['acme']}"], capture_output=True, text=True, timeout=60)
    body = json.loads(out.stdout)
    assert body["error"]["param"] == "body" and body["error"]["code"] == "invalid_json", body
    assert body["error"]["message"] == "`body`: the request body is empty: send a JSON object (`{}` takes every optional field's default)", body


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/users/nu31f/import"])
def test_a_compressed_body_is_refused_naming_content_encoding(svc, tmp_path, path):
    """A gzip-compressed body (`Content-Encoding: gzip`, as some HTTP clients send). Before: "`body`:
    the request body is not valid JSON: JSON is malformed: invalid character (byte 0)", and a plain body
    labelled `br` was read as if the label were not there. RFC 9110 15.5.16: a 415 whose
    `Accept-Encoding` says which codings are taken."""
    import gzip

    row = {"type": "comparison", "user": "nu31f", **ROW} if path == "/v1/feedback" else ROW
    packed = tmp_path / "body.gz"
    packed.write_bytes(gzip.compress(json.dumps(row).encode() + b"\n"))
    out = subprocess.run(["curl", "-s", "-i", svc.url + path, "-H", f"Authorization: Bearer {svc.keys['acme']}",
                          "-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip", "--data-binary", f"@{packed}"],
                         capture_output=True, text=True, timeout=60)
    head, body = out.stdout.split("\n\n", 1)  # text mode: \r\n read as \n
    assert head.startswith("HTTP/1.1 415") and "accept-encoding: identity" in head.lower(), head
    error = json.loads(body)["error"]
    assert error["param"] == "Content-Encoding" and error["code"] == "unsupported_media_type", error
    assert error["message"] == "`Content-Encoding`: 'gzip': request bodies are read as sent, not decompressed: send it uncompressed", error
    with svc.client() as c:
        assert c.get("/v1/users/nu31f").status_code == 404  # nothing stored
