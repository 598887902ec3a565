"""Session 38, a new user trying `pluralign serve-embeddings` (deploy/README.md, "Commands that run here") with
curl: a request it refuses names the field and what is wrong, and a mistyped route names the request and the
routes there are, as the API service's errors do. Over HTTP, on a tiny stand-in encoder."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from service.embeddings.app import create_embeddings_app
from tests.service.tiny import LiveServer


class TinyEncoder:
    encoder_id, dim = "tiny", 2

    def encode(self, texts):
        return np.ones((len(texts), self.dim), dtype=np.float32)


@pytest.fixture(scope="module")
def url():
    with LiveServer(create_embeddings_app(TinyEncoder())) as server:
        yield server.url


@pytest.mark.parametrize("body, param, said", [
    ('{"input": "hello"}', "model", "`model`: missing required field"),
    ('{"model": "tiny", "input": 5}', "input", "`input`: must be text or a list, not an integer"),
    ('{"model": "tiny", "input": ["a", 5]}', "input[1]", "`input[1]`: must be text, not an integer"),
    ('{"model": "tiny", "input": "a", "encoding_format": "hex"}', "encoding_format", "`encoding_format`: must be one of `float`, `base64`; got 'hex'"),
    ('{"model": "tiny", "input": "a"', "body", "`body`: the request body is not valid JSON: "),
])
def test_a_refused_body_names_its_field_and_the_problem(url, body, param, said):
    """Before: `Validation failed for POST /v1/embeddings` (param `data` for a missing `model`), code null."""
    r = httpx.post(f"{url}/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error"), error
    assert error["message"].startswith(said), error
    assert error["code"] == ("invalid_json" if param == "body" else "invalid_value"), error


def test_a_mistyped_route_names_the_request_and_the_routes(url):
    """Before: `Not Found`, code null: a typo read like nothing at all."""
    r = httpx.post(f"{url}/v1/embedding", json={"model": "tiny", "input": "a"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["message"] == "no route `POST /v1/embedding`: this server serves `POST /v1/embeddings`, `GET /info` and `GET /health`", error
    assert error["code"] == "not_found", error
    ok = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": ["a", "b"]})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2, ok.text


def test_an_encoding_format_sent_as_null_is_floats_as_when_left_out(url):
    """Review rw42. rows42 made an optional field's null "not given" on the API service's bodies; this server's
    `encoding_format` (OpenAI's: "float" when left out) still answered 400 "Expected `str`, got `null`" to a client
    sending every field, null where unset (litellm's and pydantic-built requests)."""
    r = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": "a", "encoding_format": None, "dimensions": None, "user": None})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == [1.0, 1.0], r.text
