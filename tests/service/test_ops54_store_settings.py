"""Session ops54: an object store's settings (`PLURALIGN_STORE_*`, deploy/README.md) reach every command that opens the
store the same way (`training.common.store_options`), and `pluralign serve` checks the store before its models load.
Against moto's S3 on loopback (`tests/s3.py`)."""

from __future__ import annotations

import json
import time

import pytest

from tests.s3 import S3Server


def _stored_comparisons(s3: S3Server, prefix: str, user: str, n: int, segment: str | None = None) -> None:
    """`n` comparisons of `user` (tenant `default`) in a store under `prefix`, made for MiniLM's vectors (what `train
    adapter --store`'s default `--encoder` opens it for; the vectors are not read by it)."""
    import numpy as np

    from pluralign.embed.named import encoder_identity
    from pluralign.store import Store
    from pluralign.store.tables import StoredPreference

    identity = encoder_identity("minilm")
    store = Store(s3.uri(prefix), identity.encoder_id, identity.dim, storage_options=s3.options)
    rows = [StoredPreference(tenant="default", user_id=user, pref_id=f"{user}-{i}", prompt=f"Which drink, {i}?",
                             chosen=f"Tea {i}.", rejected=f"Coffee {i}.", kind="comparison", created_at=time.time() + i * 1e-3,
                             attributes={"segment": segment} if segment else {})
            for i in range(n)]
    vectors = np.ones((n, identity.dim), np.float32)
    store.add_preferences(rows, vectors, vectors, vectors)


@pytest.mark.slow  # moto, MiniLM and a tiny base model loaded, one training step: ~10 s (`make test-object-store`)
def test_train_adapter_reads_an_object_store_with_the_settings_serve_and_audit_honour(tmp_path, monkeypatch, capsys, tiny_generator_dir):
    """`pluralign train adapter --store s3://...` with the store's `PLURALIGN_STORE_*` settings, as an operator sets them
    for `serve` and `audit --store`. Before: the command opened the store with no storage options (`Store(uri, ...)`), so
    Lance went to AWS's own endpoint with no keys, never to the one set, and the adapter was not trained."""
    from tests.unit.clitools import cli

    with S3Server("pluralign-ops54") as s3:
        _stored_comparisons(s3, "adapter", "alice", 6)
        for name, value in s3.env("unused").items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("PLURALIGN_STORE_URI")  # the command's --store names the store; the service's setting may be unset
        monkeypatch.setenv("PLURALIGN_STORE_TIMEOUT_S", "2")  # before: object_store's own bounds, minutes on AWS's endpoint
        monkeypatch.setenv("PLURALIGN_STORE_RETRIES", "0")
        registry = tmp_path / "adapters"
        code, out, err = cli(capsys, "train", "adapter", "--user", "alice", "--store", s3.uri("adapter"), "--registry", str(registry),
                             "--base", str(tiny_generator_dir), "--steps", "1", "--batch-size", "1")
    assert code == 0, err[-3000:]
    result = json.loads(out)
    assert result["user"] == "alice" and result["comparisons"] + result["held_out"] == 6, result
    assert (registry / "default" / "alice").is_dir()


def test_train_adapter_at_a_plain_http_endpoint_is_refused_naming_the_setting_before_any_model_loads(capsys, monkeypatch):
    """The same refusal as `audit --store`'s (tests/unit/test_reviewops53_store.py), now that `train adapter --store`
    reaches the store with the same settings. Before: it loaded MiniLM, then ended in Lance's words (`BadScheme`)."""
    from tests.unit.clitools import cli

    for name in ("AWS_ALLOW_HTTP", "PLURALIGN_STORE_ALLOW_HTTP", "PLURALIGN_STORE_URI", "PLURALIGN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLURALIGN_STORE_ENDPOINT", "http://127.0.0.1:9")
    code, out, err = cli(capsys, "train", "adapter", "--user", "alice", "--store", "s3://bucket/pluralign", "--steps", "1")
    assert code == 2 and out == "", err
    assert err.strip().splitlines() == [
        "pluralign: error: --store s3://bucket/pluralign: PLURALIGN_STORE_ENDPOINT 'http://127.0.0.1:9' is plain http, and the "
        "object store sends no request to an http:// endpoint unless told it may: set PLURALIGN_STORE_ALLOW_HTTP=true (a local "
        "S3-compatible server: MinIO, moto), or give the endpoint as https://"], err


@pytest.mark.slow  # moto and the audit's imports: ~10 s (`make test-object-store`)
def test_audit_store_reaches_the_store_with_the_config_files_settings_as_serve_does(tmp_path, monkeypatch, capsys):
    """`pluralign audit --store s3://...` with the store's settings in the PLURALIGN_CONFIG file (`store_endpoint = ...`),
    as `serve` takes them. Before: `audit --store` read the `PLURALIGN_STORE_*` variables alone (`options_from_env`),
    so the file's endpoint, region and keys were not used and the audit went to AWS's own endpoint ("Failed to resolve
    region for bucket"). `store_options` is `Settings.storage_options_for`: a variable still wins over the file."""
    from service.settings import Settings
    from tests.unit.clitools import cli

    for name in ("AWS_ALLOW_HTTP", "PLURALIGN_STORE_ALLOW_HTTP", "PLURALIGN_STORE_URI", "PLURALIGN_STORE_ENDPOINT",
                 "PLURALIGN_STORE_REGION", "PLURALIGN_STORE_TIMEOUT_S", "PLURALIGN_STORE_RETRIES",
                 "PLURALIGN_STORE_ACCESS_KEY_ID", "PLURALIGN_STORE_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with S3Server("pluralign-ops54b") as s3:
        _stored_comparisons(s3, "audit", "alice", 3, segment="a")
        _stored_comparisons(s3, "audit", "bob", 2, segment="b")
        config = tmp_path / "pluralign.toml"
        config.write_text(f'store_endpoint = "{s3.endpoint}"\nstore_allow_http = true\nstore_region = "{s3.region}"\n'
                          f'store_access_key_id = "{s3.access_key}"\nstore_secret_access_key = "{s3.secret_key}"\n'
                          'store_timeout_s = 2.5\nstore_retries = 1\n')
        monkeypatch.setenv("PLURALIGN_CONFIG", str(config))
        code, out, err = cli(capsys, "audit", "--store", s3.uri("audit"), "--group-by", "segment", "--json")
        assert code == 0, err[-3000:]
        assert json.loads(out)["comparisons"] == 5
        from training.common import store_options

        uri = s3.uri("audit")
        assert store_options(uri) == {**s3.options, "timeout": "2500ms", "connect_timeout": "2500ms", "client_max_retries": "1",
                                      "client_retry_timeout": "3"}
        assert store_options(uri) == Settings.load(store_uri=uri).storage_options  # serve's, for its PLURALIGN_STORE_URI
        monkeypatch.setenv("PLURALIGN_STORE_REGION", "us-east-2")  # a variable wins over the file, for commands as for serve
        assert store_options(uri)["aws_region"] == "us-east-2"
