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
    # review remote49: a password (or a token given as the user) holding a character a URL's userinfo cannot hold
    # unencoded (base64's `/`, a `#`, `?`, a quote) was printed whole: the very URLs `urlsplit` misreads, so refused
    ("got 'openai:https://user:ab/cd+ef==@vllm/v1': its", "got 'openai:https://user:***@vllm/v1': its"),
    ("got 'openai:https://user:pa#ss@vllm/v1': its", "got 'openai:https://user:***@vllm/v1': its"),
    ("got 'https://user:pa?ss@vllm/v1'", "got 'https://user:***@vllm/v1'"),
    ("got \"openai:https://user:it's@vllm/v1\": its", "got \"openai:https://user:***@vllm/v1\": its"),
    ("https://ab/cd+ef==@vllm/v1 down", "https://***@vllm/v1 down"),
])
def test_credentials_of_urls_are_hidden(text, shown):
    assert redacted(text) == shown


def test_a_refused_url_does_not_echo_its_password_as_a_port():
    """review remote49: `https://user:ab/cd@host/v1` (a password's `/` not written %2F) reads as host `user`, port `ab`:
    the refusal said "Port could not be cast to integer value as 'ab'", the password's start."""
    from pluralign.urls import base_url_problem

    problem = base_url_problem("https://user:ab/cd+ef==@vllm/v1")
    assert problem is not None and "ab" not in problem and "%2F" in problem, problem
    assert base_url_problem("https://vllm:80x/v1") == "Port could not be cast to integer value as '80x'"  # no '@': as before


def test_secrets_given_are_hidden_wherever_they_appear():
    assert redacted("key AKIAEXAMPLE1 with secret wJalrXUtn", ["AKIAEXAMPLE1", "wJalrXUtn", None, "ab"]) == "key *** with secret ***"


@pytest.mark.parametrize("text", ["a://" * 16_000, "a." * 32_000, "http://" + "a:" * 32_000 + " x@y"])
def test_a_long_text_is_redacted_in_linear_time(text):
    """review remote49: `redacted` reads every CLI refusal and a remote server's error words, which may repeat what a
    user sent (an embeddings server's error body). Its regular expression backtracked over the rest of the text at each
    possible scheme: 64 KB of `a.` took 11 s (remote49's, at load ~11), of `a://` 12-20 s (the review's first reading of a
    userinfo to the last "@"). Each takes milliseconds now: plain scans, no regular expression for the userinfo."""
    import time

    started = time.perf_counter()
    assert redacted(text) == text
    assert time.perf_counter() - started < 1.0
