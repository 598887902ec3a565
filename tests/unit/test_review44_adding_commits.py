"""Review of replicas44: which commits only added rows (`pluralign.store.commits.AddingCommits`), what lets a replica
check a cached history by a count. A version whose operation is unknown, unreadable or not one that only adds rows
counts as one that may have changed them; each version is read once."""

from __future__ import annotations

from pluralign.store import commits
from pluralign.store.commits import MAX_COMMITS_READ, AddingCommits


def test_only_commits_that_add_rows_let_a_count_tell_and_each_version_is_read_once(monkeypatch):
    operations = {2: "Append", 3: "CreateIndex", 4: "Rewrite", 5: "Delete", 6: "Append", 7: None, 8: "BaseOperation"}
    asked = []

    def operation(version):
        asked.append(version)
        if version == 9:
            raise OSError("Not found: _versions/9.manifest")  # removed by a purge of old versions
        return operations.get(version, "Append")

    seen = AddingCommits(operation)
    assert seen.only_added(1, 4) and seen.only_added(3, 3)
    assert not seen.only_added(4, 5) and seen.only_added(5, 6)  # the Delete is before 5: not between
    assert not seen.only_added(6, 7) and not seen.only_added(7, 8) and not seen.only_added(8, 9)
    assert sorted(asked) == list(range(2, 10))  # each once
    assert not seen.only_added(6, 5)  # backwards: never the same rows
    assert not seen.only_added(10, 10 + MAX_COMMITS_READ + 1) and len(asked) == 8  # too many to read: not read
    monkeypatch.setattr(commits, "KEPT", 3)
    assert seen.only_added(10, 12) and len(seen._adding) == 3  # the oldest versions' operations forgotten
