"""An operator upgrades in place: today's service started on a data folder an older release wrote.

Each fixture under tests/fixtures/upgrade/<commit>/ is a data folder that release's own `pluralign
serve` wrote as users use it (tests/fixtures/upgrade/make_fixture.py regenerates it and says how):
chats, every kind of feedback, stated preferences where the release had them, a DELETEd user, a
promoted adapter and an audit job, and one comparison acknowledged but still in the feedback log;
`expected.json` is what the old release answered for each user.
The test copies one to a temp folder, starts today's app on it over HTTP with the old release's keys,
and checks what a user and an operator would.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import httpx
import lancedb
import pytest

from tests.service.tiny import start_service
from tests.together import at_once

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
USERS = (("alice", "default"), ("bob", "default"), ("dave", "acme"))
NEWER_ROW_FIELDS = {"received_at", "returned", "trl"}  # fields today's export adds (null or now) to rows an older release exported


def rows_by_identity(export: list[dict]) -> dict:
    """An export's rows, keyed by what identifies them, without the fields today's code adds."""
    out = {}
    for row in export:
        key = (row["type"], row.get("pref_id") or row.get("response_id") or row.get("user_id"))
        out[key] = {k: v for k, v in row.items() if k not in NEWER_ROW_FIELDS}
    return out


def table_marks(store: Path) -> dict[str, tuple[str, int]]:
    """Each table's schema-version mark and version, of the tables that carry one (not the
    maintenance lease's, which no release checks)."""
    db = lancedb.connect(str(store))
    tables = {name: db.open_table(name) for name in db.list_tables().tables}
    marks = {name: ((t.schema.metadata or {}).get(b"schema_version", b"").decode(), t.version) for name, t in tables.items()}
    return {name: mark for name, mark in marks.items() if mark[0]}


@pytest.fixture
def upgraded(request, tmp_path, tiny_generator_dir, minilm, monkeypatch):  # noqa: F811
    """`upgraded(commit)` -> (the fixture's expected.json, data folder, service), today's app serving
    a copy of that release's data folder with its generator named as it was (`tiny-llama`: adapters
    record the base model's name)."""
    from service.admin.controllers import ADMIN_HANDLERS

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    generator = tmp_path / "tiny-llama"
    generator.symlink_to(tiny_generator_dir, target_is_directory=True)
    stack = []

    def start(commit: str):
        fixture = FIXTURES / commit
        data = tmp_path / commit
        shutil.copytree(fixture / "data", data)
        # job records name the folder where the release wrote them (/tmp/up29/<commit>/data): as on any other
        # machine, or a folder restored elsewhere, nothing is read from there
        made_in = f"/tmp/up29/{commit}/data"
        for path in (data / "jobs").glob("*.json"):
            path.write_text(path.read_text().replace(made_in, str(tmp_path / "moved-away" / commit / "data")))
        server, service = start_service(data, generator, data / "pal", minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
        service.keys = json.loads((fixture / "keys.json").read_text())  # the old release's keys, not new ones
        server.__enter__()
        stack.append(server)
        return json.loads((fixture / "expected.json").read_text()), data, service

    yield start
    for server in stack:
        server.__exit__(None, None, None)


def check_everything_is_there(expected: dict, service) -> None:
    clients = {"default": service.client("default"), "acme": service.client("acme")}
    for user, tenant in USERS:
        old = expected["users"][f"{tenant}/{user}"]
        c = clients[tenant]
        profile = c.get(f"/v1/users/{user}")
        assert profile.status_code == 200, profile.text
        new, was = profile.json(), old["profile"]
        pending = [expected["pending"]] if expected["pending"]["user_id"] == user else []  # acknowledged, still in the log
        assert new["counts"]["preferences"] == was["counts"]["preferences"] + len(pending), user
        for field in ("user", "attributes", "adapter", "created_at"):
            assert new[field] == was[field], (user, field)
        assert new["pal"]["prior"] is False and new["pal"]["nearest_prototype"] == was["pal"]["nearest_prototype"]
        if not pending:  # refitted against the same population model and comparisons: the same fit, not a reset
            assert new["pal"]["weights"] == pytest.approx(was["pal"]["weights"], abs=1e-3), user
        if "summary" in was:  # the release said in words what it believed: the stated ones still act, the sure ones still hold
            said = lambda summary: {f["feature"]: (f["stated"], f["direction"]) for f in summary["features"] if f["stated"] or f["confidence"] == "confident"}
            # and since session 44 more may be sure: a feature's confidence is its sign's posterior probability integrated
            # along its axis, where the Laplace z these releases read stays near 1 for comparisons that all agree
            now = said(new["summary"])
            assert said(was["summary"]).items() <= now.items(), (user, now, said(was["summary"]))
            for f in new["summary"]["features"]:
                if f["feature"] in now.keys() - said(was["summary"]).keys():
                    assert f["probability"] >= 0.977 and f["moved_in"] > 0, (user, f)
        export = c.get(f"/v1/users/{user}/export")
        assert export.status_code == 200, export.text
        rows = rows_by_identity([json.loads(line) for line in export.text.splitlines()])
        old_rows = rows_by_identity(old["export"])
        for row in pending:
            assert {k: rows[("preference", row["pref_id"])][k] for k in row} == row
            del rows[("preference", row["pref_id"])]
        assert set(rows) == set(old_rows), user  # no row lost, none made up
        for key, row in old_rows.items():
            if key[0] != "user":  # the user row's fit is refreshed (below); every feedback row is as it was
                assert rows[key] == row, key
        assert rows[("user", user)]["stated"] == old_rows[("user", user)].get("stated", rows[("user", user)]["stated"])
        listed = c.get(f"/v1/users/{user}/preferences")
        assert listed.status_code == 200 and listed.json()["total"] == old["preferences"]["total"] + len(pending)
        stated = c.get(f"/v1/users/{user}/stated-preferences")
        assert stated.status_code == 200, stated.text
        if old["stated"] is not None:  # the release had stated preferences: every version kept
            assert stated.json() == old["stated"]
    # carol, DELETEd under the old release, stays deleted
    assert clients["default"].get("/v1/users/carol").status_code == 404
    assert clients["default"].get("/v1/users/carol/preferences").status_code == 404
    # a chat uses alice's model and her promoted adapter
    chat = clients["default"].post("/v1/chat/completions", json={
        "model": "pluralign", "user": "alice", "messages": [{"role": "user", "content": "Plan my Monday"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["pluralign"]["adapter"] == expected["alice_chat_after_adapter"]["adapter"]
    assert chat.json()["pluralign"]["prior"] is False
    with service.client("admin") as admin:
        jobs = admin.get("/admin/jobs")
        assert jobs.status_code == 200, jobs.text
        assert [(j["id"], j["kind"], j["state"]) for j in jobs.json()["jobs"]] == \
               [(j["id"], j["kind"], j["state"]) for j in expected["jobs"]["jobs"]]
        assert admin.get("/metrics").status_code == 200
        # the old release's audit report is in the dashboard's history (its job record names another folder)
        page = admin.get("/admin/dashboard")
        assert page.status_code == 200 and "No audit has been run yet" not in page.text
        assert 'id="worst-group-over-time"' in page.text
    assert httpx.get(service.url + "/health").status_code == 200
    # a DELETE removes everything of alice's, as today's DELETE does
    deleted = clients["default"].delete("/v1/users/alice")
    assert deleted.status_code == 200, deleted.text
    counts = deleted.json()["deleted"]
    assert counts["preferences"] == expected["users"]["default/alice"]["profile"]["counts"]["preferences"]
    assert counts["adapter_files"] > 0
    for path in ("", "/export"):
        assert clients["default"].get(f"/v1/users/alice{path}").status_code == 404
    assert clients["default"].get("/v1/users/alice/preferences").status_code == 404
    for c in clients.values():
        c.close()


@pytest.mark.parametrize("commit", ["b7168d1", pytest.param("2a4712d", marks=pytest.mark.slow)])
def test_an_older_releases_data_folder_serves_every_user_after_an_upgrade(upgraded, commit):
    expected, data, service = upgraded(commit)
    check_everything_is_there(expected, service)


def test_the_first_open_marks_the_tables_once_so_older_releases_refuse_them(tmp_path):
    """Today's store marks each table it opens with its schema version (2), once: both releases
    above refuse a table whose mark is not theirs ("has schema_version=2, this service expects 1;
    use another data folder or migrate it", their Store._open), so a rollback onto a folder today's
    code wrote stops at start rather than answering 400 for every user (2a4712d cannot read today's
    user rows: "unknown field `user_model`"). A second open commits nothing."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import SCHEMA_VERSION, Store

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "b7168d1" / "data", data)
    store = data / "lancedb"
    before = table_marks(store)
    assert {mark for mark, _ in before.values()} == {"1"}
    Store(str(store), MINILM_ID, 384)
    marked = table_marks(store)
    assert {mark for mark, _ in marked.values()} == {str(SCHEMA_VERSION)} != {"1"}
    Store(str(store), MINILM_ID, 384)
    assert table_marks(store) == marked  # the migration ran once: no commit at the second start


def test_a_table_a_newer_release_marked_is_refused_naming_what_to_do(tmp_path):
    """The other direction, for today's code: a folder a later release has opened is refused at
    start, naming the table, both versions and what to run, and nothing in it is changed."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import SCHEMA_VERSION, Store, StoreError

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "b7168d1" / "data", data)
    store = data / "lancedb"
    Store(str(store), MINILM_ID, 384)
    lancedb.connect(str(store)).open_table("users").to_lance().update_schema_metadata({"schema_version": str(SCHEMA_VERSION + 1)})
    before = table_marks(store)
    with pytest.raises(StoreError) as refused:
        Store(str(store), MINILM_ID, 384)
    words = str(refused.value)
    assert "`users`" in words and f"schema_version={SCHEMA_VERSION + 1}" in words and "newer" in words and "taken before the upgrade" in words
    assert table_marks(store) == before


def test_a_process_that_only_reads_an_older_releases_store_leaves_its_mark(tmp_path):
    """`pluralign train adapter --store` reads a store another process serves (`finish_purges=False`):
    run from the new release beside an older serve, it must not mark the tables, or that serve would
    refuse its own folder at its next start."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import Store

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "b7168d1" / "data", data)
    store = Store(str(data / "lancedb"), MINILM_ID, 384, finish_purges=False)
    assert len(store.preferences_for("default", "alice")[0]) == 10
    assert {mark for mark, _ in table_marks(data / "lancedb").values()} == {"1"}


def test_a_first_start_stopped_after_some_tables_were_marked_is_finished_by_the_next(tmp_path):
    """The marks go table by table, `preferences` first (the table every release opens first, so an
    earlier release already refuses the folder); the next start marks the rest and keeps the rows."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import SCHEMA_VERSION, Store

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "b7168d1" / "data", data)
    store = data / "lancedb"
    lancedb.connect(str(store)).open_table("preferences").to_lance().update_schema_metadata({"schema_version": str(SCHEMA_VERSION)})
    assert table_marks(store)["users"][0] == "1"
    opened = Store(str(store), MINILM_ID, 384)
    assert {mark for mark, _ in table_marks(store).values()} == {str(SCHEMA_VERSION)}
    assert len(opened.preferences_for("default", "alice")[0]) == 10


def test_replicas_started_together_on_an_older_releases_store_all_start(tmp_path):
    """Every replica of a shared store started at once on the new release (a rollout): each opens each
    table as the older release left it and adds its columns and its mark at the same moment. Lance
    refuses the second of two such commits ('Incompatible transaction: This UpdateConfig transaction is
    incompatible with concurrent transaction'): that replica's start failed with Lance's OSError. Now a
    replica whose commit lost takes the table as the other one left it, and both start."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import SCHEMA_VERSION, Store

    for trial in range(3):  # the race is lost in most tries: three make a miss unlikely
        data = tmp_path / f"data{trial}"
        shutil.copytree(FIXTURES / "b7168d1" / "data" / "lancedb", data)
        opened = at_once(*[partial(Store, str(data), MINILM_ID, 384, sync_seconds=1.0)] * 2)
        assert [s for s in opened if isinstance(s, BaseException)] == []
        assert {mark for mark, _ in table_marks(data).values()} == {str(SCHEMA_VERSION)}
        for store in opened:
            assert len(store.preferences_for("default", "alice")[0]) == 10
