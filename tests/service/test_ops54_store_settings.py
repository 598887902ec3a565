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


STORE_MISTAKES = {  # what is wrong -> how the start's one line begins
    "no such bucket": ("PLURALIGN_STORE_URI (setting store_uri): the store s3://no-such-bucket-54/start cannot be opened: "
                       "its bucket does not exist"),
    "endpoint down": "PLURALIGN_STORE_ENDPOINT (setting store_endpoint) = http://127.0.0.1:",
    "wrong keys": ("PLURALIGN_STORE_ACCESS_KEY_ID and PLURALIGN_STORE_SECRET_ACCESS_KEY (settings store_access_key_id, "
                   "store_secret_access_key): the store s3://pluralign-ops54c/start cannot be opened: the object store refused "
                   "the credentials"),
}


def _seconds(*argv: str) -> float:
    import subprocess
    import sys

    began = time.monotonic()
    subprocess.run([sys.executable, *argv], check=True, capture_output=True, timeout=300)
    return time.monotonic() - began


@pytest.mark.slow  # a real `pluralign serve` per case on moto: ~3-12 s each, by the machine's load (`make test-object-store`)
@pytest.mark.parametrize("wrong", STORE_MISTAKES)
def test_serve_tells_a_store_mistake_before_it_loads_its_models(tmp_path, wrong):
    """`pluralign serve` with the default models (SmolLM2 and MiniLM: the ~28 s of loading the brief measured) and a
    store it cannot use: the one line naming the setting, exit 3, nothing made, within seconds: about what this machine
    takes now to import lancedb (which any open of the store needs) and answer, not the models' load. Before: the store
    was opened only once the models had loaded, so the same line came after them (66 s here at load 12, against 9.5 s
    now; test_break28's start faults, on a tiny generator, took 10-20 s each)."""
    from tests.s3 import FaultyProxy, _free_port
    from tests.service.test_break25b_failed_start import last_line, serve, snapshot

    with S3Server("pluralign-ops54c") as s3, FaultyProxy(s3.endpoint) as proxy:
        env = s3.env("start")
        if wrong == "no such bucket":
            env["PLURALIGN_STORE_URI"] = "s3://no-such-bucket-54/start"
        elif wrong == "endpoint down":
            env["PLURALIGN_STORE_ENDPOINT"] = f"http://127.0.0.1:{_free_port()}"  # nothing listens: refused
        else:
            env["PLURALIGN_STORE_ENDPOINT"] = proxy.endpoint
            proxy.fault = lambda method, path, headers: (403, "InvalidAccessKeyId")
        lancedb_s = _seconds("-c", "import lancedb")  # the machine's pace now (2-3 s idle; 6-8 s at load 12)
        data = tmp_path / "data"
        began = time.monotonic()
        result = serve(tmp_path, data, PLURALIGN_STORE_RETRIES="1", PLURALIGN_STORE_TIMEOUT_S="2", **env)
        took = time.monotonic() - began
    assert result.returncode == 3, result.stderr[-3000:]
    line = last_line(result)
    assert line.startswith(f"pluralign: error: {STORE_MISTAKES[wrong]}"), line
    assert [x for x in result.stderr.strip().splitlines() if "warn" not in x.lower()] == [line], result.stderr[-3000:]
    assert snapshot(data) is None  # no data folder made
    # the interpreter, the settings, lancedb's import and the store's answer (a refused port: 2 tries within 2 s)
    assert took < 3 * lancedb_s + 5, f"{took:.1f} s (lancedb's import: {lancedb_s:.1f} s): {result.stderr[-2000:]}"
    print(f"{wrong}: {took:.1f} s (lancedb's import {lancedb_s:.1f} s)")


@pytest.mark.slow  # moto's S3 and DynamoDB, a store made on them: ~5 s (`make test-object-store`)
def test_reaching_an_s3_ddb_store_asks_its_commit_table_and_writes_nothing(monkeypatch):
    """`reach` (what `serve` asks before its models load) on an `s3+ddb://` store that holds tables opens one, which asks
    the DynamoDB commit table for its latest version: a table gone is told as `Store` tells it (`commit-store`), and a
    store it can reach is left as it was (no object written)."""
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.location import reach
    from tests.service.test_ops53_store_settings import _commit_table

    with S3Server("pluralign-ops54d") as s3:
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint)
        _commit_table(s3.endpoint, "ops54-commits", make=True)
        uri = "s3+ddb://pluralign-ops54d/ddb?ddbTableName=ops54-commits"
        Store(uri, "enc", 4, storage_options=s3.options)
        objects = lambda: sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", []))  # noqa: E731
        before = objects()
        reach(uri, s3.options)
        assert objects() == before
        _commit_table(s3.endpoint, "ops54-commits", make=False)
        with pytest.raises(StoreUnavailable) as caught:
            reach(uri, {**s3.options, "client_max_retries": "0"})
    assert (caught.value.problem, caught.value.action) == ("commit-store", "opened"), str(caught.value)
    assert caught.value.detail.startswith("DynamoDB answered ResourceNotFoundException"), caught.value.detail


def test_a_jobs_store_environment_carries_the_settings_and_the_variables_lance_reads_but_no_machines_identity(monkeypatch):
    """What a job's worker is given (`Settings.store_environment`, `RunnerConfig.env`), wherever it runs: the store
    settings as variables, request bounds included, and the service's own `AWS_ALLOW_HTTP`, `DYNAMODB_ENDPOINT`, keys
    and region; not the pod's identity (a profile, a web-identity token file), which a Ray node has its own of."""
    from pluralign.store.location import store_environment
    from service.settings import Settings

    environ = {"AWS_ALLOW_HTTP": "true", "DYNAMODB_ENDPOINT": "http://ddb:8000", "AWS_REGION": "eu-west-1",
               "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_PROFILE": "ops", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token",
               "AWS_ROLE_ARN": "arn:aws:iam::1:role/pluralign", "HOME": "/root", "AWS_ENDPOINT": ""}
    options = {"aws_endpoint": "http://minio:9000", "aws_region": "us-east-1", "timeout": "10000ms"}
    assert store_environment("s3+ddb://b/p?ddbTableName=t", options, environ) == {
        "AWS_ALLOW_HTTP": "true", "DYNAMODB_ENDPOINT": "http://ddb:8000", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIAENV",
        "PLURALIGN_STORE_ENDPOINT": "http://minio:9000", "PLURALIGN_STORE_REGION": "us-east-1"}
    for name in environ:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DYNAMODB_ENDPOINT", "http://ddb:8000")
    settings = Settings.load({}, store_uri="s3+ddb://b/p?ddbTableName=t", store_endpoint="https://s3.example",
                             store_timeout_s=2.5, store_retries=1, store_access_key_id="id", store_secret_access_key="secret")
    assert settings.store_environment() == {
        "DYNAMODB_ENDPOINT": "http://ddb:8000", "PLURALIGN_STORE_ENDPOINT": "https://s3.example", "PLURALIGN_STORE_ACCESS_KEY_ID": "id",
        "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret", "PLURALIGN_STORE_TIMEOUT_S": "2.5", "PLURALIGN_STORE_RETRIES": "1",
        "PLURALIGN_STORE_REGION": "", "PLURALIGN_STORE_ALLOW_HTTP": "false"}  # unset: empty, so a node's own is not read
