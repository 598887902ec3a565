"""Session 59 (break): a hostile tenant against the running service, driven over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pluralign.user import FEATURE_NAMES
from service.users import services
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("break59-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, adapter_every=1_000_000)
    with server:
        yield service


def test_an_export_reads_a_long_stated_history_a_page_at_a_time(svc, monkeypatch):
    """A user's stated preferences keep every version (`stated_changes`, up to 16 changes each, 2^63 versions), and the
    export writes them all on its `user` line. It read them with one query and built that line whole: a tenant's user
    who changed their mind a million times (a PATCH of every feature, over and over: 7 changes a version) made each of
    its exports hold every change at once (580 KB of JSON for 1,000 versions here; Python's dicts several times that),
    in the memory every tenant's requests share, while the preferences and chats on the lines after it are read 1,000
    rows at a time. Now the history is read `STATED_VERSIONS_PER_READ` versions at a time and sent as it is read: the
    rows each read returns are counted (the page made small here)."""
    versions, per_read = 12, 5
    user = "mind-changer59"
    with svc.client() as c:
        for v in range(1, versions + 1):
            direction = "more" if v % 2 else "less"
            r = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {f: direction for f in FEATURE_NAMES}})
            assert r.status_code == 200, r.text
        read = []
        stated_changes = svc.runtime.store.stated_changes

        def counted(*args, **kwargs):
            rows = stated_changes(*args, **kwargs)
            read.append(len(rows))
            return rows

        monkeypatch.setattr(services, "STATED_VERSIONS_PER_READ", per_read, raising=False)  # absent before the fix
        monkeypatch.setattr(svc.runtime.store, "stated_changes", counted)
        r = c.get(f"/v1/users/{user}/export")
    assert r.status_code == 200, r.text
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0]["type"] == "user"
    stated = lines[0]["stated"]
    assert stated["version"] == versions
    changes = [(c["version"], c["feature"], c["direction"]) for c in stated["history"]]
    assert sorted(changes) == sorted((v, f, "more" if v % 2 else "less") for v in range(1, versions + 1) for f in FEATURE_NAMES)
    assert [v for v, _, _ in changes] == sorted(v for v, _, _ in changes)  # oldest first
    assert sum(read) == versions * len(FEATURE_NAMES)
    assert max(read) <= per_read * len(FEATURE_NAMES), f"rows of stated changes read at once: {read}"


def test_a_users_labels_are_bounded_as_one_feedbacks_are(svc):
    """A feedback carries at most `max_attributes` labels (32), and the user's row kept every label any of their
    feedback ever carried: a tenant sending feedback of 32 new label names each time grew one users row without bound
    (20 such feedbacks of 200-character values: 640 labels, a profile of 139 KB; 10,000 of them: 100 MB), read whole by
    each of the user's chats, profile reads and refits, on the threads and memory every tenant shares. Now the row keeps
    the `max_attributes` labels given last (the latest value of each)."""
    user = "labeller59"
    cap = svc.runtime.settings.max_attributes
    with svc.client() as c:
        for i in range(3):
            labels = {"group": f"g{i}", **{f"k{i}_{j}": "v" * 200 for j in range(cap - 1)}}
            body = {"type": "comparison", "user": user, "prompt": f"Q{i}?", "chosen": "Yes.", "rejected": "No.", "attributes": labels}
            assert c.post("/v1/feedback", json=body).status_code == 201
        attributes = c.get(f"/v1/users/{user}").json()["attributes"]
    assert len(attributes) <= cap, f"{len(attributes)} labels held for the user (a feedback takes {cap})"
    assert attributes == labels  # the last feedback's: every one of its labels, `group` at its latest value


def rows_scanned(monkeypatch, table: str) -> list[int]:
    """The rows Lance scans (its plan's `rows_scanned`, summed over the plan) for each read of the store's table `table`
    from now on: [per read]."""
    from lancedb.query import LanceEmptyQueryBuilder

    scanned: list[int] = []
    to_arrow = LanceEmptyQueryBuilder.to_arrow

    def counted(self, *args, **kwargs):
        if self._table.name == table:
            scanned.append(sum(int(n) for n in re.findall(r"rows_scanned=(\d+)", self.analyze_plan())))
        return to_arrow(self, *args, **kwargs)

    monkeypatch.setattr(LanceEmptyQueryBuilder, "to_arrow", counted)
    return scanned


def test_a_patch_of_stated_preferences_reads_the_current_version_only(svc, monkeypatch):
    """scale62: each PATCH of a user's stated preferences looks whether the changes table holds the version their row
    holds (a stop between the row's write and the table's leaves it in the row only: `_store_missing_changes`). The
    table was indexed by owner alone, so Lance read the version of every row of the user's history to find that
    version's: the thousandth PATCH scanned a thousand rows. Now `version` has an index too (`RANGE_INDEXED`): the 7th
    PATCH scans what the 2nd did. Every version is still kept and read (the export above reads them all)."""
    user, store = "mind-changer62", svc.runtime.store
    scanned = rows_scanned(monkeypatch, "stated_changes")
    with svc.client() as c:

        def patch(v: int, indexed: bool = False) -> int:
            """PATCH the user from version `v - 1` to `v`; `indexed`: their rows indexed first, as the compaction the
            service runs every so many writes leaves them. Returns the rows scanned for it."""
            if indexed:
                store.compact()
            scanned.clear()
            r = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": "more" if v % 2 else "less"}})
            assert r.status_code == 200 and r.json()["version"] == v, r.text
            return sum(scanned)

        patch(1)
        second = patch(2, indexed=True)
        for v in range(3, 7):
            patch(v)
        assert patch(7, indexed=True) == second, f"the 7th PATCH scanned {sum(scanned)} rows of the user's stated changes, the 2nd {second}"
        page = c.get(f"/v1/users/{user}/stated-preferences?limit=100").json()
    assert [h["version"] for h in page["history"]] == list(range(1, 8)) and page["next_before"] is None


def test_a_delete_forgets_a_users_texts_a_batch_at_a_time_and_a_stop_between_batches_is_finished(svc, monkeypatch):
    """scale62: a user's DELETE forgets the vectors of every text of theirs from the embedding caches, and read them all
    in one read first (`Store.texts_of`): a user with a very large history made one DELETE hold every text of it at
    once. Now they are read a batch of rows at a time (`Store.texts_in_batches`, `TEXT_ROWS_PER_READ`, 2 here) and each
    batch forgotten as it is read: the texts handed to the caches at once, and the rows Lance hands over at once, are
    counted. A DELETE stopped between two batches (the process killed) keeps its journal entry, and the next pass
    (`UnfinishedDeletes`, as at the next start) forgets them all: the rows still name them."""
    from lancedb.query import LanceEmptyQueryBuilder

    from pluralign.embed.cache import text_key
    from pluralign.store import tables
    from service.users.journal import JOURNAL_FOLDER
    from tests.service.test_break20_delete import give_comparisons
    from tests.service.test_delete_journal import wait_until
    from tests.service.test_delete_stopped import Stopped

    rt, user, per_read, n = svc.runtime, "hoarder62", 2, 5
    monkeypatch.setattr(tables, "TEXT_ROWS_PER_READ", per_read, raising=False)
    with svc.client() as c:
        give_comparisons(c, user, "tea", "hoard62", n=n)
        assert c.get(f"/v1/users/{user}/preferences").json()["total"] == n  # stored (read through the table)
    texts = {t for i in range(n) for t in (f"A drink for morning {i}? hoard62", f"Some tea, number {i}. hoard62", f"Some coffee, number {i}.")}
    read_at_once: list[int] = []  # rows of the preferences table with their texts, each whole read or batch Lance handed over
    to_arrow, to_batches = LanceEmptyQueryBuilder.to_arrow, LanceEmptyQueryBuilder.to_batches

    def texts_read(self, rows) -> None:
        if self._table.name == "preferences" and "prompt" in rows.schema.names:
            read_at_once.append(rows.num_rows)

    def whole(self, *args, **kwargs):
        rows = to_arrow(self, *args, **kwargs)
        texts_read(self, rows)
        return rows

    def batched(self, *args, **kwargs):
        reader = to_batches(self, *args, **kwargs)
        return pa.RecordBatchReader.from_batches(reader.schema, (texts_read(self, b) or b for b in reader))

    monkeypatch.setattr(LanceEmptyQueryBuilder, "to_arrow", whole)
    monkeypatch.setattr(LanceEmptyQueryBuilder, "to_batches", batched)
    handed: list[list[bytes]] = []  # the keys handed to the caches, each time
    forget = rt.owed_vectors.forget

    def killed_at_the_second(keys):
        handed.append(list(keys))
        if len(handed) == 2:
            raise Stopped
        return forget(keys)

    monkeypatch.setattr(rt.owed_vectors, "forget", killed_at_the_second)
    try:
        services.delete(rt, "acme", user)
    except Stopped:
        pass
    assert len(handed) == 2, f"the texts of {n} rows handed to the caches at once: {[len(k) for k in handed]}"
    assert [e.user_id for e in rt.delete_journal.pending()] == [user]
    services.UnfinishedDeletes(rt, 3600).run_once()  # the next start's pass (this service's own may take it first)
    journal = Path(rt.settings.data_dir) / JOURNAL_FOLDER
    assert wait_until(lambda: not any(journal.iterdir())), list(journal.iterdir())  # every step ran
    assert rt.store.count_preferences("acme", user) == 0
    assert {text_key(t) for t in texts} <= {k for keys in handed[2:] for k in keys}, "a text of theirs was not forgotten"
    assert max(len(keys) for keys in handed) <= 3 * per_read, [len(keys) for keys in handed]
    assert len(handed[2:]) == -(-n // per_read), [len(keys) for keys in handed]  # full batches: the caches cleaned 3 times
    assert read_at_once and max(read_at_once) <= per_read, f"rows of theirs with their texts read at once: {read_at_once}"


@pytest.mark.parametrize("bound", ["rows", "bytes"])
def test_a_tenants_removal_reads_a_batch_of_many_rows_texts_a_batch_at_a_time(svc, monkeypatch, bound):
    """review scale62: a batch of a tenant's removal (`delete_batch`) whose users' rows are more than one read's
    (`TEXT_ROWS_PER_READ`, 2 here; or `TEXT_BYTES_PER_READ`, two of these rows' texts) reads their texts in its turn a
    batch at a time, as a user's DELETE does, each forgotten as it is read; not in one read before its turn, handed to
    the caches whole (that read stays for a batch of few rows of short texts)."""
    from pluralign.embed.cache import text_key
    from pluralign.store import tables
    from tests.service.test_break20_delete import give_comparisons

    rt, users, per_read = svc.runtime, [f"heap62a{bound}", f"heap62b{bound}"], 2
    if bound == "rows":
        monkeypatch.setattr(tables, "TEXT_ROWS_PER_READ", per_read)
        monkeypatch.setattr(services, "TEXT_ROWS_PER_READ", per_read)
    else:  # a row's texts: ~100 bytes
        monkeypatch.setattr(tables, "TEXT_BYTES_PER_READ", 250)
    with svc.client() as c:
        for user in users:
            give_comparisons(c, user, "tea", f"{user} removed", n=2)
    rt.ingest.flush()
    handed: list[list[bytes]] = []  # the keys handed to the caches, each time
    forget = rt.owed_vectors.forget

    def counted(keys):
        handed.append(list(keys))
        return forget(keys)

    monkeypatch.setattr(rt.owed_vectors, "forget", counted)
    assert services.delete_batch(rt, "acme", users)["preferences"] == 4
    texts = {f"A drink for morning {i}? {u} removed" for i in range(2) for u in users}
    assert {text_key(t) for t in texts} <= {k for keys in handed for k in keys}, "a text of theirs was not forgotten"
    assert max(len(keys) for keys in handed) <= 3 * per_read, f"the texts of 4 rows handed to the caches at once: {[len(k) for k in handed]}"
