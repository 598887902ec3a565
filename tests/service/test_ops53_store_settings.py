"""An operator's object-store settings, as deploy/README.md gives them, mistyped the way a first try does (session
ops53): each refused at start with one line naming the setting and what to do, nothing left in the data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MINIO = {"PLURALIGN_STORE_URI": "s3://pluralign-test/pluralign", "PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:9000"}


def test_a_plain_http_endpoint_without_allow_http_is_refused_naming_the_setting(monkeypatch):
    """Before: `PLURALIGN_STORE_ENDPOINT=http://minio:9000` without `PLURALIGN_STORE_ALLOW_HTTP=true` loaded, and the
    start failed once the tables were opened with Lance's words alone (`pluralign: error: Invalid input, Failed to
    connect to namespace: IO { ... reqwest::Error { kind: Builder, source: BadScheme } ...`), naming no setting."""
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    with pytest.raises(ValueError, match=r"^PLURALIGN_STORE_ENDPOINT \(setting store_endpoint\): `store_allow_http` must be "
                                         r"true .*PLURALIGN_STORE_ALLOW_HTTP=true"):
        Settings.load(MINIO)
    with pytest.raises(ValueError, match=r"^PLURALIGN_STORE_ALLOW_HTTP \(setting store_allow_http\): `store_allow_http` must be true"):
        Settings.load({**MINIO, "PLURALIGN_STORE_ALLOW_HTTP": "false"})
    assert Settings.load({**MINIO, "PLURALIGN_STORE_ALLOW_HTTP": "true"}).storage_options["allow_http"] == "true"
    assert Settings.load({**MINIO, "PLURALIGN_STORE_ENDPOINT": "https://minio:9000"}).store_endpoint == "https://minio:9000"
    assert Settings.load({"PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:9000"}).store_uri is None  # a folder: the endpoint unused
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # Lance's own fallback for an option not given
    assert Settings.load(MINIO).store_allow_http is False


def test_serve_on_a_plain_http_endpoint_without_allow_http_stops_with_one_line(tmp_path):
    env = {**os.environ, **MINIO, "PLURALIGN_STORE_ACCESS_KEY_ID": "id", "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret"}
    env.pop("AWS_ALLOW_HTTP", None)
    env.pop("PLURALIGN_STORE_ALLOW_HTTP", None)
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("pluralign: error: PLURALIGN_STORE_ENDPOINT (setting store_endpoint): `store_allow_http` "
                                  "must be true"), done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()


@pytest.mark.slow  # moto, and the AWS SDK's own retries of a DynamoDB that does not answer: 5-12 s (`make test-object-store`)
@pytest.mark.parametrize("case", ["no table", "not reached"])
def test_a_dynamodb_commit_store_that_cannot_be_used_is_named_at_start(case, monkeypatch):
    """deploy/README.md's way for several writers on S3, `s3+ddb://bucket/prefix?ddbTableName=T` (Lance's DynamoDB
    commit store), on moto: a table T that was never made, or a DynamoDB endpoint (`DYNAMODB_ENDPOINT`, Lance's) where
    nothing answers. Before: a RuntimeError out of `Store` that no storage failure matched (`WrappedSdkError: request_id:
    ..., service_error: Response { status: StatusCode(400), headers: ...`), so `pluralign serve` ended with a traceback,
    exit 1. Now the object-store failure `commit-store`, its detail DynamoDB's own words (the error's name and message)
    or that it did not answer, and the start's line names the table, the URI's setting and the endpoint's variable."""
    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.tables import Store
    from tests.s3 import S3Server
    from training.commands.serve import store_problem

    with S3Server("pluralign-test") as s3:
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint if case == "no table" else "http://127.0.0.1:1")
        uri = "s3+ddb://pluralign-test/ddb?ddbTableName=pluralign-commits"
        with pytest.raises(StoreUnavailable) as caught:
            Store(uri, "enc", 4, storage_options=s3.options)
        settings = Settings.load({}, **{**s3.settings("ddb"), "store_uri": uri})
    assert caught.value.problem == "commit-store", str(caught.value)
    detail = caught.value.detail
    if case == "no table":
        assert detail.startswith("DynamoDB answered ResourceNotFoundException: Requested resource not found"), detail
    else:
        assert detail.startswith("DynamoDB did not answer"), detail
    assert "headers" not in detail and len(detail) < 300, detail
    line = store_problem(settings, caught.value)
    assert line.startswith("PLURALIGN_STORE_URI (setting store_uri): its DynamoDB commit table `pluralign-commits` "
                           "(ddbTableName), at DYNAMODB_ENDPOINT = "), line
    assert f"the store {uri} cannot be created: its DynamoDB commit store refused or failed the request" in line, line
    print(line)


def _commit_table(endpoint: str, name: str, make: bool) -> None:
    import boto3

    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    if not make:
        ddb.delete_table(TableName=name)
        return
    ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "base_uri", "KeyType": "HASH"},
                                                {"AttributeName": "version", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "base_uri", "AttributeType": "S"},
                                           {"AttributeName": "version", "AttributeType": "N"}], BillingMode="PAY_PER_REQUEST")


@pytest.mark.slow  # moto, a store opened on it and the AWS SDK's retries: ~5-10 s (`make test-object-store`)
def test_a_write_whose_commit_the_dynamodb_commit_store_cannot_confirm_is_a_storage_failure(monkeypatch):
    """An `s3+ddb://` store serving, its DynamoDB commit table then gone (deleted, or DynamoDB not reached): Lance
    raises `RuntimeError: Commit result for version N is unknown: ...`, no AWS error in its words. Before: no storage
    failure matched it, so a chat or profile read that moved the user's feedback was a 500 `internal_error`,
    `/health` said `ok` with nothing under `storage`, and the ingest worker logged a traceback every 4 s. Now the
    StoreUnavailable `commit-store` naming the table (a 503, listed in `/health`)."""
    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.tables import Store
    from tests.s3 import S3Server
    from tests.stores import user_row

    with S3Server("pluralign-test") as s3:
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint)
        _commit_table(s3.endpoint, "pluralign-commits", make=True)
        store = Store("s3+ddb://pluralign-test/gone?ddbTableName=pluralign-commits", "enc", 4, storage_options=s3.options)
        store.put_user(user_row("before", 1.0))
        _commit_table(s3.endpoint, "pluralign-commits", make=False)
        with pytest.raises(StoreUnavailable) as caught:
            store.put_user(user_row("after", 2.0))
    assert (caught.value.problem, caught.value.name) == ("commit-store", "table `users`"), str(caught.value)
    assert [p["problem"] for p in store.problems.recent()] == ["commit-store"], store.problems.recent()
