"""Review dots54: a `pref_id` that a URL client resolves as a dot segment. An import took `..` (any printable ASCII),
and its retraction as documented, DELETE /v1/users/ria/preferences/.. with curl, httpx or requests, was sent as
DELETE /v1/users/ria: the user was deleted, every row gone. On the real app over HTTP (the real httpx client) and a
real LanceDB in a temp folder: such ids are refused at the import, naming the line and `pref_id`, nothing stored;
rows an older release stored under them stay readable, exportable and retractable percent-encoded."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from pluralign.store.tables import StoredPreference
from tests.service.test_blank_answers import stored_as_an_older_version_stored
from tests.service.tiny import start_service

CLIMBING = ["..", "a/../..", ".", "..#x", "a\\..\\..", "%2E%2E"]  # the first three as curl/httpx/requests resolve them


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("dots54") / "data", tiny_generator_dir, tiny_pal_dir, minilm,
                                    deletion_sweep_s=3600)
    with server:
        yield service


def row(i: int, **extra) -> dict:
    return {"prompt": f"Tea or coffee, {i}?", "chosen": f"Tea, {i}.", "rejected": f"Coffee, {i}.", **extra}


@pytest.mark.parametrize("pref_id", CLIMBING)
def test_an_import_of_a_climbing_pref_id_is_refused_naming_the_line(svc, pref_id):
    with svc.client("acme") as acme:
        body = "\n".join(json.dumps(r) for r in (row(1, pref_id="fine-1"), row(2, pref_id=pref_id)))
        r = acme.post("/v1/users/dora/import", content=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "line 2.pref_id", error
        assert "a URL client resolves it" in error["message"] and repr(pref_id) in error["message"], error
        assert acme.get("/v1/users/dora/preferences").status_code == 404  # nothing of the body stored
        assert not svc.runtime.store.stored_rows("acme", "dora")


def test_rows_stored_under_such_ids_by_an_older_release_are_exported_and_taken_back_without_deleting_the_user(svc):
    """Written straight into the store (an import before review dots54 took them); taken back with the real httpx
    client, each id percent-encoded whole and its dots as `%2E` (docs/api.md): the user and their other rows stay."""
    rt = svc.runtime
    legacy = ["..", ".", "a/../.."]
    rows = [StoredPreference(tenant="acme", user_id="ria", pref_id=pref_id, kind="comparison", created_at=1.7e9 + i,
                             **row(i)) for i, pref_id in enumerate([*legacy, "kept"])]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as acme:
        listed = acme.get("/v1/users/ria/preferences")
        assert listed.status_code == 200 and [p["pref_id"] for p in listed.json()["data"]] == [*legacy, "kept"], listed.text
        export = acme.get("/v1/users/ria/export?format=preferences")
        assert [json.loads(line)["pref_id"] for line in export.text.splitlines()] == [*legacy, "kept"], export.text
        again = acme.post("/v1/users/ria/import", content=export.text)  # no new row takes such an id; a held one is held
        assert again.status_code == 201 and again.json()["already_stored"] == [*legacy, "kept"], again.text
        for pref_id in legacy:
            sent = quote(pref_id, safe="").replace(".", "%2E")
            r = acme.delete(f"/v1/users/ria/preferences/{sent}")
            assert r.status_code == 200 and r.json()["retracted"] == pref_id, (pref_id, r.text)
            assert "deleted" not in r.json()  # the retraction's reply, not the user's DELETE's
        left = acme.get("/v1/users/ria/preferences")
        assert left.status_code == 200 and [p["pref_id"] for p in left.json()["data"]] == ["kept"], left.text


def test_every_id_an_import_takes_is_taken_back_as_documented_without_deleting_the_user(svc):
    """Each id imported on its own; each the import takes is taken back with the real httpx client, percent-encoded
    whole as docs/api.md says (`quote(pref_id, safe="")`, which leaves a `.` as it is): that row goes, the user and
    their other row stay. Before review dots54 the import took `..`, and its retraction deleted the user."""
    ids = ["...", "a#b", "a?b", "%61", "a\\b", *CLIMBING[:3]]  # `#`, `?`, `%`, `\` encoded are no danger
    taken = []
    with svc.client("acme") as acme:
        assert acme.post("/v1/users/eve/import", content=json.dumps(row(0, pref_id="kept"))).status_code == 201
        for i, pref_id in enumerate(ids, 1):
            r = acme.post("/v1/users/eve/import", content=json.dumps(row(i, pref_id=pref_id)))
            assert r.status_code in (201, 400), r.text
            if r.status_code == 400:
                continue
            taken.append(pref_id)
            r = acme.delete(f"/v1/users/eve/preferences/{quote(pref_id, safe='')}")
            assert r.status_code == 200 and r.json().get("retracted") == pref_id, (pref_id, r.text)
            held = acme.get("/v1/users/eve/preferences")
            assert held.status_code == 200 and [p["pref_id"] for p in held.json()["data"]] == ["kept"], (pref_id, held.text)
    assert taken == ids[:-3]


def test_a_legacy_users_export_reimports_into_that_user_as_held_and_into_no_other(svc):
    """Review reviewdots54. The export writes a row an older release stored under `..` as it is; imported again into
    the same user (a backup restored, the file sent twice) the whole body was a 400 naming `line 1.pref_id`, and the
    advice to drop the id stored the held row a second time under a new id. A row the user holds under such an id
    with the same content is no new row: it counts as `already_stored`, as every other held row does. Into another
    user, who holds no such row, or with other content, the line is still refused, nothing of the body stored."""
    rt = svc.runtime
    rows = [StoredPreference(tenant="acme", user_id="lea", pref_id=pref_id, kind="comparison", created_at=1.7e9 + i,
                             **row(i)) for i, pref_id in enumerate(["..", "kept", "a/../.."])]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as acme:
        export = acme.get("/v1/users/lea/export?format=preferences").text
        again = acme.post("/v1/users/lea/import", content=export)
        assert again.status_code == 201, again.text
        assert sorted(again.json()["already_stored"]) == ["..", "a/../..", "kept"] and again.json()["stored"] == [], again.text
        keyed = acme.post("/v1/users/lea/import", content=export, headers={"Idempotency-Key": "restore-1"})
        assert keyed.status_code == 201 and sorted(keyed.json()["already_stored"]) == ["..", "a/../..", "kept"], keyed.text
        held = acme.get("/v1/users/lea/preferences")
        assert [p["pref_id"] for p in held.json()["data"]] == ["..", "kept", "a/../.."], held.text  # nothing twice
        moved = "\n".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "user_id"}) for line in export.splitlines())
        other = acme.post("/v1/users/leo/import", content=moved)  # the file given to another user
        assert other.status_code == 400 and other.json()["error"]["param"] == "line 1.pref_id", other.text
        assert "a URL client resolves it" in other.json()["error"]["message"], other.text
        assert acme.get("/v1/users/leo/preferences").status_code == 404  # nothing of the body stored
        changed = [json.loads(line) for line in export.splitlines()]
        changed[0]["chosen"] = "Tea, with milk."
        conflict = acme.post("/v1/users/lea/import", content="\n".join(json.dumps(r) for r in changed))
        assert conflict.status_code == 409 and conflict.json()["error"]["param"] == "line 1.pref_id", conflict.text
    assert not svc.runtime.store.stored_rows("acme", "leo")


def test_any_id_is_taken_back_with_it_outside_the_path_and_the_user_keeps_their_other_rows(svc):
    """Task late54a. `..` in the path is safe only as `%2E%2E`, and a client or proxy that resolves dot segments sends
    the user's DELETE instead. DELETE /v1/users/{user_id}/preferences?pref_id=... carries the id in the query, which no
    client normalizes: the same answers as the path form (200, a 404 for an id not held or taken back already), a 400
    naming `pref_id` when it is absent or malformed, and the listing (GET, same path, its own query) unchanged."""
    rt = svc.runtime
    legacy = ["..", ".", "a/../.."]
    rows = [StoredPreference(tenant="acme", user_id="uma", pref_id=pref_id, kind="comparison", created_at=1.7e9 + i,
                             **row(i)) for i, pref_id in enumerate([*legacy, "kept"])]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as acme:
        for bad, problem in ((None, "required"), ("", "got ''"), ("a b", "got 'a b'")):
            r = acme.delete("/v1/users/uma/preferences", params={} if bad is None else {"pref_id": bad})
            assert r.status_code == 400 and r.json()["error"]["param"] == "pref_id", (bad, r.text)
            assert problem in r.json()["error"]["message"], (bad, r.text)
        assert acme.get("/v1/users/uma/preferences", params={"limit": 1}).json()["next_offset"] == 1  # the listing
        for pref_id in legacy:
            r = acme.delete("/v1/users/uma/preferences", params={"pref_id": pref_id})
            assert r.status_code == 200 and r.json()["retracted"] == pref_id, (pref_id, r.text)
            assert "deleted" not in r.json()  # the retraction's reply, not the user's DELETE's
            again = acme.delete("/v1/users/uma/preferences", params={"pref_id": pref_id})
            assert again.status_code == 404, (pref_id, again.text)  # taken back already, as the path form says
        assert acme.delete("/v1/users/uma/preferences", params={"pref_id": "never"}).status_code == 404
        left = acme.get("/v1/users/uma/preferences")
        assert left.status_code == 200 and [p["pref_id"] for p in left.json()["data"]] == ["kept"], left.text


def test_a_tenants_removal_keeps_its_retraction_records_until_its_own_record_is_written(svc, monkeypatch):
    """Task late54a. The removal's last step forgot the tenant's retraction records before writing the record the
    other replicas read: when that write failed (tried again at the next pass) nothing kept a replica restarting in
    between from moving a taken-back row of the tenant back in. The record first, then the retractions: a failed
    write leaves them, the next pass writes it and forgets them. The real store, its record write failing once."""
    from service.deletions import DeletionSweep
    from service.tenants import TenantRemovals

    rt = svc.runtime
    # the sweep a replica of several has (not started: its passes are not what is tested), here for the one test
    monkeypatch.setattr(rt, "deletion_sweep", DeletionSweep(rt, 3600))
    rt.store.record_retraction("late54t", "gone", "misclick", time.time(), 1)  # through another replica

    def retractions_of_tenant() -> int:
        return rt.store.retractions.count_rows("tenant = 'late54t'")

    real, failed = rt.store.record_deletion, []

    def record_deletion_failing_once(*records):
        if not failed:
            failed.append(records)
            raise OSError("the store is unreachable")
        return real(*records)

    monkeypatch.setattr(rt.store, "record_deletion", record_deletion_failing_once)
    removals = TenantRemovals(rt, 3600)
    removals.begin("late54t", even_if_unseen=True)
    assert removals.run_once() == 0 and failed  # its record could not be written: tried again at the next pass
    assert retractions_of_tenant() == 1  # the taken-back row still kept out of every replay
    assert not [d for d in rt.store.deletions_since(0.0) if d.tenant == "late54t"]
    assert removals.run_once() == 1
    assert [d for d in rt.store.deletions_since(0.0) if d.tenant == "late54t"] and retractions_of_tenant() == 0
