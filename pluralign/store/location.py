"""Where the tables live: a folder, `memory://`, or an object store (`s3://bucket/prefix`), and the
storage options LanceDB needs to reach an object store (endpoint, region, credentials).

The options are plain strings in Lance's own names (`aws_endpoint`, `aws_region`, `allow_http`,
`aws_access_key_id`, `aws_secret_access_key`); options left out fall back to Lance's defaults, which
read the standard `AWS_*` variables and the instance role. Worker processes (audit jobs) get the same
options as `PLURALIGN_STORE_*` variables (`options_to_env`), with the variables Lance reads of the service's own
environment (`LANCE_ENV`: `store_environment`), wherever they run; `reach` checks a store cheaply before a long start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

# PLURALIGN_<NAME> variable -> Lance storage option
OPTION_ENV = {
    "PLURALIGN_STORE_ENDPOINT": "aws_endpoint",
    "PLURALIGN_STORE_REGION": "aws_region",
    "PLURALIGN_STORE_ALLOW_HTTP": "allow_http",
    "PLURALIGN_STORE_ACCESS_KEY_ID": "aws_access_key_id",
    "PLURALIGN_STORE_SECRET_ACCESS_KEY": "aws_secret_access_key",
}
OBJECT_STORE_SCHEMES = ("s3://", "s3+ddb://", "gs://", "az://", "abfss://")


def is_object_store(uri: str) -> bool:
    return uri.startswith(OBJECT_STORE_SCHEMES)


TRUTHY = frozenset({"1", "true", "on", "yes", "y"})  # object_store's words for a true option (`str_is_truthy`), any case


def plain_http_endpoint(uri: str, options: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str | None:
    """The `http://` endpoint (`options["aws_endpoint"]`) of an object-store `uri` that object_store sends no request
    to: neither `options["allow_http"]` nor Lance's fallback for an option not given, the `AWS_ALLOW_HTTP` variable of
    `environ` (default `os.environ`), is true (`TRUTHY`). None otherwise (https, no endpoint, a folder, allowed).
    Every request to it fails `BadScheme` in Lance's words, which name no setting."""
    environ = os.environ if environ is None else environ
    endpoint = options.get("aws_endpoint") or ""
    if not (endpoint.lower().startswith("http://") and is_object_store(uri)):
        return None
    allowed = (options.get("allow_http") or "").lower() in TRUTHY or environ.get("AWS_ALLOW_HTTP", "").lower() in TRUTHY
    return None if allowed else endpoint


def commit_table_problem(uri: str) -> str | None:
    """What is wrong with an `s3+ddb://` `uri`'s naming of its DynamoDB commit table, which Lance refuses before any
    request ("Invalid input, `s3+ddb://` scheme and expects exactly one query `ddbTableName`", a ValueError no storage
    failure matches): it takes one query parameter, a non-empty `ddbTableName`. None for such a URI, or another scheme."""
    if not uri.startswith("s3+ddb://"):
        return None
    from urllib.parse import parse_qsl, urlsplit

    query = parse_qsl(urlsplit(uri).query, keep_blank_values=True)
    if len(query) == 1 and query[0][0] == "ddbTableName" and query[0][1]:
        return None
    given = ", ".join(f"`{name}`" for name, _ in query) or "none"
    return (f"an s3+ddb:// store names its DynamoDB commit table as its one query parameter, `?ddbTableName=T` "
            f"(deploy/README.md, \"A slow or plain bucket\"); its query parameters: {given}"
            + (" (an empty table name)" if [name for name, _ in query] == ["ddbTableName"] else ""))


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Lance storage options named by `PLURALIGN_STORE_*` variables (empty ones left out)."""
    environ = os.environ if environ is None else environ
    return {option: environ[name] for name, option in OPTION_ENV.items() if environ.get(name)}


def options_to_env(options: Mapping[str, str]) -> dict[str, str]:
    """The inverse of `options_from_env`: variables that hand `options` to a worker process."""
    names = {option: name for name, option in OPTION_ENV.items()}
    return {names[k]: v for k, v in options.items() if k in names and v}


# The variables Lance reads of its process's environment for an object store where the storage options leave a setting
# out (lance-io's `with_env_s3`, `with_env_gcs`, `with_env_azure`: each variable whose name, lower-cased, is one of
# object_store's configuration keys, `AmazonS3ConfigKey`, `GoogleConfigKey`, `AzureConfigKey`), by the schemes that
# read them. A process on another machine (a Ray node) has that machine's environment, so a worker there is given
# this process's (`store_environment`): those that locate the store, authenticate to it, or say what its server
# needs of every request. Not forwarded: a machine's own identity and network (`NODE_OWN_ENV`), which a node keeps its
# own of, nor object_store's un-prefixed aliases (`REGION`, `ENDPOINT`, `TOKEN`, `BUCKET`), generic names a process
# may hold for something else.
S3_ENV = (
    # where: the endpoint (`AWS_ENDPOINT_URL_S3` is S3's own, before `AWS_ENDPOINT_URL`), plain http, the region,
    # the addressing style, an S3 Express One Zone bucket
    "AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ALLOW_HTTP", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "AWS_S3_EXPRESS",
    # as whom: static keys and their session token (`AWS_TOKEN`: object_store's other name for it), no signature at
    # all (a public bucket), the requester paying (a requester-pays bucket refuses every request without it)
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_TOKEN", "AWS_SKIP_SIGNATURE", "AWS_REQUEST_PAYER",
    # what the store's server needs of each request: its objects' encryption (SSE-C: every read sends the key), how
    # it takes a conditional write, payload signing, checksums, tags
    "AWS_SERVER_SIDE_ENCRYPTION", "AWS_SSE_KMS_KEY_ID", "AWS_SSE_BUCKET_KEY_ENABLED", "AWS_SSE_CUSTOMER_KEY_BASE64",
    "AWS_CONDITIONAL_PUT", "AWS_COPY_IF_NOT_EXISTS", "AWS_UNSIGNED_PAYLOAD", "AWS_CHECKSUM_ALGORITHM", "AWS_DISABLE_TAGGING",
)
# an `s3+ddb://` store's DynamoDB commit table: Lance's own variable for its endpoint (no storage option names it).
# Lance's DynamoDB client (lance-table's `build_dynamodb_external_store`, read at its source of Nov 2025) is built
# without the AWS SDK's environment, so it does not read `AWS_ENDPOINT_URL_DYNAMODB`; the AWS SDKs and CLI an operator
# checks the table with do: forwarded so that a worker's tools and Lance name the endpoint the service's do
DDB_ENV = ("DYNAMODB_ENDPOINT", "AWS_ENDPOINT_URL_DYNAMODB")
GCS_ENV = (
    # as whom: a service account's key itself (JSON), or a bearer token (`GOOGLE_STORAGE_TOKEN`: Lance's own name);
    # where: another endpoint (an emulator, a private one); no signature (a public bucket)
    "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_BEARER_TOKEN", "GOOGLE_STORAGE_TOKEN", "GOOGLE_BASE_URL", "GOOGLE_SKIP_SIGNATURE",
)
AZURE_ENV = (
    # where: the account, another endpoint (Azurite, a sovereign cloud, Fabric's), the emulator, plain http
    "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT", "AZURE_STORAGE_USE_EMULATOR",
    "AZURE_USE_FABRIC_ENDPOINT", "AZURE_ALLOW_HTTP",
    # as whom: the account key (by each of its names), a SAS token, a bearer token, a service principal's id, secret,
    # tenant and authority host, no signature (a public container); the encryption key every request of a
    # customer-key store sends
    "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_MASTER_KEY", "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_TOKEN", "AZURE_STORAGE_CLIENT_ID", "AZURE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID", "AZURE_STORAGE_AUTHORITY_ID",
    "AZURE_TENANT_ID", "AZURE_AUTHORITY_ID", "AZURE_STORAGE_AUTHORITY_HOST", "AZURE_AUTHORITY_HOST", "AZURE_SKIP_SIGNATURE",
    "AZURE_STORAGE_ENCRYPTION_KEY",
)
# read by Lance too, never forwarded: a file or endpoint of this machine's own identity (a node reaches the store as
# itself where the service does: its profile, web-identity token, instance metadata, container credentials, managed
# identity, Azure CLI login), and this machine's way out (its proxy)
NODE_OWN_ENV = (
    "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT", "AWS_IMDSV1_FALLBACK", "AWS_PROXY_URL",
    "GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_PROXY_URL",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_MSI_ENDPOINT", "AZURE_IDENTITY_ENDPOINT", "AZURE_MSI_RESOURCE_ID", "AZURE_OBJECT_ID",
    "AZURE_USE_AZURE_CLI", "AZURE_PROXY_URL",
)
LANCE_ENV = {"s3://": S3_ENV, "s3+ddb://": S3_ENV + DDB_ENV, "gs://": GCS_ENV, "az://": AZURE_ENV, "abfss://": AZURE_ENV}


def store_environment(uri: str, options: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables with which a worker process, wherever it runs, reaches the object store at `uri` as a process of
    `options` and `environ` (default `os.environ`) does: `options_to_env(options)`, and the `LANCE_ENV` variables of
    `uri`'s scheme set in `environ` (empty ones left out); none for a folder or `memory://`. Both: with the first
    only, a job's worker on a Ray node would reach an `s3+ddb://` store's commit table at the node's
    `DYNAMODB_ENDPOINT` (or AWS's), an endpoint the service's `AWS_ALLOW_HTTP` allowed would be refused, and
    `AWS_ENDPOINT_URL_S3`, `AWS_REQUEST_PAYER`, `AWS_SKIP_SIGNATURE`, `AWS_S3_EXPRESS` and every variable of a `gs://`
    or `az://` store would be missing."""
    environ = os.environ if environ is None else environ
    names = next((names for scheme, names in LANCE_ENV.items() if uri.startswith(scheme)), ())
    return {**{name: environ[name] for name in names if environ.get(name)}, **options_to_env(options)}


def cache_session(cache_bytes: int):
    """A LanceDB session whose caches hold at most `cache_bytes`: three quarters for index pages, a
    quarter for table metadata (manifests, fragment and index descriptions). Lance's own default (6 GiB
    and 1 GiB) fills with every table version's entries as writes go on: a long-lived process grew ~0.1 MB
    a write (benchmarks/long_run.py)."""
    from pluralign.store.lance_imports import import_lancedb

    lancedb = import_lancedb()  # here, not at the top: `is_object_store` is asked before any store is opened (2-3 s of imports)
    return lancedb.Session(index_cache_size_bytes=cache_bytes - cache_bytes // 4, metadata_cache_size_bytes=cache_bytes // 4)


def connect(uri: str, storage_options: Mapping[str, str] | None = None, read_consistency: timedelta | None = None, session=None):
    """A LanceDB connection; `storage_options` only matter for an object-store URI.

    `read_consistency`: how stale a read may be with respect to commits by other processes (None:
    never look for them, LanceDB's default and right for one process; timedelta(0): look at every
    read, one listing of the table's versions each, which on S3 is a request). `session`: its caches
    (`cache_session`); None: LanceDB's default."""
    from pluralign.store.lance_imports import import_lancedb

    lancedb = import_lancedb()
    kwargs: dict = {"read_consistency_interval": read_consistency} if read_consistency is not None else {}
    if session is not None:
        kwargs["session"] = session
    if storage_options and is_object_store(uri):
        kwargs["storage_options"] = dict(storage_options)
    return lancedb.connect(uri, **kwargs)


def reach(uri: str, storage_options: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """Reach the object store at `uri` as `Store` opens it, cheaply and writing nothing: a connection, one listing of
    its tables and the latest version of one (its manifest; on `s3+ddb://`, the DynamoDB commit table's row for it),
    the `preferences` table's where there is none yet (on `s3+ddb://` its commit table is asked all the same: one never
    made is told before a first start's models load, not after). Raises `pluralign.store.failures.StoreUnavailable` (the store cannot be "opened") when that
    meets an object store's problem (`OBJECT_STORE_PROBLEMS`: down, refusing the keys, no bucket, wrong region, the
    commit store), in the words `Store` would raise later; anything else (a damaged table) is left to `Store`, which
    names the table. Returns the names of the tables there (a prefix holding no `preferences` table holds no pluralign
    store: a mistyped one, which `Store` would make its tables at); None for a folder or `memory://` (nothing done), or
    where what failed is left to `Store`. For a start that loads models for tens of seconds before it opens its store
    (`pluralign serve`: a wrong bucket is told at once, not ~28 s after start), and a command that must not make a
    store where there is none (`pluralign train adapter --store s3://...`)."""
    if not is_object_store(uri):
        return None
    from pluralign.store.failures import OBJECT_STORE_PROBLEMS, secrets_of, unavailable

    try:
        db = connect(uri, storage_options)
        names = sorted(db.list_tables().tables)
        try:
            db.open_table("preferences" if "preferences" in names or not names else names[0])
        except ValueError as exc:  # LanceDB's "Table 'preferences' was not found": a store with no tables yet
            if names or "not found" not in str(exc):
                raise
    except (OSError, RuntimeError, ValueError) as exc:
        found = unavailable(exc, "the store", uri, "opened", secrets_of(storage_options))
        if found is not None and found.problem in OBJECT_STORE_PROBLEMS:
            raise found from None
        return None
    return frozenset(names)
