"""Review of hints59, against `pluralign serve-embeddings` over HTTP: a number no 64-bit integer or float holds
(`1e400`) is refused naming its field, in our words, as the API service says it. Before, Litestar's decode said
msgspec's `Number out of range - at `$[...]``, param null: the words and the path hints59 took out of every other
message."""

from __future__ import annotations

import httpx
import pytest

from service.embeddings.app import create_embeddings_app
from tests.service.test_newuser38_embeddings_errors import TinyEncoder
from tests.service.tiny import LiveServer

SAID = "a number out of range: no 64-bit integer or float holds it"


@pytest.fixture(scope="module")
def url():
    with LiveServer(create_embeddings_app(TinyEncoder())) as server:
        yield server.url


@pytest.mark.parametrize("body, param", [
    ('{"model": "tiny", "input": "a", "dimensions": 1e400}', "dimensions"),
    ('{"model": "tiny", "input": "a", "dimensions": 1' + "0" * 300 + 'e9}', "dimensions"),  # 1e309: a float's bound past
    ('{"model": "tiny", "input": "a", "user": -2.5E+999}', "user"),
    ('{"model": "tiny", "input": "a", "metadata": {"x": [1, 1e400]}}', "metadata"),  # a field OpenAI's request carries, ignored
])
def test_a_number_out_of_range_is_named_by_its_field(url, body, param):
    r = httpx.post(f"{url}/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["message"], error["code"]) == (param, f"`{param}`: {SAID}", "invalid_value"), error


def test_a_text_that_looks_like_a_large_number_is_encoded(url):
    r = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": ["1e400", "9" * 400]})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
