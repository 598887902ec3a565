"""Review of session ops54 (the store's settings reach every command and job; `serve` reaches the store first), tried
as an operator does: the real CLI against moto's S3 on loopback (`tests/s3.py`)."""

from __future__ import annotations

from tests.s3 import S3Server
from tests.unit.clitools import cli


def test_train_adapter_at_a_mistyped_object_store_prefix_is_refused_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`pluralign train adapter --store s3://bucket/typo` (ops54 made the URI form reach the store with the service's
    settings, and named it in the help): a prefix holding no pluralign store is refused in `audit --store`'s words,
    naming --store, before any model loads, and nothing is written there. Before: `Store` opened it, which made the
    store's six tables at the mistyped prefix (13 objects), after MiniLM had loaded, and then said "no comparisons of
    user 'alice' in the store at s3://.../typo", leaving an empty store that the next `audit --store` of that prefix
    took for the service's."""
    with S3Server("pluralign-rv54a") as s3:
        for name, value in s3.env("unused").items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("PLURALIGN_STORE_URI")  # the command's --store names the store
        monkeypatch.setenv("PLURALIGN_STORE_RETRIES", "0")
        code, out, err = cli(capsys, "train", "adapter", "--user", "alice", "--store", s3.uri("typo"),
                             "--registry", str(tmp_path / "adapters"), "--encoder", "no-such-encoder", "--steps", "1")
        written = s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    assert code == 2 and out == "", err
    assert err.strip().splitlines() == [
        "pluralign: error: --store s3://pluralign-rv54a/typo: no pluralign store there (no `preferences` table): give the "
        "URI the service's PLURALIGN_STORE_URI names, with the PLURALIGN_STORE_* settings it reaches it by"], err
    assert written == []  # no table made at the typo
    assert not (tmp_path / "adapters").exists()
