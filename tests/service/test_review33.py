"""Session 33's hostile review: what a hostile or unlucky client sends (a key in the wrong place of
`Authorization`, a JSON string holding a lone UTF-16 surrogate) is refused with a 4xx naming the field,
and never echoed back when it is a secret. Each case failed before its fix."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):  # noqa: F811
    """One service for the HTTP cases (each server start costs seconds)."""
    from tests.service.tiny import start_service

    server, service = start_service(tmp_path_factory.mktemp("review33"), tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server:
        yield service


def _pieces(secret: str) -> list[str]:
    """Every 6-character run of the key: none may appear in an answer or a log."""
    return [secret[i:i + 6] for i in range(len(secret) - 5)]


@pytest.mark.parametrize("shape", ["{key} extra words", "{key} x", "Bearer {key} extra words", "{key}", "Basic {key}",
                                   "bearer{key}", "Token {key} {key}"])
def test_no_part_of_a_key_comes_back_from_a_malformed_authorization(live, shape, caplog):
    """`Authorization: <key> extra words` (the word `Bearer` forgotten, more words after the key). Before:
    the 401 said "the scheme must be `Bearer` (an API key), got `pk-OFgPCPtbWyu-0`": the key's first 16
    characters, to whoever reads the error (a client's logs, a proxy's). Now a first word that is no
    known scheme is not repeated; a known one (`Basic`) still is."""
    secret = live.keys["acme"]
    caplog.set_level(logging.INFO)
    with live.client(who="") as c:
        answer = c.get("/v1/models", headers={"Authorization": shape.format(key=secret)})
    assert answer.status_code == 401, answer.text
    shown = answer.text + "".join(f"{k}: {v}" for k, v in answer.headers.items())
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not [p for p in _pieces(secret) if p in shown], answer.text
    assert not [p for p in _pieces(secret) if p in logged], logged
    if shape.startswith("Basic"):
        assert "got `Basic`" in answer.json()["error"]["message"], answer.text
