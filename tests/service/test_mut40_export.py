"""A user's preference file over real HTTP: what survived mutation testing (session 40)."""

from __future__ import annotations

import json

from tests.service.tiny import start_service


def test_a_tie_comes_back_from_the_preference_export_as_a_tie(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """`GET .../export?format=preferences` writes each comparison as it was given: a tie stays a tie (its
    two answers equal to the user), so the file imported elsewhere (here another tenant) does not turn it into a strict win."""
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    with server, svc.client("acme") as c, svc.client("globex") as other:
        for tie, topic in ((True, "tea"), (False, "rain")):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "tess", "prompt": f"Tips on {topic}?",
                                             "chosen": f"Short {topic} tip.", "rejected": f"Long {topic} answer.", "tie": tie})
            assert r.status_code == 201, r.text
        r = c.get("/v1/users/tess/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        rows = {row["prompt"]: row for row in map(json.loads, r.text.splitlines())}
        assert (rows["Tips on tea?"]["tie"], rows["Tips on rain?"]["tie"]) == (True, False)
        r = other.post("/v1/users/tess/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        page = other.get("/v1/users/tess/preferences").json()
        assert sorted((p["prompt"], p["tie"]) for p in page["data"]) == [("Tips on rain?", False), ("Tips on tea?", True)]
