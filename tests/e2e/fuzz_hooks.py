"""Schemathesis hooks for the fuzz run: half the generated chat requests name a served model, so
generation is reached rather than every request stopping at `unknown model`."""

import random

import schemathesis


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict) and "messages" in body and random.random() < 0.5:
        body["model"] = "pluralign"
    return body
