"""A read of a user whose large import is still being stored answers at once: 503 with Retry-After for
the reads that must see every row (profile, preferences, export, scores), a chat served from what is
stored. Before, each such read embedded the whole backlog inside the request (14,000 imported rows:
a profile read took ~5 minutes on a busy 2-core machine)."""

from __future__ import annotations

import json
import time

from service.users.services import READ_INLINE_ROWS, READ_RETRY_AFTER


def _import(c, user: str, rows: int):
    """`rows` rows of ten distinct texts in all: a backlog counts rows, and the worker embeds a batch's distinct
    texts once, so the test's wait for it is short (600 distinct rows, 1,800 texts: ~10 s of it)."""
    body = "\n".join(json.dumps({"prompt": f"Q{i % 5} {user}?", "chosen": f"Yes {i % 3}.", "rejected": f"No {i % 2}."})
                      for i in range(rows))
    r = c.post(f"/v1/users/{user}/import", content=body.encode())
    assert r.status_code == 201, r.text


def test_reads_during_a_large_imports_backlog_answer_at_once(serve):
    _, server, service = serve()
    rows = READ_INLINE_ROWS + 100
    with server, service.client("acme") as c:
        with service.runtime.ingest.paused():  # the worker is busy elsewhere: the import's rows wait in the log
            _import(c, "big", rows)
            _import(c, "small", 3)
            for path in ("/v1/users/big", "/v1/users/big/preferences", "/v1/users/big/export"):
                r = c.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text[:200])
                assert r.headers["retry-after"] == str(READ_RETRY_AFTER)
                assert f"{rows} rows" in r.json()["error"]["message"]
            scored = c.post("/v1/rewards/score", json={"user": "big", "prompt": "Tea?", "responses": ["Yes.", "No."]})
            assert scored.status_code == 503, scored.text
            # a chat is served from what is stored (nothing yet) rather than waiting for the backlog
            chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "big",
                                                        "messages": [{"role": "user", "content": "Tea?"}]})
            assert chat.status_code == 200, chat.text
            # a user with a few rows pending still reads them at once (moved inside the request)
            small = c.get("/v1/users/small")
            assert small.status_code == 200 and small.json()["counts"]["preferences"] == 3, small.text
        # once the worker has moved the backlog, every row is read
        deadline = time.monotonic() + 300
        while (r := c.get("/v1/users/big")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.status_code == 200 and r.json()["counts"]["preferences"] == rows, r.text
        assert c.get("/v1/users/big/preferences", params={"limit": 1}).json()["total"] == rows
