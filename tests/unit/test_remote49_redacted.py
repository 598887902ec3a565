"""`pluralign.urls.redacted`: the one helper every refusal and log line that repeats a setting's value goes through
(session remote49)."""

from __future__ import annotations

import pytest

from pluralign.urls import redacted


@pytest.mark.parametrize("text, shown", [
    ("openai:https://user:s3cret@vllm:8000/v1", "openai:https://user:***@vllm:8000/v1"),
    ("got 'openai:https://user:p@ss@host/v1': it", "got 'openai:https://user:***@host/v1': it"),  # to the last '@'
    ("https://ghp_t0ken@github.com/o/r and s3://bucket/path", "https://***@github.com/o/r and s3://bucket/path"),
    ("https://h/v1?model=m&api_key=k3y&X-Amz-Signature=abc#f", "https://h/v1?model=m&api_key=***&X-Amz-Signature=***#f"),
    ("http://127.0.0.1:8000/v1, mail a@b.example", "http://127.0.0.1:8000/v1, mail a@b.example"),  # nothing to hide
])
def test_credentials_of_urls_are_hidden(text, shown):
    assert redacted(text) == shown


def test_secrets_given_are_hidden_wherever_they_appear():
    assert redacted("key AKIAEXAMPLE1 with secret wJalrXUtn", ["AKIAEXAMPLE1", "wJalrXUtn", None, "ab"]) == "key *** with secret ***"
