"""Session stall34: one tenant's import must not stall another tenant's requests.

Before: `POST /v1/users/{id}/import` read, checked and built its rows on the event loop (a 1 MB body:
~8,000 lines, 0.2-0.5 s of Python each), so while tenant B imported large files every other tenant's
request waited for the loop; `benchmarks/tenant_stall.py --b-load import` measured tenant A's feedback
at p99 99 ms quiet and 3.6 s beside two importers of B (BENCHMARKS.md, "One tenant never stalls
another")."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

import pluralign.data.io
from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("stall34-import"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def test_a_tenants_import_held_while_reading_its_lines_stalls_no_other_tenant(svc, monkeypatch):
    """B's import is held inside its reading of the lines (an injected Event, not a timing); A's
    feedback and reads are answered meanwhile, and B's import is stored once released. Before: A's
    feedback got no answer until the import was released (httpx.ReadTimeout)."""
    reading, release = threading.Event(), threading.Event()
    read_lines = pluralign.data.io.read_preference_lines

    def held(lines, **kwargs):
        if any(b"held-import" in line for line in lines):
            reading.set()
            assert release.wait(60), "never released"
        return read_lines(lines, **kwargs)

    monkeypatch.setattr(pluralign.data.io, "read_preference_lines", held)
    body = "\n".join(json.dumps({"prompt": f"held-import {i}?", "chosen": f"Yes {i}.", "rejected": "No."}) for i in range(3))
    answer: dict[str, httpx.Response] = {}
    with svc.client("acme") as acme, svc.client("globex") as globex:
        importing = threading.Thread(target=lambda: answer.update(r=globex.post("/v1/users/gil/import", content=body)), daemon=True)
        importing.start()
        assert reading.wait(60), "the import never reached its lines"
        try:
            fb = acme.post("/v1/feedback", json={"type": "comparison", "user": "ann", "prompt": "Tea?", "chosen": "Yes.",
                                                 "rejected": "No."}, timeout=10)  # before: httpx.ReadTimeout
            assert fb.status_code == 201, fb.text
            page = acme.get("/v1/users/ann/preferences", timeout=10)
            assert page.status_code == 200 and page.json()["total"] == 1
            assert "r" not in answer  # B's import still held meanwhile
        finally:
            release.set()
        importing.join(60)
        assert answer["r"].status_code == 201, answer["r"].text
        assert len(answer["r"].json()["stored"]) == 3
        assert globex.get("/v1/users/gil/preferences").json()["total"] == 3


def test_an_import_read_off_the_event_loop_still_names_the_bad_line(svc):
    """The errors an import's reading raises reach the client as before: a 400 naming the line and field."""
    body = "\n".join([json.dumps({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}), "{not json",
                      json.dumps({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": "someone"})])
    with svc.client("acme") as acme:
        r = acme.post("/v1/users/bo/import", content=body)
        assert r.status_code == 400 and field_named(r) == "line 2", r.text
        r = acme.post("/v1/users/bo/import", content="\n".join([body.splitlines()[0], body.splitlines()[2]]))
        assert r.status_code == 400 and field_named(r) == "line 2.user_id", r.text
        r = acme.post("/v1/users/bo/import", content=json.dumps({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.",
                                                                "source": "s" * 500}))
        assert r.status_code == 400 and field_named(r) == "line 1.source", r.text
        assert acme.get("/v1/users/bo/preferences").json()["total"] == 0
