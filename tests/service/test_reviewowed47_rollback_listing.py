"""docs/operations.md, "Rolling back": the snippet an operator runs to list the users DELETEd since the copy taken
before the upgrade (restored, they are back), run as written in the document on the data folders two earlier releases
wrote (tests/fixtures/upgrade/, the releases the document names as ones to go back to) (review of owed47)."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import REPO
from tests.service.test_upgrade29 import FIXTURES


def listing() -> str:
    """The document's Python block that lists them (the one reading `data.new`, the folder moved aside)."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "operations.md").read_text(), re.S)
    (block,) = [b for b in blocks if "data.new" in b]
    return block


@pytest.mark.parametrize("commit", ["2a4712d", "b7168d1"])
def test_the_rollback_listing_names_the_users_deleted_since_the_copy(tmp_path, monkeypatch, capsys, commit):
    """Until review owed47 the snippet opened `stated_changes` in both folders: the copy of a release before that table
    (2a4712d, which the document names) has none, and the snippet stopped with `Table 'stated_changes' was not found`,
    listing no one, so the deleted users restored with the copy stayed. Now it reads the tables each folder has."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import Store

    shutil.copytree(FIXTURES / commit / "data", tmp_path / "data")  # the copy taken before the upgrade, put back
    shutil.copytree(FIXTURES / commit / "data", tmp_path / "data.new")  # the folder the new release served, moved aside
    store = Store(str(tmp_path / "data.new" / "lancedb"), MINILM_ID, 384)  # upgraded at its first open
    assert sum(store.delete_user("acme", "dave").values()) > 0  # DELETEd under the new release
    monkeypatch.chdir(tmp_path)
    exec(compile(listing(), "docs/operations.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "[('acme', 'dave')]"
