"""Issue 16's second hostile pass, over HTTP on the real app: nothing of a deleted user comes back
from a chat that was generating while the DELETE ran, an interrupted DELETE leaves no half-deleted
user whose old history resurfaces, a DELETE counts the changes an older row held, and an
enormous unknown feature name is not echoed back whole."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    service.data = data
    with server:
        yield service


def files_holding(folder, *needles: str) -> list[str]:
    """Files under `folder` whose bytes hold any of `needles` (grep -a: LanceDB's data files too)."""
    args = [a for n in needles for a in ("-e", n)]
    return subprocess.run(["grep", "-rla", *args, str(folder)], capture_output=True, text=True).stdout.split()


def test_a_chat_generating_while_its_user_is_deleted_stores_nothing_of_them(svc, monkeypatch):
    rt = svc.runtime
    entered, release = threading.Event(), threading.Event()
    for name in ("generate", "generate_styled"):
        real = getattr(rt.generator, name)

        def held(*a, _real=real, **k):
            entered.set()
            assert release.wait(60)
            return _real(*a, **k)

        monkeypatch.setattr(rt.generator, name, held)
    marker = "zqmidchat"
    with svc.client() as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "midchat", "prompt": f"Trip {marker}?",
                                         "chosen": "A short trip.", "rejected": "A very long trip with many stops."})
        assert r.status_code == 201, r.text
        out = {}
        chat = threading.Thread(target=lambda: out.setdefault("r", c.post("/v1/chat/completions", json={
            "model": "pluralign", "user": "midchat", "n": 2,
            "messages": [{"role": "user", "content": f"Plan my {marker} weekend."}]})))
        chat.start()
        assert entered.wait(60)  # the chat has read the user's history and is generating
        deleted = c.delete("/v1/users/midchat")
        assert deleted.status_code == 200, deleted.text
        release.set()
        chat.join(60)
        assert out["r"].status_code == 200, out["r"].text  # the answer still goes out
        response_id = out["r"].json()["id"]
        rt.wait_for_background()
        assert c.get("/v1/users/midchat").status_code == 404
        assert c.get("/v1/users/midchat/export").status_code == 404
        assert rt.store.count_interactions("acme", "midchat") == 0
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": response_id, "chosen_index": 1})
        assert r.status_code == 404, r.text
    assert files_holding(svc.data, marker, "midchat") == []
    # a chat planned after the DELETE is the user coming back: it is stored as usual
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "midchat", "n": 2,
                                                 "messages": [{"role": "user", "content": "Hello again."}]})
        assert r.status_code == 200 and rt.store.count_interactions("acme", "midchat") == 1
