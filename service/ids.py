"""Identifiers that come from clients: user ids and response ids, checked before any query."""

from __future__ import annotations

import re

from pluralign.data.record import RESERVED_TENANTS, TENANT_RULE, USER_ID, USER_ID_RULE, tenant_problem  # noqa: F401 (the service's names for them)
from service.errors import bad_request

RESPONSE_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")
# the same as a wire schema's pattern (msgspec searches with `re`, whose `$` also matches before a final newline)
RESPONSE_ID_PATTERN = rf"^{RESPONSE_ID.pattern}$(?!\n)"
# what a pattern of the wire schemas means, said to a client instead of the regex (service.strict)
PATTERN_WORDS = {
    RESPONSE_ID.pattern: "the `id` of a chat completion (`chatcmpl-` and 32 hex digits, the reply's `pluralign.response_id`)",
}


def check_user_id(value: str, field: str = "user") -> str:
    if not USER_ID.fullmatch(value):
        raise bad_request(field, USER_ID_RULE)
    return value


def check_response_id(value: str, field: str = "response_id") -> str:
    if not RESPONSE_ID.fullmatch(value):
        raise bad_request(field, "a response id looks like `chatcmpl-` followed by 32 hex digits")
    return value
