"""Schemathesis hooks for the fuzz run: half the generated chat requests name a served model, so
generation is reached rather than every request stopping at `unknown model`."""

import random

import schemathesis


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict) and "messages" in body and random.random() < 0.5:
        body["model"] = "pluralign"
    return body


@schemathesis.hook
def map_query(ctx, query):
    # the audit route waits up to `wait` seconds for its job by design; a generated wait near its
    # bound (600) outlasts schemathesis' own request timeout, which is a client timeout, not a finding
    if isinstance(query, dict) and isinstance(query.get("wait"), int | float) and not isinstance(query["wait"], bool):
        query["wait"] = min(query["wait"], 5)
    return query
