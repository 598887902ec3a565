"""Session misc54 (review of ops54): a job's worker reaches the object store exactly as the service does, wherever it
runs: every variable Lance reads that locates or authenticates a store of the service's scheme travels with it, none of
the worker's machine's own store settings fills in one the service left unset, and `pluralign audit --store` refuses a
mistyped object-store prefix before its imports, as `train adapter --store` does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# what an operator sets beside the store's PLURALIGN_STORE_* settings, per scheme (object_store's names), and the
# machine's own identity, which stays on its machine
SCHEME_ENV = {
    "s3://b/p": {"AWS_ENDPOINT_URL_S3": "https://s3.example", "AWS_REQUEST_PAYER": "true", "AWS_SKIP_SIGNATURE": "false",
                 "AWS_S3_EXPRESS": "true", "AWS_SSE_CUSTOMER_KEY_BASE64": "a2V5", "AWS_SERVER_SIDE_ENCRYPTION": "sse-c"},
    "s3+ddb://b/p?ddbTableName=t": {"AWS_ENDPOINT_URL_S3": "https://s3.example", "DYNAMODB_ENDPOINT": "http://ddb:8000",
                                    "AWS_ENDPOINT_URL_DYNAMODB": "http://ddb:8000", "AWS_REQUEST_PAYER": "true"},
    "gs://b/p": {"GOOGLE_SERVICE_ACCOUNT_KEY": '{"type": "service_account"}', "GOOGLE_BASE_URL": "http://gcs:4443",
                 "GOOGLE_BEARER_TOKEN": "ya29", "GOOGLE_SKIP_SIGNATURE": "false"},
    "az://c/p": {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5", "AZURE_STORAGE_SAS_TOKEN": "sv=1",
                 "AZURE_STORAGE_ENDPOINT": "http://azurite:10000", "AZURE_STORAGE_USE_EMULATOR": "true",
                 "AZURE_CLIENT_ID": "id", "AZURE_CLIENT_SECRET": "secret", "AZURE_TENANT_ID": "tenant"},
}
MACHINE_OWN = {"AWS_PROFILE": "ops", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "AWS_ROLE_ARN": "arn:aws:iam::1:role/p",
               "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/creds", "GOOGLE_APPLICATION_CREDENTIALS": "/etc/gcp.json",
               "GOOGLE_SERVICE_ACCOUNT": "/etc/sa.json", "AZURE_FEDERATED_TOKEN_FILE": "/var/run/azure", "AZURE_MSI_ENDPOINT": "http://169.254.169.254"}


@pytest.mark.parametrize("uri", SCHEME_ENV)
def test_a_jobs_environment_carries_what_locates_or_authenticates_a_store_of_its_scheme(uri, monkeypatch):
    """`Settings.store_environment`, what every job's worker is given (a Ray node's too), for a store of each scheme
    Lance reaches: the variables of that scheme's object_store configuration the service has (S3's own endpoint, a
    requester-pays bucket, an unsigned one, S3 Express, SSE-C; a `gs://` store's key, endpoint and token; an `az://`
    store's account, key, SAS token, emulator and service principal), not another scheme's, and no file or endpoint of
    the machine's own identity. Before: `LANCE_ENV` named ten `AWS_*` variables and `DYNAMODB_ENDPOINT` alone: a
    `gs://` or `az://` store's worker on a Ray node had none of its credentials."""
    from service.settings import Settings

    family = lambda u: u[:2]  # noqa: E731  s3:// and s3+ddb:// are S3's, with object_store's AmazonS3 variables
    others = {name: value for u, env in SCHEME_ENV.items() if family(u) != family(uri) for name, value in env.items()}
    for name in {*others, *MACHINE_OWN, *(n for env in SCHEME_ENV.values() for n in env)}:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**others, **MACHINE_OWN, **SCHEME_ENV[uri]}.items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("PLURALIGN_")]:
        monkeypatch.delenv(name)
    env = Settings.load(store_uri=uri).store_environment()
    carried = {name: value for name, value in env.items() if not name.startswith("PLURALIGN_")}
    assert carried == SCHEME_ENV[uri], carried


def test_a_workers_store_settings_are_the_services_not_its_machines(tmp_path, monkeypatch):
    """The store options a job's worker opens the store with (`training.common.store_options`, `audit --store`'s and
    `train adapter --store`'s) in the environment it runs in: a Ray node's own, with the service's store variables over
    it (`RayJobRunner`), or the service process's own, likewise (`LocalJobRunner`; a service made from settings, as
    `create_app(settings)` is). The service sets the endpoint and plain http and leaves region and keys unset; the
    node has a PLURALIGN_CONFIG file and a variable of its own naming another endpoint, region and keys. Before: the
    unset settings were left out of the job's variables, so the node's region and keys (and the file's) were the
    worker's: it reached the store with credentials and a region the service does not have."""
    from service.settings import Settings
    from training.common import store_options

    for name in [n for n in os.environ if n.startswith(("PLURALIGN_", "AWS_"))]:
        monkeypatch.delenv(name)
    uri = "s3://bucket/pluralign"
    service = Settings.load(store_uri=uri, store_endpoint="http://minio:9000", store_allow_http=True, store_timeout_s=2.0)
    handed = service.store_environment()
    config = tmp_path / "node.toml"
    config.write_text('store_endpoint = "https://s3.node.example"\nstore_region = "eu-north-1"\n'
                      'store_access_key_id = "NODEKEY"\nstore_secret_access_key = "node-secret"\nstore_retries = 9\n')
    node = {"PLURALIGN_CONFIG": str(config), "PLURALIGN_STORE_REGION": "ap-south-1",
            "PLURALIGN_STORE_ACCESS_KEY_ID": "NODEKEY2"}
    service_process = {"PLURALIGN_STORE_ACCESS_KEY_ID": "LEFTOVER", "PLURALIGN_STORE_SECRET_ACCESS_KEY": "x"}
    for machine in (node, service_process):  # a Ray node's worker; the local runner's
        for name, value in {**machine, **handed}.items():  # as the runners make it: {**os.environ, **RunnerConfig.env}
            monkeypatch.setenv(name, value)
        assert store_options(uri) == service.storage_options, machine
        for name in {**machine, **handed}:
            monkeypatch.delenv(name)
    assert "aws_region" not in service.storage_options and service.storage_options["aws_endpoint"] == "http://minio:9000"


@pytest.mark.slow  # moto and a `pluralign audit` process: ~3-5 s by the machine's load (`make test-object-store`)
def test_audit_refuses_a_mistyped_object_store_prefix_before_its_imports(tmp_path):
    """`pluralign audit --store s3://bucket/typo --group-by segment`, the service's settings set: one line naming
    --store, exit 2, nothing written, in about the time lancedb's import takes, the audit's own modules never imported
    (`-X importtime`). Before: the refusal came from the store source, once `pluralign.fairness.audit`, `.report`,
    `.online` and `.metrics` had loaded (as `train adapter --store` did until the review of ops54)."""
    from tests.s3 import S3Server
    from tests.service.test_ops54_store_settings import _seconds

    with S3Server("pluralign-misc54b") as s3:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}, **s3.env("unused"),
               "PLURALIGN_STORE_RETRIES": "0", "PYTHONPATH": str(Path(__file__).parents[2])}
        del env["PLURALIGN_STORE_URI"]
        lancedb_s = _seconds("-c", "import lancedb")  # the machine's pace now
        began = time.monotonic()
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", "audit", "--store", s3.uri("typo"),
                                 "--group-by", "segment"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        took = time.monotonic() - began
        written = s3.client().list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    imported = [line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2 and result.stdout == "", result.stderr[-3000:]
    assert said == [
        "pluralign: error: --store s3://pluralign-misc54b/typo: no pluralign store there (no `preferences` table): give the "
        "URI the service's PLURALIGN_STORE_URI names, with the PLURALIGN_STORE_* settings it reaches it by"], said
    assert "lancedb" in imported and not [m for m in imported if m.startswith("pluralign.fairness")], imported
    assert written == []
    assert took < 3 * lancedb_s + 5, f"{took:.1f} s (lancedb's import: {lancedb_s:.1f} s)"
