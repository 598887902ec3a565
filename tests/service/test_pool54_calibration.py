"""A tenant's stored calibration pool (session pool54, issue 16): `PUT/GET/DELETE /v1/calibration-pool`, asked by
`POST /v1/users/{id}/next-comparison` with `{}` in place of other users' stored comparisons, and
`PLURALIGN_NEXT_COMPARISON_POOL=calibration`, under which `{}` never asks another user's texts. Over HTTP with the
real app and a real LanceDB store in a temp folder. Until then `{}` asked a new user (bob) about alice's stored
prompt and answers, and a tenant could keep no pool of its own."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.calibration.pools import pool_path
from tests.service.tiny import start_service

MARKER = "alicesecret54"
APP_ORIGIN = "https://app.example"  # a browser app's page allowed to call the service (`cors_origins`)
TOPICS = ["tea", "rain", "maps", "bread"]
POOL_A = [{"prompt": "Suggest a weekend plan.", "answers": ["Hike on Saturday.", "- Saturday: hike\n- Sunday: rest",
                                                           "Saturday: a long hike in the hills. Sunday: brunch, then a film."]},
          {"prompt": "How do I boil an egg?", "answers": ["Boil it 7 minutes.", "Put the egg in boiling water for seven "
                                                          "minutes, then cool it in cold water so it peels easily."]}]
POOL_B = [{"prompt": "Name a good first programming language.", "answers": ["Python.", "Python: its syntax reads like "
                                                                            "English and its libraries cover most needs."]}]


def texts_of(pool: list[dict]) -> set[str]:
    return {item["prompt"] for item in pool} | {a for item in pool for a in item["answers"]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    deletion_sweep_s=3600, cors_origins=(APP_ORIGIN,))
    with server, service.client("acme") as acme:
        for topic in TOPICS:
            r = acme.post("/v1/feedback", json={"type": "comparison", "user": "alice", "prompt": f"Tips on {topic}? {MARKER}",
                                                "chosen": f"Short {topic} tip {MARKER}",
                                                "rejected": f"A long rambling answer about {topic} {MARKER}, on and on."})
            assert r.status_code == 201, r.text
        yield service


@pytest.fixture
def setting(svc, monkeypatch):
    """Sets one of the running service's settings for the test."""
    return lambda **changes: monkeypatch.setattr(svc.runtime, "settings", msgspec.structs.replace(svc.runtime.settings, **changes))


def ask_all(client, user: str) -> list[dict]:
    """next-comparison with `{}` for `user`, each pair answered (the first answer chosen), until a 400: the answers."""
    asked = []
    for _ in range(10):
        r = client.post(f"/v1/users/{user}/next-comparison", json={})
        if r.status_code == 400:
            asked.append(r.json())
            return asked
        assert r.status_code == 200, r.text
        asked.append(r.json())
        one = r.json()
        fb = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": one["prompt"],
                                               "chosen": one["answers"][0], "rejected": one["answers"][1]})
        assert fb.status_code == 201, fb.text
    raise AssertionError(f"still asking after 10 questions: {asked}")


def test_a_new_user_is_asked_only_the_stored_calibration_pool_never_another_users_texts(svc):
    with svc.client("acme") as acme:
        r = acme.post("/v1/users/bob/next-comparison", json={})  # none stored: alice's pairs, as documented
        assert r.status_code == 200 and r.json()["pool"] == "stored" and MARKER in r.text, r.text
        r = acme.put("/v1/calibration-pool", json={"pool": POOL_A})
        assert r.status_code == 200, r.text
        assert (r.json()["items"], r.json()["answers"]) == (2, 5), r.json()
        got = acme.get("/v1/calibration-pool")
        assert got.status_code == 200, got.text
        assert got.json()["pool"] == POOL_A and got.json()["format"] == 1, got.json()
        asked = ask_all(acme, "bob")
        questions, last = asked[:-1], asked[-1]
        assert len(questions) == 4, questions  # 3 pairs of the first item's 3 answers, 1 of the second's
        for one in questions:
            assert one["pool"] == "calibration" and {one["prompt"], *one["answers"]} <= texts_of(POOL_A), one
        assert len({(q["prompt"], frozenset(q["answers"])) for q in questions}) == 4  # each question once
        assert last["error"]["param"] == "pool" and "calibration pool already" in last["error"]["message"], last
        assert all(MARKER not in str(one) for one in asked), asked
        # a request's own pool still wins
        r = acme.post("/v1/users/bob/next-comparison", json={"pool": POOL_B})
        assert r.status_code == 200 and r.json()["pool"] == "supplied" and r.json()["prompt"] == POOL_B[0]["prompt"], r.text
        # a user's export holds their own answers only: the tenant's pool is not a user's data
        export = acme.get("/v1/users/alice/export")
        assert export.status_code == 200 and not any(item["prompt"] in export.text for item in POOL_A), export.text


def test_replacing_the_pool_changes_what_is_asked_and_a_delete_removes_it(svc):
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200
        r = acme.post("/v1/users/carol/next-comparison", json={})
        assert r.status_code == 200 and r.json()["prompt"] in {i["prompt"] for i in POOL_A}, r.text
        vectors = svc.runtime.calibration_vectors
        embedded = vectors.embedded
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        assert vectors.embedded == embedded + len(texts_of(POOL_B))  # embedded by the PUT
        r = acme.post("/v1/users/carol/next-comparison", json={})
        assert r.status_code == 200, r.text
        assert r.json()["pool"] == "calibration" and r.json()["prompt"] == POOL_B[0]["prompt"], r.text
        assert r.json()["pairs"] == 1, r.json()
        assert vectors.embedded == embedded + len(texts_of(POOL_B))  # the question read the PUT's vectors
        embedded = vectors.embedded
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200
        assert vectors.embedded == embedded + len(texts_of(POOL_A))  # the pool before's vectors were dropped
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        assert acme.get("/v1/calibration-pool").json()["pool"] == POOL_B
        r = acme.delete("/v1/calibration-pool")
        assert r.status_code == 204, r.text
        assert not pool_path(svc.runtime.settings.calibration_pools_path, "acme").exists()
        assert acme.get("/v1/calibration-pool").status_code == 404
        assert acme.delete("/v1/calibration-pool").status_code == 404
        r = acme.post("/v1/users/carol/next-comparison", json={})  # none stored again: the tenant's stored pairs
        assert r.status_code == 200 and r.json()["pool"] == "stored", r.text


def test_with_the_opt_out_no_user_is_asked_another_users_texts(svc, setting):
    setting(next_comparison_pool="calibration")
    with svc.client("acme") as acme:
        assert acme.get("/v1/calibration-pool").status_code == 404
        r = acme.post("/v1/users/dave/next-comparison", json={})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "pool" and "PUT /v1/calibration-pool" in error["message"], error
        assert MARKER not in r.text
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        r = acme.post("/v1/users/dave/next-comparison", json={})
        assert r.status_code == 200 and r.json()["pool"] == "calibration", r.text
        assert acme.delete("/v1/calibration-pool").status_code == 204


def test_another_tenant_neither_reads_nor_is_asked_the_pool(svc):
    with svc.client("acme") as acme, svc.client("globex") as globex:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200
        assert globex.get("/v1/calibration-pool").status_code == 404
        assert globex.delete("/v1/calibration-pool").status_code == 404
        r = globex.post("/v1/users/bob/next-comparison", json={})  # globex stored nothing: nothing to ask
        assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text
        assert not texts_of(POOL_A) & set(r.text.split('"')), r.text
        assert globex.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        r = globex.post("/v1/users/bob/next-comparison", json={})
        assert r.status_code == 200 and r.json()["prompt"] == POOL_B[0]["prompt"], r.text
        assert acme.get("/v1/calibration-pool").json()["pool"] == POOL_A  # each its own
        assert acme.delete("/v1/calibration-pool").status_code == 204
        assert globex.get("/v1/calibration-pool").json()["pool"] == POOL_B


def test_a_refused_pool_names_the_field_and_keeps_the_pool_before(svc):
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        before = acme.get("/v1/calibration-pool").json()
        cases = [
            ({"pool": [{"prompt": "Hi?", "answers": ["Hello.", " \u200b"]}]}, "pool[0].answers[1]"),
            ({"pool": [POOL_B[0], {"prompt": "Hi?", "answers": ["Hello."]}]}, "pool[1].answers"),
            ({"pool": [{"prompt": "", "answers": ["a", "b"]}]}, "pool[0].prompt"),
            ({"pool": []}, "pool"),
            ({"pool": [{"prompt": f"Q{i}?", "answers": [f"a{i}", f"b{i}", f"c{i}"]} for i in range(22)]}, "pool"),  # 66 answers
            ({"pool": POOL_B, "extra": 1}, "extra"),
            ({}, "pool"),
        ]
        for body, field in cases:
            r = acme.put("/v1/calibration-pool", json=body)
            assert r.status_code == 400 and r.json()["error"]["param"] == field, (body, r.text)
        r = acme.put("/v1/calibration-pool", json={"pool": [{"prompt": "Q?", "answers": ["a" * 20_000] * 8}] * 8})
        assert r.status_code == 413, r.status_code
        assert acme.get("/v1/calibration-pool").json() == before


def test_a_write_that_fails_part_way_keeps_the_pool_before_whole(svc, monkeypatch):
    """A PUT whose write fails before its rename (a full disk: ENOSPC at the fsync) answers 507 and leaves the pool
    before as it was, and no temp file beside it."""
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        before = acme.get("/v1/calibration-pool").json()
        folder = pool_path(svc.runtime.settings.calibration_pools_path, "acme").parent
        real_fsync = os.fsync

        def full(fd):
            if os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == str(folder):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full)
        r = acme.put("/v1/calibration-pool", json={"pool": POOL_A})
        monkeypatch.undo()
        assert r.status_code == 507, r.text
        assert acme.get("/v1/calibration-pool").json() == before
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temp file left
        # a process killed between its write and its rename leaves its temp file (the new pool's texts): a DELETE
        # of the pool removes it too
        killed = folder / f".{pool_path(folder, 'acme').name}.k1ll3d"
        killed.write_bytes(b'{"format": 1, "pool": [{"prompt": "half')
        assert acme.delete("/v1/calibration-pool").status_code == 204
        assert not killed.exists()
        assert acme.get("/v1/calibration-pool").status_code == 404


def test_the_tenants_removal_removes_its_pool(svc):
    from tests.service.test_tenant48_removal import wait_removed

    key = svc.runtime.keys.issue("initech54")
    svc.keys["initech54"] = key
    with svc.client("initech54") as initech, svc.client("admin") as admin:
        assert initech.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200
        path = pool_path(svc.runtime.settings.calibration_pools_path, "initech54")
        assert path.exists()
        r = admin.post("/admin/tenants/initech54/removal")
        assert r.status_code == 202, r.text
        assert wait_removed(admin, "initech54", timeout=60)["counts"] == {"calibration_pools": 1}
    assert not path.exists()
    svc.keys["initech54"] = svc.runtime.keys.issue("initech54")  # the tenant back, with nothing of before
    with svc.client("initech54") as initech:
        assert initech.get("/v1/calibration-pool").status_code == 404


def test_the_setting_is_checked_at_start():
    from service.settings import Settings

    assert Settings.load({"PLURALIGN_NEXT_COMPARISON_POOL": "calibration"}).next_comparison_pool == "calibration"
    assert Settings.load({}).next_comparison_pool == "tenant"
    with pytest.raises(ValueError, match="`next_comparison_pool` must be `tenant` or `calibration`, got 'own'"):
        Settings.load({"PLURALIGN_NEXT_COMPARISON_POOL": "own"})


def test_a_browser_app_may_put_the_pool(svc):
    """The preflight of a PUT from an allowed origin lets it through: until pool54 no route took PUT, and CORS's
    `allow_methods` did not name it."""
    import httpx

    r = httpx.options(svc.url + "/v1/calibration-pool", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code in (200, 204), (r.status_code, r.text)
    assert "PUT" in {m.strip() for m in r.headers.get("access-control-allow-methods", "").split(",")}, r.headers


@pytest.mark.parametrize("damaged", [b'{"format": 1, "pool": [{"prompt": "cut', b'{"format": 1, "pool": [{"prompt": "b\xffo"}]}'],
                         ids=["cut short", "not UTF-8"])
def test_a_damaged_pool_is_never_read_as_none_and_replicas_refuse_a_put(svc, setting, damaged):
    """A pool file that cannot be read is an error (a 503 `storage_unavailable` naming the tenant's calibration pool, the
    file named in the log: a 500 `internal error` until session left56), never "no pool": `{}` would then ask alice's
    stored texts. With several replicas (each its own data folder) the PUT is a 409 naming `pool`. A byte that is not
    UTF-8 is such damage too (utf58: msgspec's UnicodeDecodeError was a 500 `internal error`)."""
    path = pool_path(svc.runtime.settings.calibration_pools_path, "acme")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(damaged)
    try:
        with svc.client("acme") as acme:
            r = acme.post("/v1/users/erin/next-comparison", json={})
            assert r.status_code == 503 and MARKER not in r.text, r.text
            assert r.json()["error"]["code"] == "storage_unavailable" and "calibration pool" in r.json()["error"]["message"], r.text
            assert acme.get("/v1/calibration-pool").status_code == 503
            path.write_bytes(b'{"format": 2, "pool": [], "updated_at": 1.0}')  # a later release's
            assert acme.get("/v1/calibration-pool").status_code == 503
            setting(replicas=2, store_uri=svc.runtime.settings.lancedb_uri)
            r = acme.put("/v1/calibration-pool", json={"pool": POOL_B})
            assert r.status_code == 409, r.text
            assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("pool", "per_replica"), r.json()
    finally:
        path.unlink(missing_ok=True)


def test_a_damaged_pools_ledger_is_a_503_naming_it_and_the_log_names_the_file(svc, caplog):
    """Session left56: the pools folder's `ledger` damaged (a cut write on a shared volume) made every tenant's PUT a
    500 `internal error`, saying nothing of what was wrong. Now a 503 `storage_unavailable` naming the calibration pools
    ledger, never its path (the folder is every tenant's), with Retry-After, and a log line naming the file for the
    operator; /health shows it; the pool before is kept, and the PUT stores once the ledger is mended."""
    from service.calibration.pools import LEDGER

    folder = svc.runtime.settings.calibration_pools_path
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200
        ledger = folder / LEDGER
        kept = ledger.read_bytes()
        ledger.write_bytes(b'{"format": 1, "vers')
        try:
            with caplog.at_level("ERROR", logger="pluralign.service"):
                r = acme.put("/v1/calibration-pool", json={"pool": POOL_B})
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "storage_unavailable" and "the calibration pools ledger cannot be read" in error["message"], error
            assert str(folder) not in r.text and r.headers.get("retry-after") == "60", (r.text, r.headers)
            assert any(str(ledger) in record.getMessage() for record in caplog.records), [rec.getMessage() for rec in caplog.records]
            health = svc.client("").get("/health").json()
            assert health["status"] == "degraded" and any(p["what"] == "the calibration pools ledger" for p in health["storage"]), health
            assert texts_of(acme.get("/v1/calibration-pool").json()["pool"]) == texts_of(POOL_A)  # the pool before, kept
        finally:
            ledger.write_bytes(kept)
            svc.runtime.store.problems.forget("the calibration pools ledger", "read")
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        assert acme.delete("/v1/calibration-pool").status_code == 204


def test_a_delete_sent_while_a_put_writes_waits_for_it(svc, monkeypatch):
    """A DELETE of the pool that arrives while a PUT is writing its temp file takes turns with it: the PUT is stored
    (200), then removed (204). Until review pool54 the DELETE's sweep of temp files a killed PUT left removed the live
    PUT's, whose rename then failed: a 500 (15 of 30 PUTs racing DELETEs on two loaded cores)."""
    import threading

    folder = pool_path(svc.runtime.settings.calibration_pools_path, "acme").parent
    real_fsync, deleted, senders = os.fsync, [], []

    with svc.client("acme") as acme, svc.client("acme") as other:
        def delete_meanwhile(fd):
            if os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == str(folder) and not senders:
                # sent while the PUT's temp file is written, not yet renamed
                senders.append(threading.Thread(target=lambda: deleted.append(other.delete("/v1/calibration-pool"))))
                senders[0].start()
                senders[0].join(0.5)  # answered at once before; now it waits for the PUT's turn to end
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", delete_meanwhile)
        r = acme.put("/v1/calibration-pool", json={"pool": POOL_B})
        monkeypatch.undo()
        senders[0].join(30)
        assert r.status_code == 200, r.text
        assert [d.status_code for d in deleted] == [204], [d.text for d in deleted]
        assert acme.get("/v1/calibration-pool").status_code == 404
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_shared_pools_folder_is_checked_at_start_and_taken_with_replicas(svc, setting, tmp_path):
    """PLURALIGN_CALIBRATION_POOLS_DIR (review pool54): a folder whose parent is not there (the shared volume not
    mounted) or a file stops the start naming the setting; with replicas and the setting, the PUT is stored there (a 409
    without it: the test above) and next-comparison's `{}` asks it. tests/service/test_reviewpool54_replicas.py (slow)
    asks it through a second replica."""
    from service.settings import Settings, check_calibration_pools_dir

    with pytest.raises(ValueError, match=r"PLURALIGN_CALIBRATION_POOLS_DIR \(setting calibration_pools_dir\) .*: no such folder as"):
        check_calibration_pools_dir(Settings(data_dir=str(tmp_path), calibration_pools_dir=str(tmp_path / "unmounted" / "pools")))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="a file, not a folder"):
        check_calibration_pools_dir(Settings(data_dir=str(tmp_path), calibration_pools_dir=str(tmp_path / "a-file")))
    check_calibration_pools_dir(Settings(data_dir=str(tmp_path), calibration_pools_dir=str(tmp_path / "pools")))  # made by a PUT
    shared = tmp_path / "pools"
    setting(replicas=2, store_uri=svc.runtime.settings.lancedb_uri, calibration_pools_dir=str(shared))
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        assert pool_path(shared, "acme").exists()
        assert not pool_path(svc.runtime.settings.own_calibration_pools_path, "acme").exists()
        r = acme.post("/v1/users/frank/next-comparison", json={})
        assert r.status_code == 200 and r.json()["pool"] == "calibration" and r.json()["prompt"] == POOL_B[0]["prompt"], r.text
        assert acme.delete("/v1/calibration-pool").status_code == 204
        assert not pool_path(shared, "acme").exists()


def test_a_prompt_whose_answers_read_the_same_is_refused_at_the_put(svc):
    """A stored item whose answers a person cannot tell apart (`Yes.` and `Yes.` + U+3164, or the NFC and NFD spellings
    of one answer) would never be asked: the PUT is a 400 naming `pool[i].answers`, the pool before kept. Until review
    pool54 it was stored (200), and with no other item every user's `{}` was then a 400 telling them to store the pool
    again."""
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_B}).status_code == 200
        before = acme.get("/v1/calibration-pool").json()
        # and (session spell62, stored before) a no-break space, two spaces, a ligature: docs/api.md "The same answer"
        for answers in (["Yes.", "Yes.\u3164"], ["Caf\u00e9.", "Cafe\u0301.", " Caf\u00e9."],
                        ["It is fine.", "It is\u00a0fine.", "It  is fine.", "It is \ufb01ne."]):
            r = acme.put("/v1/calibration-pool", json={"pool": [POOL_B[0], {"prompt": "Coffee?", "answers": answers}]})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "pool[1].answers" and "read as one answer" in error["message"], error
        assert acme.get("/v1/calibration-pool").json() == before
        # two answers of three that read the same leave two a person can tell apart: stored
        r = acme.put("/v1/calibration-pool", json={"pool": [{"prompt": "Coffee?", "answers": ["Yes.", "Yes.\u3164", "No."]}]})
        assert r.status_code == 200, r.text
        assert acme.delete("/v1/calibration-pool").status_code == 204


def test_a_pools_folder_in_a_replicas_own_data_folder_is_refused_at_start_with_replicas(tmp_path):
    """Review late54: with PLURALIGN_REPLICAS above 1, PLURALIGN_CALIBRATION_POOLS_DIR naming a folder in the replica's
    own data folder (the default's `<data_dir>/calibration-pools` spelt out, or one below it) shares nothing: before, the
    start took it and every PUT was stored (200, no `per_replica` 409) in the replica that took it alone, the others'
    `{}` asking other users' comparisons. Now the start stops naming the setting; alone, such a folder is taken."""
    from service.settings import Settings, check_calibration_pools_dir

    data = tmp_path / "data"
    data.mkdir()
    for inside in (data / "calibration-pools", data / "x" / ".." / "pools", data):
        with pytest.raises(ValueError, match=r"PLURALIGN_CALIBRATION_POOLS_DIR \(setting calibration_pools_dir\) .*own data folder"):
            check_calibration_pools_dir(Settings(data_dir=str(data), replicas=2, store_uri=str(tmp_path / "db"),
                                                 calibration_pools_dir=str(inside)))
    check_calibration_pools_dir(Settings(data_dir=str(data), calibration_pools_dir=str(data / "calibration-pools")))
    # a volume mounted in the data folder is shared (deploy/k8s/pluralign.yaml: data /var/lib/pluralign, the shared
    # volume at /var/lib/pluralign/shared): taken
    mounted = next((p for p in (Path("/dev/shm"), Path("/proc")) if os.path.ismount(p)), None)
    if mounted is not None:
        check_calibration_pools_dir(Settings(data_dir=str(mounted.parent), replicas=2, store_uri=str(tmp_path / "db"),
                                             calibration_pools_dir=str(mounted / "pools")))
    check_calibration_pools_dir(Settings(data_dir=str(data), replicas=2, store_uri=str(tmp_path / "db"),
                                         calibration_pools_dir=str(tmp_path / "shared-pools")))


def behind(seconds: float):
    """The `time` module as a replica whose clock runs `seconds` behind sees it (ahead for a negative `seconds`)."""
    import time
    from types import SimpleNamespace

    return SimpleNamespace(**{**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")},
                              "time": lambda: time.time() - seconds})


def test_a_later_put_replaces_the_pool_whatever_the_clock_of_the_replica_that_took_it(svc, monkeypatch):
    """Session calib55: two PUTs are ordered by the version each takes in the pools folder, not by the clocks of the
    replicas that took them. Before, a PUT taken by a replica whose clock ran a minute behind was answered 200 and
    dropped (the pool before had "arrived later"): GET showed the earlier pool; one whose clock ran ahead kept every
    later PUT from replacing it."""
    import service.auth

    with svc.client("acme") as acme:
        first = acme.put("/v1/calibration-pool", json={"pool": POOL_A})
        assert first.status_code == 200, first.text
        monkeypatch.setattr(service.auth, "time", behind(60))  # the next PUT taken by a replica a minute behind
        second = acme.put("/v1/calibration-pool", json={"pool": POOL_B})
        monkeypatch.undo()
        assert second.status_code == 200, second.text
        assert acme.get("/v1/calibration-pool").json()["pool"] == POOL_B  # before: POOL_A
        r = acme.post("/v1/users/gina/next-comparison", json={})
        assert r.status_code == 200 and r.json()["prompt"] == POOL_B[0]["prompt"], r.text
        monkeypatch.setattr(service.auth, "time", behind(-60))  # one a minute ahead, then one on time
        assert acme.put("/v1/calibration-pool", json={"pool": POOL_A}).status_code == 200
        monkeypatch.undo()
        last = acme.put("/v1/calibration-pool", json={"pool": POOL_B})
        assert last.status_code == 200, last.text
        got = acme.get("/v1/calibration-pool").json()
        assert got["pool"] == POOL_B, got  # before: POOL_A
        assert first.json()["version"] < second.json()["version"] < last.json()["version"] == got["version"]
        assert acme.delete("/v1/calibration-pool").status_code == 204


def test_a_replica_that_did_not_take_the_put_reads_the_pools_vectors_from_the_folder(svc, minilm, monkeypatch):
    """Session calib55: the pool's vectors are stored beside it (`<sha256 of the tenant>.vectors`), so a replica that
    did not take the PUT (here: this one after a user's DELETE dropped the tenant's vectors kept in memory, as a
    restart or another replica holds none) embeds no text of it for `{}`. Before, that request embedded every text
    of the pool (1-3 s for 64 items of MiniLM on two cores)."""
    pool = [{"prompt": f"Question {i} about tea?", "answers": [f"Short answer {i}.", f"A longer answer {i}, with detail."]}
            for i in range(8)]
    encoded = []  # the pool's texts embedded (the ingest worker may embed other texts meanwhile)
    real_encode = type(minilm).encode
    monkeypatch.setattr(type(minilm), "encode", lambda self, texts, *a, **k: encoded.extend(
        t for t in texts if t in texts_of(pool)) or real_encode(self, texts, *a, **k))
    with svc.client("acme") as acme:
        assert acme.put("/v1/calibration-pool", json={"pool": pool}).status_code == 200
        assert len(encoded) == len(texts_of(pool))  # the PUT embeds each text once
        folder = svc.runtime.settings.calibration_pools_path
        assert acme.delete("/v1/users/nobody54").status_code in (200, 204, 404)  # drops the tenant's vectors in memory
        encoded.clear()
        r = acme.post("/v1/users/hank/next-comparison", json={})
        assert r.status_code == 200 and r.json()["pool"] == "calibration", r.text
        assert encoded == []  # before: every text of the pool
        assert pool_path(folder, "acme").with_suffix(".vectors").exists()
        assert acme.delete("/v1/calibration-pool").status_code == 204
        vectors = pool_path(folder, "acme").with_suffix(".vectors")
        assert not [p.name for p in folder.iterdir() if vectors.name in p.name]  # nothing of the pool left behind


def test_the_vectors_a_crash_left_without_their_pool_are_the_tenants_for_its_removal(svc):
    """Session calib55: a first PUT killed between writing the pool's vectors and the pool (`write_pool` writes the
    vectors first) leaves `<sha256>.vectors` alone, the tenant's texts' embeddings: its removal finds and removes it.
    Before, the removal took a tenant holding nothing else for one never seen (404 `tenant_unseen`), the file left."""
    from service.calibration.pools import vectors_path
    from tests.service.test_tenant48_removal import wait_removed

    left = vectors_path(svc.runtime.settings.calibration_pools_path, "initech55")
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"\x86\xa6format\x01")
    with svc.client("admin") as admin:
        r = admin.post("/admin/tenants/initech55/removal")
        assert r.status_code == 202, r.text  # before: 404 tenant_unseen
        wait_removed(admin, "initech55", timeout=60)
    assert not left.exists()


def test_a_pool_stored_is_answered_200_when_the_look_after_it_fails(svc, monkeypatch, caplog):
    """Review late55a: the PUT's pool is written (renamed into place, the folder fsynced); the look back at it that
    decides whether this replica holds its vectors (`CalibrationVectors.keep`, which reads the pool since review
    calib55) meets the shared volume failing a moment (EIO, ESTALE). Before: a 500, though the pool was stored, and a
    client retrying it stored it again under a new version. Now 200 with the stored pool's version, a WARNING, and the
    next request reads the vectors from beside the pool."""
    from service.calibration import vectors

    def away(folder, tenant):
        raise OSError(errno.EIO, "Input/output error", str(folder))

    with svc.client("globex") as globex:
        monkeypatch.setattr(vectors, "read_pool", away)
        r = globex.put("/v1/calibration-pool", json={"pool": POOL_B})
        monkeypatch.undo()
        assert r.status_code == 200, r.text
        assert globex.get("/v1/calibration-pool").json()["version"] == r.json()["version"]
        assert "Input/output error" in caplog.text
        assert svc.runtime.calibration_vectors.held_bytes("globex") == 0
        assert globex.post("/v1/users/gavin/next-comparison", json={}).status_code == 200
        assert svc.runtime.calibration_vectors.held_bytes("globex") > 0
        assert globex.delete("/v1/calibration-pool").status_code == 204
