"""Identifiers that come from clients: user ids and response ids, checked before any query."""

from __future__ import annotations

import re

from service.errors import bad_request

# checked with `fullmatch`: a `$` also matches before a final newline, so "alice\n" was a user id
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+\-]{0,127}")
RESPONSE_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")


def check_user_id(value: str, field: str = "user") -> str:
    if not USER_ID.fullmatch(value):
        raise bad_request(field, "a user id is 1-128 characters: letters, digits and . _ @ : + - (starting with a letter or digit)")
    return value


def check_response_id(value: str, field: str = "response_id") -> str:
    if not RESPONSE_ID.fullmatch(value):
        raise bad_request(field, "a response id looks like `chatcmpl-` followed by 32 hex digits")
    return value
