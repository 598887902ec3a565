"""Issue 16's second hostile pass, over HTTP on the real app: nothing of a deleted user comes back
from a chat that was generating while the DELETE ran, an interrupted DELETE leaves no half-deleted
user whose old history resurfaces, a DELETE counts the changes an older row held, and an
enormous unknown feature name is not echoed back whole."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_replicas, start_service


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


def stated_versions(c, user: str) -> tuple[int, list[int]]:
    page = c.get(f"/v1/users/{user}/stated-preferences", params={"limit": 100}).json()
    return page["version"], [h["version"] for h in page["history"]]


def test_a_delete_interrupted_between_tables_leaves_no_old_history_to_resurface(svc, monkeypatch):
    """A DELETE that stops part way (a crash, a disk error) must not leave the user's stated
    changes without their row: the next PATCH would start again at version 1 and the old versions
    1, 2, ... would come back beside the new ones. The row goes last, so the user is still there
    (whole) and a second DELETE finishes the job."""
    rt = svc.runtime
    with svc.client() as c:
        for d in ("more", "less", "more"):
            assert c.patch("/v1/users/halfgone/stated-preferences", json={"preferences": {"length": d}}).status_code == 200
        changes = rt.store.tables["stated_changes"]
        real = changes.delete
        monkeypatch.setattr(changes, "delete", lambda where: (_ for _ in ()).throw(OSError("disk gone")))
        assert c.delete("/v1/users/halfgone").status_code == 500
        monkeypatch.setattr(changes, "delete", real)
        r = c.patch("/v1/users/halfgone/stated-preferences", json={"preferences": {"list_items": "more"}})
        assert r.status_code == 200, r.text
        version, history = stated_versions(c, "halfgone")
        assert history == list(range(1, version + 1))  # dense, each version once: no old version beside a new one
        r = c.delete("/v1/users/halfgone")
        assert r.status_code == 200 and r.json()["deleted"]["stated_changes"] == version
        assert stated_versions(c, "halfgone") == (0, []) and rt.store.stated_changes("acme", "halfgone") == []


def test_delete_counts_the_changes_an_older_row_held(svc):
    """A format 1 row (written by the release before the changes table) holds its whole history;
    DELETE removes it with the row and reports those changes in `deleted.stated_changes`."""
    from pluralign.store import UserRecord
    from pluralign.user.stated import StatedChange, StatedPreferences

    now = time.time()
    history = [StatedChange(version=1, at=now, feature="contractions", direction="more"),
               StatedChange(version=2, at=now + 1, feature="contractions", direction=None)]
    legacy = StatedPreferences(format=1, version=2, preferences={}, history=history)
    svc.runtime.store.put_user(UserRecord(tenant="acme", user_id="old_carol", created_at=now, updated_at=now, stated=legacy.encode()))
    with svc.client() as c:
        assert stated_versions(c, "old_carol") == (2, [1, 2])
        r = c.delete("/v1/users/old_carol")
        assert r.status_code == 200 and r.json()["deleted"]["users"] == 1
        assert r.json()["deleted"]["stated_changes"] == 2


def test_an_enormous_unknown_feature_name_is_named_but_not_echoed_whole(svc):
    name = "k" * 900_000  # most of the 1 MB body limit; the error used to carry it twice (1.8 MB)
    with svc.client() as c:
        r = c.patch("/v1/users/echo/stated-preferences", json={"preferences": {name: "more"}})
        assert r.status_code == 400, r.text[:200]
        assert len(r.content) < 2_000
        assert field_named(r).startswith("preferences.kkkk") and field_named(r).endswith("...")
        short = c.patch("/v1/users/echo/stated-preferences", json={"preferences": {"lenght": "more"}})
        assert short.status_code == 400 and field_named(short) == "preferences.lenght"
    assert svc.runtime.store.get_user("acme", "echo") is None


def test_a_replica_whose_row_is_fresher_than_its_changes_table_still_pages_every_version(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Two services on one store, reads a minute stale. Replica b's refit re-reads the users row
    (fresh: version 3) while b's view of the changes table is still the one before a's PATCHes:
    b's GET and export must still hold versions 1, 2 and 3, not the row's latest version alone."""
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm)
    with first, second, a.client() as ca, b.client() as cb:
        assert cb.get("/v1/users/drifter/stated-preferences").json()["version"] == 0  # b has read both tables
        for d in ("more", "less", "more"):
            assert ca.patch("/v1/users/drifter/stated-preferences", json={"preferences": {"length": d}}).status_code == 200
        r = cb.post("/v1/feedback", json={"type": "comparison", "user": "drifter", "prompt": "Tip?", "chosen": "Short.",
                                          "rejected": "A long answer with many more words in it."})
        assert r.status_code == 201, r.text
        b.runtime.wait_for_background()  # b's refit read the row afresh
        page = cb.get("/v1/users/drifter/stated-preferences", params={"limit": 100}).json()
        assert page["version"] == 3
        assert [h["version"] for h in page["history"]] == [1, 2, 3] and page["next_before"] is None
        lines = [json.loads(x) for x in cb.get("/v1/users/drifter/export").text.splitlines()]
        stated = next(x for x in lines if x["type"] == "user")["stated"]
        assert [h["version"] for h in stated["history"]] == [1, 2, 3]


def test_a_user_with_only_stated_preferences_exports_an_empty_preference_file(svc):
    """A user who only stated preferences exists (their profile is there): the preference-file
    export is empty, not a 404 saying there is no such user; an unknown user is still a 404."""
    with svc.client() as c:
        assert c.patch("/v1/users/sayer/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
        assert c.get("/v1/users/sayer").status_code == 200
        r = c.get("/v1/users/sayer/export", params={"format": "preferences"})
        assert r.status_code == 200 and r.text == "", r.text
        assert c.get("/v1/users/nobody_here/export", params={"format": "preferences"}).status_code == 404


def test_registering_an_adapter_while_a_patch_lands_keeps_the_patched_version(svc, tiny_generator_dir, tmp_path, monkeypatch):
    """register_adapter read the user's row, then wrote it back with the adapter: a stated-preference
    PATCH landing in between was rolled back in the row (version 2 -> 1), and the next PATCH took
    version 2 a second time. The read-then-write is under the user's lock now."""

    from service.users import services
    from tests.service.test_service_adapters import random_adapter

    rt = svc.runtime
    folder = random_adapter(tiny_generator_dir, tmp_path / "lora", rt.generator.model_id, "user", 3)
    real = services.user_weights
    with svc.client() as c:
        assert c.patch("/v1/users/tuner/stated-preferences", json={"preferences": {"length": "less"}}).json()["version"] == 1
        patched = []

        def racing(*a, **k):  # the row is read; a PATCH of the user arrives before the write
            weights = real(*a, **k)
            if not patched:
                patched.append(threading.Thread(target=lambda: c.patch("/v1/users/tuner/stated-preferences",
                                                                       json={"preferences": {"list_items": "more"}})))
                patched[0].start()
                patched[0].join(1.5)  # done by now unless it waits for the user's lock
            return weights

        monkeypatch.setattr(services, "user_weights", racing)
        services.register_adapter(rt, "acme", "tuner", folder)
        patched[0].join(30)
        monkeypatch.setattr(services, "user_weights", real)
        page = c.get("/v1/users/tuner/stated-preferences", params={"limit": 100}).json()
        assert page["version"] == 2 and page["preferences"] == {"length": "less", "list_items": "more"}
        assert rt.store.get_user("acme", "tuner").adapter is not None
        r = c.patch("/v1/users/tuner/stated-preferences", json={"preferences": {"exclamations": "less"}})
        assert r.json()["version"] == 3
        assert sorted(x["version"] for x in rt.store.stated_changes("acme", "tuner")) == [1, 2, 3]
