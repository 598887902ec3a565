"""Review of session ops54 (the store's settings reach every command and job; `serve` reaches the store first), tried
as an operator does: the real CLI against moto's S3 on loopback (`tests/s3.py`)."""

from __future__ import annotations

import time

import pytest

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


def test_a_folder_stores_settings_hand_no_object_store_keys_to_the_jobs(tmp_path, monkeypatch):
    """A service whose tables are a folder, with object-store keys about (PLURALIGN_STORE_* set for `audit --store
    s3://...` on that machine, or the pod's AWS_* keys): its storage options are empty, as `Settings.storage_options`
    and `training.common.store_options` say ("empty for a folder"), and its jobs' workers (a Ray node's too) are handed
    the request bounds alone, no key. Before (ops54): the options held the endpoint and keys, and
    `Settings.store_environment`, what every job's worker is given, carried PLURALIGN_STORE_SECRET_ACCESS_KEY and
    AWS_SECRET_ACCESS_KEY to every node, for a store none of them reads over S3. An object store's are unchanged."""
    from service.settings import Settings
    from training.common import store_options

    for name in ("PLURALIGN_STORE_URI", "PLURALIGN_CONFIG", "AWS_ALLOW_HTTP", "DYNAMODB_ENDPOINT", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    keys = {"PLURALIGN_STORE_ENDPOINT": "https://s3.example", "PLURALIGN_STORE_REGION": "eu-west-1",
            "PLURALIGN_STORE_ACCESS_KEY_ID": "id", "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret",
            "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_REGION": "eu-west-1"}
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    settings = Settings.load(data_dir=str(tmp_path / "data"))
    assert settings.storage_options == {} and store_options(str(tmp_path / "data" / "lancedb")) == {}
    assert settings.store_environment() == {"PLURALIGN_STORE_TIMEOUT_S": "10", "PLURALIGN_STORE_RETRIES": "3"}
    on_s3 = Settings.load(data_dir=str(tmp_path / "data"), store_uri="s3://bucket/pluralign")
    assert on_s3.storage_options["aws_secret_access_key"] == "secret" and store_options("s3://bucket/other")["aws_region"] == "eu-west-1"
    assert on_s3.store_environment() == {
        "PLURALIGN_STORE_ENDPOINT": "https://s3.example", "PLURALIGN_STORE_REGION": "eu-west-1", "PLURALIGN_STORE_ACCESS_KEY_ID": "id",
        "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret", "AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_REGION": "eu-west-1", "PLURALIGN_STORE_TIMEOUT_S": "10", "PLURALIGN_STORE_RETRIES": "3",
        "PLURALIGN_STORE_ALLOW_HTTP": "false"}


def test_reaching_an_empty_s3_ddb_store_asks_its_commit_table(monkeypatch):
    """`reach` (what `serve` asks before its models load) on an `s3+ddb://` store with no tables yet (a first start):
    its DynamoDB commit table is asked too, so a table never made is told then, in `Store`'s words; one made leaves
    nothing written (no object, no commit row). Before: a store with no tables was only listed, so the missing table
    was told by the start's `Store` after the models had loaded (ops54's report and docs/operations.md named the gap)."""
    import boto3

    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.location import reach
    from tests.service.test_ops53_store_settings import _commit_table

    with S3Server("pluralign-rv54d") as s3:
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint)
        uri = "s3+ddb://pluralign-rv54d/first?ddbTableName=rv54-commits"
        with pytest.raises(StoreUnavailable) as caught:
            reach(uri, {**s3.options, "client_max_retries": "0"})
        _commit_table(s3.endpoint, "rv54-commits", make=True)
        assert reach(uri, s3.options) == frozenset()
        assert reach(s3.uri("plain"), s3.options) == frozenset()  # a plain s3:// store with no tables: nothing to ask
        ddb = boto3.client("dynamodb", endpoint_url=s3.endpoint, region_name=s3.region, aws_access_key_id=s3.access_key,
                           aws_secret_access_key=s3.secret_key)
        rows = ddb.scan(TableName="rv54-commits")["Items"]
        written = s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    assert (caught.value.problem, caught.value.action) == ("commit-store", "opened"), str(caught.value)
    assert caught.value.detail.startswith("DynamoDB answered ResourceNotFoundException"), caught.value.detail
    assert rows == [] and written == []


@pytest.mark.slow  # a real `pluralign serve` (default models, which it must not load) on moto: ~6-15 s by the load (`make test-object-store`)
def test_a_first_serve_on_s3_ddb_without_its_commit_table_stops_before_its_models(tmp_path, monkeypatch):
    """deploy/README.md's `s3+ddb://` store for several writers, its first start, with the DynamoDB commit table not
    made yet (or misnamed): the start's one line names the table, exit 3, nothing made, in about the time lancedb's
    import takes, as for the other store mistakes (test_ops54_store_settings). Before: ops54's check listed the empty
    store and let the start go on; `Store` met the missing table once SmolLM2 and MiniLM had loaded (~30-60 s)."""
    from tests.service.test_break25b_failed_start import last_line, serve, snapshot
    from tests.service.test_ops54_store_settings import _seconds

    with S3Server("pluralign-rv54e") as s3:
        env = {**s3.env("first"), "PLURALIGN_STORE_URI": "s3+ddb://pluralign-rv54e/first?ddbTableName=rv54-never-made",
               "DYNAMODB_ENDPOINT": s3.endpoint, "PLURALIGN_STORE_RETRIES": "1", "PLURALIGN_STORE_TIMEOUT_S": "2"}
        lancedb_s = _seconds("-c", "import lancedb")  # the machine's pace now
        data = tmp_path / "data"
        began = time.monotonic()
        result = serve(tmp_path, data, **env)
        took = time.monotonic() - began
    assert result.returncode == 3, result.stderr[-3000:]
    line = last_line(result)
    assert line.startswith("pluralign: error: PLURALIGN_STORE_URI (setting store_uri): its DynamoDB commit table "
                           "`rv54-never-made` (ddbTableName), at DYNAMODB_ENDPOINT = "), line
    assert "ResourceNotFoundException" in line, line
    assert snapshot(data) is None
    assert took < 3 * lancedb_s + 5, f"{took:.1f} s (lancedb's import: {lancedb_s:.1f} s): {result.stderr[-2000:]}"


@pytest.mark.slow  # ~2.5 s a case: Lance asks a refusing store 6 times in ~2 s whatever the retries (`make test-object-store`)
@pytest.mark.parametrize("answer", [(403, "InvalidAccessKeyId"), (503, "SlowDown")])
def test_tenants_users_on_an_object_store_it_cannot_read_says_so_without_the_key(tmp_path, monkeypatch, capsys, answer):
    """`pluralign tenants users` (a command ops54's docs list among those reaching the store with the service's
    settings) on an S3 store refusing the keys, or throttling: one line in the store's words, as `audit --store` and
    `serve` give them, what S3 repeated of the request hidden. Before: Lance's words as they came, "Invalid input,
    Failed to connect to namespace: IO { ... <AWSAccessKeyId>AKIA...</AWSAccessKeyId> ... location: Location { file:
    \"/root/.cargo/...\" ...", the access key id in the operator's terminal and logs."""
    from tests.s3 import FaultyProxy

    key_id = "AKIAREVIEWOPS54TENANTS"
    with FaultyProxy("127.0.0.1:9") as proxy:  # answers every request itself: no S3 behind it is reached
        proxy.fault = lambda method, path, headers: answer
        for name, value in {"PLURALIGN_STORE_URI": "s3://pluralign-rv54t/store", "PLURALIGN_STORE_ENDPOINT": proxy.endpoint,
                            "PLURALIGN_STORE_ALLOW_HTTP": "true", "PLURALIGN_STORE_REGION": "us-east-1", "PLURALIGN_STORE_RETRIES": "0",
                            "PLURALIGN_STORE_ACCESS_KEY_ID": key_id, "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret"}.items():
            monkeypatch.setenv(name, value)
        (tmp_path / "data").mkdir()
        code, out, err = cli(capsys, "tenants", "--data-dir", str(tmp_path / "data"), "users", "--tenant", "acme")
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pluralign: error: the store at s3://pluralign-rv54t/store cannot be read: "), err
    problem = {403: "the object store refused the credentials", 503: "the object store did not answer in time"}[answer[0]]
    assert problem in lines[0], lines[0]
    assert key_id not in err and ".cargo" not in err, err
