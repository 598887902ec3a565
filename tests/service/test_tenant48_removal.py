"""An operator lists a tenant's users and removes a whole tenant (`/admin/tenants/{tenant}/...`,
`service.tenants`): every user's rows in every table, their adapters, their feedback still in the log, the
tenant's jobs and folders, and its keys go; another tenant's rows stay byte for byte. Before session 48 there
was no way to list a tenant's users, and revoking a tenant's keys left every row of it."""

from __future__ import annotations

import contextlib
import time

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.tenants import REMOVALS_FOLDER
from tests.files import files_holding
from tests.service.test_break20_delete import KEPT, MARKER, give_comparisons
from tests.service.test_service_adapters import random_adapter
from tests.service.tiny import start_service
from training.cli import main

pytestmark = pytest.mark.usefixtures("short_read_margin")


def wait_removed(admin, tenant: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        removal = admin.get(f"/admin/tenants/{tenant}/removal").json()
        if removal.get("state") == "done":
            return removal
        time.sleep(0.05)
    raise AssertionError(f"the removal of {tenant} did not finish: {removal}")


def rows_of(rt, tenant: str) -> dict[str, list]:
    """Every row of `tenant` in every table of the store, every column, in a fixed order."""
    out = {}
    for name, table in rt.store.tables.items():
        rows = table.search().where(f"tenant = '{tenant}'").limit(None).to_arrow().to_pylist()
        out[name] = sorted(rows, key=lambda r: msgspec.json.encode(r, order="sorted"))
    return out


def folder_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def acme_and_globex(svc, acme, globex, tiny_generator_dir) -> None:
    """acme: ann and bob with comparisons (ann's texts carry MARKER), cat with a stated preference only, and an
    adapter for ann; globex: bea with comparisons (KEPT) and an adapter."""
    give_comparisons(acme, "ann", "tea", MARKER, n=2)
    give_comparisons(acme, "bob", "coffee", MARKER, n=2)
    assert acme.patch("/v1/users/cat/stated-preferences", json={"preferences": {"length": "less"}}).status_code == 200
    give_comparisons(globex, "bea", "tea", KEPT, n=2)
    assert acme.get("/v1/users/ann/preferences").json()["total"] == 2  # moved into the table
    assert globex.get("/v1/users/bea/preferences").json()["total"] == 2
    registry = svc.runtime.adapters.registry
    for tenant, user, seed in (("acme", "ann", 1), ("globex", "bea", 2)):
        random_adapter(tiny_generator_dir, registry.folder(tenant, user), tiny_generator_dir.name, "user", seed)
    svc.runtime.wait_for_background()  # the refits of their rows ran: globex's rows change no more of themselves


@pytest.mark.slow  # 3-7 s at load 10 (feedback, refits, three users' DELETEs): make test-tenant-removal
def test_an_operator_lists_a_tenants_users_and_removes_the_tenant(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        acme_and_globex(svc, acme, globex, tiny_generator_dir)

        # the listing pages through acme's users in id order, with their counts and last activity
        first = admin.get("/admin/tenants/acme/users", params={"limit": 2}).json()
        assert [u["user"] for u in first["users"]] == ["ann", "bob"] and first["next"] == "bob", first
        assert first["users"][0]["preferences"] == 2 and first["users"][0]["has_profile"]
        assert first["users"][0]["last_activity"] > time.time() - 600
        rest = admin.get("/admin/tenants/acme/users", params={"after": "bob"}).json()
        assert [u["user"] for u in rest["users"]] == ["cat"] and rest["next"] is None, rest
        assert rest["users"][0]["stated_changes"] == 1 and rest["users"][0]["preferences"] == 0
        # a tenant key sees its own tenant's users only, never another's
        assert acme.get("/admin/tenants/globex/users").status_code == 403
        own = acme.get("/v1/users", params={"tenant": "globex"})
        assert own.status_code in (200, 400) and "bea" not in own.text
        assert [u["user"] for u in acme.get("/v1/users").json()["users"]] == ["ann", "bob", "cat"]
        assert admin.get("/admin/tenants/a%2Fb/users").status_code in (400, 404)
        assert admin.get("/admin/tenants/-x/users").json()["error"]["param"] == "tenant"

        kept_rows, kept_adapter = rows_of(rt, "globex"), folder_bytes(rt.adapters.registry.folder("globex", "bea"))
        kept_export = globex.get("/v1/users/bea/export").content
        assert files_holding(data, MARKER)

        r = admin.post("/admin/tenants/acme/removal")
        assert r.status_code == 202, r.text
        assert r.json()["keys_revoked"] == 1 and r.json()["state"] == "running"
        assert acme.get("/v1/users/ann/preferences").status_code == 401  # its key is refused at once
        removal = wait_removed(admin, "acme")
        assert removal["users_removed"] == 3 and removal["counts"]["preferences"] == 4, removal
        assert removal["counts"]["adapter_files"] > 0 and removal["error"] is None

        # nothing of acme is left: no row, no text, no adapter, no folder named for it
        assert all(rows == [] for rows in rows_of(rt, "acme").values())
        assert files_holding(data, MARKER) == []
        assert not (rt.adapters.registry.root / "acme").exists()
        assert admin.get("/admin/tenants/acme/users").json()["users"] == []
        assert not [k for k in rt.keys.list() if k.tenant == "acme"]
        queued = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "tenant": "acme"}})
        assert queued.status_code == 201, queued.text  # an audit of the tenant (no longer being removed)
        # globex's rows, adapter and export are as they were, byte for byte
        assert rows_of(rt, "globex") == kept_rows
        assert folder_bytes(rt.adapters.registry.folder("globex", "bea")) == kept_adapter
        assert globex.get("/v1/users/bea/export").content == kept_export

        # sent again: a new removal, which finds nothing left (the job queued meanwhile goes with it)
        again = admin.post("/admin/tenants/acme/removal")
        assert again.status_code == 202
        done = wait_removed(admin, "acme")
        assert done["users_removed"] == 0 and done["jobs_removed"] == 1, done
        assert [j for j in admin.get("/admin/jobs").json()["jobs"] if j["params"].get("tenant") == "acme"] == []
        assert rows_of(rt, "globex") == kept_rows

        # a user something keeps naming that their DELETE does not clean stops the pass with an error, not a loop
        from service.tenants import TenantRemovals

        users_of = TenantRemovals.users_of
        monkeypatch.setattr(TenantRemovals, "users_of", lambda self, tenant: {"ghost"} if tenant == "initech" else users_of(self, tenant))
        assert admin.post("/admin/tenants/initech/removal").status_code == 202
        deadline = time.monotonic() + 30
        while (stuck := admin.get("/admin/tenants/initech/removal").json())["error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stuck["state"] == "running" and "1 users are still found" in stuck["error"], stuck
        assert stuck["users_removed"] == 0


@pytest.mark.slow  # 3-7 s at load 10 (feedback, refits, three users' DELETEs): make test-tenant-removal
def test_a_removal_stopped_part_way_is_finished_at_the_next_start(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, capsys):
    """The process stops after the first user's DELETE (here its second DELETE fails, as a kill would leave it: the
    record `running`, one user removed); the next start finishes the removal without the operator sending it again,
    and a job for the tenant is refused while it runs."""
    from service import tenants
    from service.tenants import TenantRemovals

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tenants, "USERS_PER_LOOK", 1)  # batches of one user: the second batch is stopped
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    delete_users = TenantRemovals._delete_users
    calls = []

    def killed_after_one(self, tenant, users):
        calls.append(users)
        if len(calls) > 1:
            raise OSError("killed")
        return delete_users(self, tenant, users)

    monkeypatch.setattr(TenantRemovals, "_delete_users", killed_after_one)
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        acme_and_globex(svc, acme, globex, tiny_generator_dir)
        kept_rows = rows_of(svc.runtime, "globex")
        assert admin.post("/admin/tenants/acme/removal").status_code == 202
        deadline = time.monotonic() + 60
        while (removal := admin.get("/admin/tenants/acme/removal").json())["error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert removal["state"] == "running" and removal["users_removed"] == 1, removal
        refused = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "bob"}})
        assert refused.status_code == 409 and refused.json()["error"]["param"] == "params.tenant", refused.text
        assert files_holding(data, MARKER)  # bob's texts are still there
    monkeypatch.setattr(TenantRemovals, "_delete_users", delete_users)
    monkeypatch.setattr(tenants, "USERS_PER_LOOK", 256)
    (entry,) = (data / REMOVALS_FOLDER).iterdir()
    assert b"ann" not in entry.read_bytes() and b"bob" not in entry.read_bytes()  # the record names no user
    # the CLI lists the users left and, sent again, answers the removal running (nothing begun twice)
    assert main(["tenants", "users", "--tenant", "acme", "--data-dir", str(data)]) == 0
    lines = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
    assert [u["user"] for u in lines[:-1]] == ["bob", "cat"] and lines[-1] == {"users": 2, "next": None}, lines
    assert main(["tenants", "remove", "--tenant", "acme", "--data-dir", str(data)]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["started_at"] == removal["started_at"]

    again, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with again, svc.client("admin") as admin:  # the removal is never sent again
        removal = wait_removed(admin, "acme")
        assert removal["users_removed"] == 3, removal
        assert files_holding(data, MARKER) == []
        assert all(rows == [] for rows in rows_of(svc.runtime, "acme").values())
        assert not [k for k in svc.runtime.keys.list() if k.tenant == "acme"]  # the key this start issued too
        assert rows_of(svc.runtime, "globex") == kept_rows


def test_the_cli_records_a_removal_and_revokes_the_tenants_keys_only(tmp_path, capsys):
    """`pluralign tenants remove` revokes the tenant's keys at once (not another tenant's, nor an admin key labelled
    with it) and records the removal for the service; `status` prints it; a tenant's users on a folder with no
    store yet are none, and no store is made for asking."""
    from service.auth import KeyRing

    data = tmp_path / "data"
    keys = KeyRing(data / "api_keys.json")
    keys.issue("acme"), keys.issue("acme", name="second"), keys.issue("acme", admin=True, name="ops"), keys.issue("globex")
    assert main(["tenants", "remove", "--tenant", "acme", "--data-dir", str(data)]) == 0
    removal = msgspec.json.decode(capsys.readouterr().out)
    assert removal["state"] == "running" and removal["keys_revoked"] == 2, removal
    assert sorted((k.tenant, k.admin) for k in keys.list()) == [("acme", True), ("globex", False)]
    assert main(["tenants", "status", "--tenant", "acme", "--data-dir", str(data)]) == 0
    assert msgspec.json.decode(capsys.readouterr().out) == removal
    assert main(["tenants", "status", "--tenant", "globex", "--data-dir", str(data)]) != 0
    assert "no removal of tenant globex" in capsys.readouterr().err
    assert main(["tenants", "users", "--tenant", "acme", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out == '{"users":0,"next":null}\n' and not (data / "lancedb").exists()


def test_a_removal_is_refused_while_the_tenants_keys_are_in_a_linked_key_file(tmp_path):
    """Replicas share one key file, a link to a Secret's (deploy/README.md): the removal never rewrites it (a write
    would put a file of its own in place of the link), so a tenant with keys there is refused, nothing removed."""
    from service.auth import KeyRing
    from service.tenants import KeysKeptElsewhere, begin_removal, read_removal

    data, secret = tmp_path / "data", tmp_path / "secret"
    secret.mkdir(), data.mkdir()
    KeyRing(secret / "api_keys.json").issue("acme")
    (data / "api_keys.json").symlink_to(secret / "api_keys.json")
    keys = KeyRing(data / "api_keys.json")
    with pytest.raises(KeysKeptElsewhere, match="still has 1 keys"):
        begin_removal(data, keys, "acme")
    assert read_removal(data, "acme") is None and (data / "api_keys.json").is_symlink()
    removal, begun = begin_removal(data, keys, "globex")  # a tenant with no key there: begun
    assert begun and removal.keys_revoked == 0


@pytest.mark.slow  # two replicas (~15 s on two shared cores): make test-tenant-removal
def test_a_removal_through_one_replica_leaves_nothing_of_the_tenant_in_the_others_folder(tmp_path, tiny_generator_dir,
                                                                                         tiny_pal_dir, minilm):
    """Replica b moved acme's feedback into the shared store and its own feedback log still holds the texts; the
    removal is sent to replica a. Each user's DELETE records a deletion that b's sweep applies: nothing of acme is left
    in b's folder or in the store, and globex's rows are untouched. b's records set aside (dead letters) hold acme rows
    of ann, of cal, whom nothing a finds holds, and of a blank user: the removal's own record (a tenant's, session 50)
    takes them all, and b's globex letter stays. Before, cal's letter and the blank user's stayed on b, texts and all
    (no deletion record named them). b's log also holds feedback of dan that b has not moved (held there), whom a never
    sees: the tenant's record takes it from b's log too (since session 51; before, it stayed, and b moved it into the
    store after the removal was done)."""
    from pluralign.store import StoredPreference
    from tests.service.test_delete_journal import wait_until
    from tests.service.tiny import start_replicas

    def row(tenant: str, user: str, text: str) -> StoredPreference:
        return StoredPreference(tenant=tenant, user_id=user, pref_id=f"{tenant}-{user}-set-aside", prompt="Tea?",
                                chosen=text, rejected="No.", kind="comparison", created_at=time.time())

    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=0.2)
    folder_b = tmp_path / "b"
    with (first, second, b.client("acme") as acme_b, b.client("globex") as globex_b, a.client("admin") as admin_a,
          contextlib.ExitStack() as held):
        give_comparisons(acme_b, "ann", "tea", MARKER, n=2)
        give_comparisons(acme_b, "bob", "coffee", MARKER, n=2)
        give_comparisons(globex_b, "bea", "tea", KEPT, n=2)
        held.enter_context(b.runtime.ingest.held("acme", "dan"))  # acknowledged by b, waiting in its log (as a backlog)
        give_comparisons(acme_b, "dan", "tea", MARKER, n=1)
        letters_b = b.runtime.ingest.dead_letters
        for user in ("ann", "cal", ""):
            letters_b.put([row("acme", user, f"{MARKER} set aside")], "RowRefused: then", 3, time.time())
        globex_letter = letters_b.put([row("globex", "bea", f"{KEPT} set aside")], "RowRefused: then", 3, time.time())
        b.runtime.wait_for_background()
        assert files_holding(folder_b, MARKER)
        assert wait_until(lambda: len(admin_a.get("/admin/tenants/acme/users").json()["users"]) == 2)
        kept = rows_of(b.runtime, "globex")
        assert admin_a.post("/admin/tenants/acme/removal").status_code == 202
        removal = wait_removed(admin_a, "acme")
        assert removal["users_removed"] == 2, removal
        assert wait_until(lambda: files_holding(folder_b, MARKER) == []), files_holding(folder_b, MARKER)
        assert b.runtime.ingest.log.pending_for("acme", "dan") == []
        assert files_holding(tmp_path / "a", MARKER) == [] and files_holding(tmp_path / "shared-lancedb", MARKER) == []
        assert rows_of(b.runtime, "globex") == kept
        assert letters_b.names() == [globex_letter] and letters_b.rows_for("globex", "bea") == 1


def test_a_removal_finds_the_adapters_of_tenants_and_users_whose_folder_names_are_quoted(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                       minilm, monkeypatch):
    """Adapter folders are named by the quoted tenant and user (`AdapterRegistry.folder`: `org%3A1/dan%40x.com`), as
    ids with `@`, `:` or `+` (an e-mail address) give. A user who holds only an adapter is one the removal finds and
    deletes, and the tenant's folder goes with it; globex's adapter of a user named alike stays. Before session 48's
    review the look read `org:1`'s folder as `org:1` (none: `org%3A1` and its adapters were left) and `fay@x.com`'s as
    the user `fay%40x.com`, whose DELETE removed nothing: the removal stopped with an error, the adapter kept."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    registry = svc.runtime.adapters.registry
    for tenant, user, seed in (("org:1", "dan@x.com", 1), ("org:1", "eve", 2), ("acme", "fay@x.com", 3), ("globex", "fay@x.com", 4)):
        random_adapter(tiny_generator_dir, registry.folder(tenant, user), tiny_generator_dir.name, "user", seed)
    kept = folder_bytes(registry.folder("globex", "fay@x.com"))
    with server, svc.client("admin") as admin:
        for tenant, users in (("org:1", 2), ("acme", 1)):
            assert admin.post(f"/admin/tenants/{tenant}/removal").status_code == 202
            removal = wait_removed(admin, tenant, timeout=20)
            assert removal["users_removed"] == users and removal["counts"]["adapter_files"] > 0, removal
        assert sorted(p.name for p in registry.root.iterdir()) == ["globex"]
        assert registry.users("globex") == ["fay@x.com"] and folder_bytes(registry.folder("globex", "fay@x.com")) == kept


def test_users_a_look_keeps_finding_after_an_empty_delete_never_keep_the_others_from_their_turn(tmp_path, tiny_generator_dir,
                                                                                                  tiny_pal_dir, minilm, monkeypatch):
    """A look deletes up to USERS_PER_LOOK users (here 2) in id order. Two users something keeps naming that their
    DELETE does not clean (`ghost` users, sorted first) are not deleted again at each look while zed waits: zed's
    adapter goes, then the pass stops with its error. Before session 48's review each look took the same two ghosts
    again, zed never had a turn and the pass never ended (no error, the removal `running` for ever)."""
    from service import tenants
    from service.tenants import TenantRemovals

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tenants, "USERS_PER_LOOK", 2)
    users_of = TenantRemovals.users_of
    monkeypatch.setattr(TenantRemovals, "users_of", lambda self, tenant: users_of(self, tenant) | {"a1", "a2"})
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    registry = svc.runtime.adapters.registry
    random_adapter(tiny_generator_dir, registry.folder("initech", "zed"), tiny_generator_dir.name, "user", 1)
    with server, svc.client("admin") as admin:
        assert admin.post("/admin/tenants/initech/removal").status_code == 202
        deadline = time.monotonic() + 20
        while (stuck := admin.get("/admin/tenants/initech/removal").json())["error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stuck["state"] == "running" and "2 users are still found" in (stuck["error"] or ""), stuck
        assert stuck["users_removed"] == 1 and stuck["counts"]["adapter_files"] > 0, stuck
        assert registry.users("initech") == []


def test_a_chat_being_answered_when_the_removal_begins_leaves_nothing_of_the_tenant(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                    minilm, monkeypatch):
    """dan chats for the first time with acme's key; their chat is authenticated, then waits for the generator while
    the removal begins and finds nothing of dan. The removal's last look waits for acme's requests being handled to end
    (`TenantRequests`), so the interaction dan's chat stores as it ends is found and deleted: nothing of acme is left
    once the removal is `done`. Before session 48's review it was done before the chat ended, and dan's interaction
    (their prompt, the answers) stayed in the store."""
    import threading

    from tests.serving import generation_held

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    rt, answered = svc.runtime, {}
    body = {"model": "pluralign", "messages": [{"role": "user", "content": MARKER}], "user": "dan", "temperature": 0}
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        requests, waiting = server.server.config.app.state.tenant_requests, threading.Event()
        wait_none = requests.wait_none

        def noted(tenant, *args, **kwargs):  # the removal's last look, waiting for the tenant's requests to end
            waiting.set()
            return wait_none(tenant, *args, **kwargs)

        monkeypatch.setattr(requests, "wait_none", noted)
        with generation_held(rt, at_most_s=20) as release:
            chat = threading.Thread(target=lambda: answered.update(r=acme.post("/v1/chat/completions", json=body, timeout=30)))
            chat.start()
            deadline = time.monotonic() + 10
            while not (rt.scheduler.stats()["running"] or rt.scheduler.stats()["waiting"]) and time.monotonic() < deadline:  # its generation began
                time.sleep(0.02)
            assert admin.post("/admin/tenants/acme/removal").status_code == 202
            # the removal's look has found nothing; it waits for the chat (a sleep of 0.5 s, before: on a busy machine the
            # chat might be released before the removal looked, and nothing raced)
            assert waiting.wait(30), "the removal never waited for the tenant's requests"
            release()
            chat.join(30)
            removal = wait_removed(admin, "acme", timeout=30)
        assert answered["r"].status_code == 200, answered["r"].text
        assert removal["users_removed"] == 1 and removal["counts"]["interactions"] == 1, removal
        rt.wait_for_background()
        assert all(rows == [] for rows in rows_of(rt, "acme").values())
        assert admin.get("/admin/tenants/acme/users").json()["users"] == []


def test_a_removal_whose_keys_cannot_be_revoked_is_not_begun_and_a_pass_says_why(tmp_path, monkeypatch):
    """The key file cannot be rewritten (here a full disk; a read-only mount of it alike) while the removal's record
    can: the removal is refused with nothing begun (`begin_removal` raises OSError; the route's 503 says nothing of the
    tenant was removed, and so it is: no record left for a pass to take up behind the operator's back). A running
    record (one a stopped process began) whose keys cannot be revoked says so in its `error`. Before session 48's
    review the record stayed `running` after the 503, and every pass failed at the keys with the record's error null."""
    import errno
    from types import SimpleNamespace

    from service import auth
    from service.auth import KeyRing
    from service.tenants import TenantRemoval, TenantRemovals, begin_removal, read_removal, write_removal

    data = tmp_path / "data"
    keys = KeyRing(data / "api_keys.json")
    keys.issue("acme")

    def full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(auth, "write_atomic", full)
    with pytest.raises(OSError, match="No space"):
        begin_removal(data, keys, "acme")
    assert read_removal(data, "acme") is None and [k.tenant for k in keys.list()] == ["acme"]

    write_removal(data, TenantRemoval(tenant="acme", state="running", started_at=time.time()))
    removals = TenantRemovals(SimpleNamespace(keys=keys, settings=SimpleNamespace(data_path=data)), 3600)
    assert removals.run(read_removal(data, "acme")) is False
    assert "No space left on device" in read_removal(data, "acme").error


def test_an_operator_and_a_tenant_page_through_the_tenants_users_over_http(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                           monkeypatch):
    """The default suite's look at the listing routes (the full flow with feedback is slow-marked): an admin key pages
    through any tenant's users in id order, a tenant key through its own only (`GET /v1/users`), never another's."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    for tenant, user in (("acme", "cat"), ("acme", "ann@x.com"), ("globex", "bea")):  # rows as a stated preference leaves
        svc.runtime.store.add_stated_changes(tenant, user, [{"version": 1, "at": time.time(), "feature": "length", "direction": "less"}])
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        first = admin.get("/admin/tenants/acme/users", params={"limit": 1}).json()
        assert [u["user"] for u in first["users"]] == ["ann@x.com"] and first["next"] == "ann@x.com", first
        assert first["users"][0]["stated_changes"] == 1 and first["users"][0]["last_activity"] > time.time() - 600
        rest = admin.get("/admin/tenants/acme/users", params={"after": first["next"]}).json()
        assert [u["user"] for u in rest["users"]] == ["cat"] and rest["next"] is None, rest
        assert [u["user"] for u in acme.get("/v1/users").json()["users"]] == ["ann@x.com", "cat"]
        assert [u["user"] for u in globex.get("/v1/users").json()["users"]] == ["bea"]
        assert acme.get("/admin/tenants/globex/users").status_code == 403
        assert admin.get("/admin/tenants/-x/users").json()["error"]["param"] == "tenant"


def test_an_audit_of_a_tenant_being_removed_is_refused_as_its_jobs_are(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                      monkeypatch):
    """While initech's removal runs (kept running here by a user every look finds), `GET /admin/audits/fairness?tenant=
    initech`, which queues an audit job of it, is a 409 naming `tenant`, as `POST /admin/jobs` for it is: no report of
    its groups is computed from users being deleted. Another tenant's audit is queued. Before session 48's review the
    GET queued the audit of initech (202/400 from its worker, never 409)."""
    from service.tenants import TenantRemovals

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    users_of = TenantRemovals.users_of
    monkeypatch.setattr(TenantRemovals, "users_of", lambda self, tenant: {"ghost"} if tenant == "initech" else users_of(self, tenant))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    with server, svc.client("admin") as admin:
        assert admin.post("/admin/tenants/initech/removal").status_code == 202
        again = admin.post("/admin/tenants/initech/removal")  # the one running: a 200 the schema declares (the fuzz
        assert again.status_code == 200 and again.json()["state"] == "running", again.text  # found it undeclared)
        declared = admin.get("/schema/openapi.json").json()["paths"]["/admin/tenants/{tenant}/removal"]["post"]["responses"]
        assert {"200", "202"} <= set(declared), sorted(declared)
        audit = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "initech", "wait": 0})
        assert audit.status_code == 409 and audit.json()["error"]["param"] == "tenant", audit.text
        assert audit.json()["error"]["code"] == "tenant_being_removed"
        job = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "tenant": "initech"}})
        assert job.status_code == 409, job.text
        assert [j for j in admin.get("/admin/jobs").json()["jobs"] if j["params"].get("tenant") == "initech"] == []
        other = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "wait": 0})
        assert other.status_code != 409, other.text


def test_a_removal_sent_again_after_it_was_done_keeps_the_first_ones_record(tmp_path, capsys):
    """The done record is the operator's trace of the removal (docs/admin.md: when, and how many). Sent again (as
    deploy/README.md advises once every replica's backlog is empty), the new removal's record does not take its place:
    the first one's is kept beside it, and `status` shows the newest. Before session 48's review the new record was
    written over it: the trace said 0 users removed, from the later time."""
    from service.tenants import REMOVALS_FOLDER, TenantRemoval, read_removal, write_removal

    data = tmp_path / "data"
    data.mkdir()
    first = TenantRemoval(tenant="acme", state="done", started_at=1000.0, finished_at=1010.0, users_removed=3, keys_revoked=1)
    write_removal(data, first)
    assert main(["tenants", "remove", "--tenant", "acme", "--data-dir", str(data)]) == 0
    again = msgspec.json.decode(capsys.readouterr().out, type=TenantRemoval)
    assert again.state == "running" and again.started_at > first.started_at and read_removal(data, "acme") == again
    kept = [msgspec.json.decode(p.read_bytes(), type=TenantRemoval) for p in sorted((data / REMOVALS_FOLDER).iterdir())]
    assert first in kept and again in kept and len(kept) == 2, kept
