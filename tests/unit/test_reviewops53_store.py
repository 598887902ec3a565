"""Review of session ops53's object-store settings, tried as an operator does (session reviewops53)."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli

PLAIN = {"PLURALIGN_STORE_ENDPOINT": "http://127.0.0.1:9", "PLURALIGN_STORE_ACCESS_KEY_ID": "id",
         "PLURALIGN_STORE_SECRET_ACCESS_KEY": "secret"}


@pytest.fixture
def plain_endpoint(monkeypatch):
    for name in ("AWS_ALLOW_HTTP", "PLURALIGN_STORE_ALLOW_HTTP", "PLURALIGN_STORE_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in PLAIN.items():
        monkeypatch.setenv(name, value)


def test_audit_of_a_store_uri_at_a_plain_http_endpoint_is_refused_naming_the_setting(capsys, plain_endpoint):
    """ops53 refused an http:// PLURALIGN_STORE_ENDPOINT without PLURALIGN_STORE_ALLOW_HTTP=true "at once, by every
    command", but only where PLURALIGN_STORE_URI names the store: `pluralign audit --store s3://...` (the store given
    on the command line, reached with the PLURALIGN_STORE_* settings) still opened Lance and ended in its words
    (`Invalid input, Failed to connect to namespace: ... reqwest::Error { kind: Builder, source: BadScheme }`), naming
    no setting. Now the same refusal, naming --store, the endpoint and PLURALIGN_STORE_ALLOW_HTTP."""
    code, out, err = cli(capsys, "audit", "--store", "s3://bucket/pluralign", "--group-by", "segment", "--json")
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2 and out == "", err
    assert line.startswith("pluralign: error: --store s3://bucket/pluralign: PLURALIGN_STORE_ENDPOINT 'http://127.0.0.1:9' "
                           "is plain http"), line
    assert "PLURALIGN_STORE_ALLOW_HTTP=true" in line and "BadScheme" not in err, err


def test_aws_allow_http_or_the_setting_lets_a_command_line_store_through(plain_endpoint, monkeypatch):
    """The refusal's two ways out, as Lance itself takes them: PLURALIGN_STORE_ALLOW_HTTP=true, or Lance's own
    AWS_ALLOW_HTTP (object_store's truthy words, any case); a folder, or an https:// endpoint, is never refused."""
    from training.common import check_store_uri

    uri = "s3://bucket/pluralign"
    with pytest.raises(ValueError, match="is plain http"):
        check_store_uri("--store", uri)
    check_store_uri("--store", "/srv/pluralign/lancedb")
    monkeypatch.setenv("PLURALIGN_STORE_ALLOW_HTTP", "true")
    check_store_uri("--store", uri)
    monkeypatch.setenv("PLURALIGN_STORE_ALLOW_HTTP", "false")
    with pytest.raises(ValueError, match="is plain http"):
        check_store_uri("--store", uri)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "Yes")
    check_store_uri("--store", uri)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "false")
    monkeypatch.setenv("PLURALIGN_STORE_ENDPOINT", "https://minio:9000")
    check_store_uri("--store", uri)


def _sdk_error(body: str) -> RuntimeError:
    """Lance's error for a DynamoDB commit store's failed request, as the AWS SDK's Debug prints it (the words of
    tests/service/test_ops53_store_settings.py's moto run: `b"..."` escapes the body's quotes), answering `body`."""
    escaped = body.replace('"', '\\"')
    return RuntimeError(
        "lance error: LanceError(IO): WrappedSdkError: request_id: 4kNclYI1bckvKhUdKflXAkkwZijmXrUntxqOBpFc7SYJGhQAzIS2, "
        'service_error: Response { status: StatusCode(400), headers: Headers { headers: {"server": HeaderValue { _private: '
        'H1("Server") }, "date": HeaderValue { _private: H1("Sun, 06 Dec 2026 21:10:54 GMT") }, "content-type": '
        'HeaderValue { _private: H1("application/x-amz-json-1.0") }, "content-length": HeaderValue { _private: H1("115") }, '
        '"x-amzn-requestid": HeaderValue { _private: H1("4kNclYI1bckvKhUdKflXAkkwZijmXrUntxqOBpFc7SYJGhQAzIS2") }, '
        '"x-amz-crc32": HeaderValue { _private: H1("1163662137") }} }, body: SdkBody { inner: Once(Some(b"' + escaped
        + '")), retryable: true }, extensions: Extensions { extensions_02x: Extensions, extensions_1x: '
        "{hyper::ext::h1_reason_phrase::ReasonPhrase} } }, /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/"
        "lance-table-13.0.0/src/io/commit/dynamodb.rs:41:9")


@pytest.mark.parametrize(("body", "said"), [
    # moto's body (what ops53 tested): spaces after its commas and colons
    ('{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": "Requested resource not found"}',
     "DynamoDB answered ResourceNotFoundException: Requested resource not found"),
    # AWS's and DynamoDB Local's: compact JSON
    ('{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}',
     "DynamoDB answered ResourceNotFoundException: Requested resource not found"),
    ('{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Cannot do operations on a non-existent table"}',
     "DynamoDB answered ResourceNotFoundException: Cannot do operations on a non-existent table"),
    # AWS's refusals of the keys or the role: `Message`, capitalized
    ('{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User: arn:aws:sts::1:assumed-role/pluralign is '
     'not authorized to perform: dynamodb:PutItem"}',
     "DynamoDB answered AccessDeniedException: User: arn:aws:sts::1:assumed-role/pluralign is not authorized to perform: "
     "dynamodb:PutItem"),
    ('{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the '
     'request is invalid."}',
     "DynamoDB answered UnrecognizedClientException: The security token included in the request is invalid."),
])
def test_a_commit_store_refusal_is_named_in_dynamodbs_words_whatever_its_json_spacing(body, said):
    """ops53's detail of a DynamoDB commit store's failure (`commit_store_detail`) read the error's name and message
    only from moto's body, `{"__type": "...", "message": "..."}` with spaces; AWS's own DynamoDB and DynamoDB Local
    answer compact JSON (and AWS's AccessDeniedException a capitalized `Message`). Before: the start's line and the 503's
    log then gave the SDK's first 300 characters (its request id and response headers), no error name. Now the name
    and DynamoDB's message for each."""
    from pluralign.store.failures import unavailable

    found = unavailable(_sdk_error(body), "the store", "s3+ddb://bucket/pluralign?ddbTableName=pluralign-commits", "opened")
    assert found is not None and found.problem == "commit-store", found
    assert found.detail == said, found.detail


@pytest.mark.slow  # moto's S3 and DynamoDB, a store opened on them: ~5 s (`make test-object-store`)
def test_a_commit_table_made_in_another_region_is_named_with_the_region_looked_in(monkeypatch):
    """deploy/README.md (ops53) said the DynamoDB commit store "is reached by Lance's AWS SDK, not by the storage
    settings", and gave `aws dynamodb create-table` with no region; but Lance reaches it with the store's region and
    keys (PLURALIGN_STORE_REGION): a table made in the CLI's default region (us-east-1) beside a store in eu-west-1 is
    "not found", and the start's line named the table and DYNAMODB_ENDPOINT only, not where it looked. Now it names
    the region and its setting too."""
    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.tables import Store
    from service.settings import Settings
    from tests.s3 import S3Server
    from tests.service.test_ops53_store_settings import _commit_table
    from training.commands.serve import store_problem

    # a table and prefix of its own: moto keeps what every S3Server of this process made (test_ops53_store_settings'
    # "no table" case needs `pluralign-commits` missing)
    table, uri = "reviewops53-commits", "s3+ddb://pluralign-test/reviewops53-region?ddbTableName=reviewops53-commits"
    with S3Server("pluralign-test") as s3:
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint)
        _commit_table(s3.endpoint, table, make=True)  # in us-east-1
        try:
            settings = Settings.load({}, **{**s3.settings("ddb"), "store_uri": uri, "store_region": "eu-west-1"})
            with pytest.raises(StoreUnavailable) as caught:
                Store(settings.lancedb_uri, "enc", 4, storage_options=settings.storage_options)
        finally:
            _commit_table(s3.endpoint, table, make=False)
    assert caught.value.problem == "commit-store" and "ResourceNotFoundException" in caught.value.detail, str(caught.value)
    line = store_problem(settings, caught.value)
    assert f"at DYNAMODB_ENDPOINT = {s3.endpoint}, in region eu-west-1 (PLURALIGN_STORE_REGION)" in line, line


def test_docs_api_health_lists_every_storage_problem_the_service_reports():
    """`/health`'s `storage[].problem` is documented in docs/api.md as a closed list; ops53 added `commit-store` to what
    the service reports (`pluralign.store.failures.PROBLEMS`), as earlier sessions had `no-credentials` and `missing`,
    but not to that list, nor to the object-store problems shown until the same read succeeds (`OBJECT_STORE_PROBLEMS`)."""
    import re
    from pathlib import Path

    from pluralign.store.failures import OBJECT_STORE_PROBLEMS, PROBLEMS

    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    listed = re.search(r'"problem": ((?:"[\w-]+"(?: \| )?)+)', text)
    assert listed, "docs/api.md lists no /health storage problems"
    assert set(re.findall(r'"([\w-]+)"', listed.group(1))) == set(PROBLEMS), listed.group(1)
    shown = re.search(r"a read the\s+object store did not answer or refused \(([^)]*)\)", text)
    assert shown, "docs/api.md does not say which object-store reads are shown until they succeed"
    assert set(re.findall(r"`([\w-]+)`", shown.group(1))) == set(OBJECT_STORE_PROBLEMS), shown.group(0)


@pytest.mark.parametrize("uri", ["s3+ddb://bucket/pluralign", "s3+ddb://bucket/pluralign?ddbTableName=",
                                 "s3+ddb://bucket/pluralign?ddbTableName=a&ddbTableName=b", "s3+ddb://bucket/pluralign?table=commits"])
def test_an_s3_ddb_store_without_its_commit_table_named_is_refused_at_once_naming_the_setting(uri, monkeypatch, capsys):
    """An `s3+ddb://` PLURALIGN_STORE_URI without its one `ddbTableName` (deploy/README.md's form, mistyped): ops53's
    start line has a `(none given)` for it, but Lance refuses such a URI before any request (a ValueError, "Invalid
    input, `s3+ddb://` scheme and expects exactly one query `ddbTableName`"), which no storage failure matches: the
    start loaded its models, then ended in Lance's words naming no setting, exit 2; `pluralign audit --store` the
    same. Now the settings refuse it at once, naming PLURALIGN_STORE_URI, and the audit names --store."""
    from service.settings import Settings

    with pytest.raises(ValueError, match=r"^PLURALIGN_STORE_URI \(setting store_uri\): .*ddbTableName"):
        Settings.load({"PLURALIGN_STORE_URI": uri})
    monkeypatch.delenv("PLURALIGN_STORE_URI", raising=False)
    code, out, err = cli(capsys, "audit", "--store", uri, "--group-by", "segment", "--json")
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"pluralign: error: --store {uri}: "), err
    assert "ddbTableName=T" in err and "Invalid input" not in err, err
    assert Settings.load({"PLURALIGN_STORE_URI": "s3+ddb://bucket/pluralign?ddbTableName=pluralign-commits"}).store_uri
