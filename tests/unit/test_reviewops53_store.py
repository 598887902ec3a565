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
    from training.common import check_store_endpoint

    uri = "s3://bucket/pluralign"
    with pytest.raises(ValueError, match="is plain http"):
        check_store_endpoint("--store", uri)
    check_store_endpoint("--store", "/srv/pluralign/lancedb")
    monkeypatch.setenv("PLURALIGN_STORE_ALLOW_HTTP", "true")
    check_store_endpoint("--store", uri)
    monkeypatch.setenv("PLURALIGN_STORE_ALLOW_HTTP", "false")
    with pytest.raises(ValueError, match="is plain http"):
        check_store_endpoint("--store", uri)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "Yes")
    check_store_endpoint("--store", uri)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "false")
    monkeypatch.setenv("PLURALIGN_STORE_ENDPOINT", "https://minio:9000")
    check_store_endpoint("--store", uri)
