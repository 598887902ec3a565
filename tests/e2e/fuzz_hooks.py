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


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # the coverage phase calls no map_query, and leaves `wait` out (its default is 60): with the ids the schema
    # declares, `?group_by=0` reaches the audit job and waits for it, past schemathesis' 10 s request timeout
    if case.path.endswith("/audits/fairness") and (case.query is None or hasattr(case.query, "get")):
        wait = (case.query or {}).get("wait", 60)
        if isinstance(wait, int | float) and not isinstance(wait, bool):
            case.query = {**dict(case.query or {}), "wait": min(wait, 5)}


# the import's body is JSON lines (`application/x-ndjson`, a string in the schema): sent as its text
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
