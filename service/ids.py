"""Identifiers that come from clients: user ids and response ids, checked before any query."""

from __future__ import annotations

import re

from pluralign.data.record import USER_ID, USER_ID_RULE
from service.errors import bad_request

RESPONSE_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")
# the same as a wire schema's pattern (msgspec searches with `re`, whose `$` also matches before a final newline)
RESPONSE_ID_PATTERN = rf"^{RESPONSE_ID.pattern}$(?!\n)"
# what a pattern of the wire schemas means, said to a client instead of the regex (service.strict)
PATTERN_WORDS = {
    RESPONSE_ID.pattern: "the `id` of a chat completion (`chatcmpl-` and 32 hex digits, the reply's `pluralign.response_id`)",
}


# tenant names (from API keys, chosen by operators) name folders of the admin area's job data
# (`jobs/data/<tenant>/`), beside its population snapshots (`jobs/data/population/`): an id, not a path
RESERVED_TENANTS = frozenset({"population"})


def tenant_problem(value: str) -> str | None:
    """Why `value` cannot be a tenant name (None: it can): 1-128 characters of a user id's set, not
    `RESERVED_TENANTS`."""
    if not USER_ID.fullmatch(value):
        return "a tenant name is 1-128 characters: letters, digits and . _ @ : + - (starting with a letter or digit)"
    if value in RESERVED_TENANTS:
        return f"{value!r} is reserved (the admin area's population snapshots are stored under that name)"
    return None


def check_user_id(value: str, field: str = "user") -> str:
    if not USER_ID.fullmatch(value):
        raise bad_request(field, USER_ID_RULE)
    return value


def check_response_id(value: str, field: str = "response_id") -> str:
    if not RESPONSE_ID.fullmatch(value):
        raise bad_request(field, "a response id looks like `chatcmpl-` followed by 32 hex digits")
    return value
