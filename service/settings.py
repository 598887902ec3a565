"""Service settings: defaults, overridden by a TOML file (PLURALIGN_CONFIG), then by PLURALIGN_* env vars."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import idna
import msgspec

from pluralign.data.record import Base
from pluralign.data.text import closest_name
from pluralign.urls import redacted

ENV_PREFIX = "PLURALIGN_"
# PLURALIGN_* variables that are not settings, read elsewhere (name -> who reads it). Every other
# PLURALIGN_* variable must be a setting: an unknown one (a typo) is refused at start, not ignored.
# tests/service/test_break26b_unknown_variables.py checks that every one named in the repository is here.
OTHER_VARIABLES: dict[str, str] = {
    "PLURALIGN_CONFIG": "the TOML file of settings (Settings.load)",
    "PLURALIGN_KEY": "`pluralign data import`'s tenant key (training/commands/data.py)",
    "PLURALIGN_MODEL_CACHE": "where models are converted and cached (pluralign/embed/models.py)",
    "PLURALIGN_CACHE_DIR": "the embedding cache of the CLI and jobs (pluralign/embed/cache.py)",
    "PLURALIGN_DEVICE": "the torch device (pluralign/device.py)",
    "PLURALIGN_ADAPTER_DIR": "deprecated name of PLURALIGN_ADAPTERS_DIR (DEPRECATED_VARIABLES)",
    "PLURALIGN_JOB_ID": "set by the job runner in each worker's environment (training/jobs/runner.py)",
    "PLURALIGN_JOB_FOLDER": "set by the job runner in each worker's environment: its jobs folder, so a restart stops only its own workers (training/jobs/runner.py)",
    "PLURALIGN_REQUEST_ID": "set by the job runner: the X-Request-Id of the request that caused the job (training/jobs/runner.py)",
    "PLURALIGN_PROGRESS": "set by the job runners: a worker reports progress (training/common.py)",
    "PLURALIGN_SCREENSHOTS": "a folder for the browser tests' screenshots (tests/service/test_browser_pages.py)",
}


class StartedAlone(ValueError):
    """A process set up as the store's only one (`replicas` 1) on a store that replicas write (`service.runtime.open_store`):
    the message names PLURALIGN_REPLICAS. What appeared in the store meanwhile is theirs: a failed start leaves it."""


class ReplicasDisagree(ValueError):
    """A replica starting on a store where a live replica was set up with another replica count, or another data
    folder's process runs with its index (`service.runtime.open_store`): the message names PLURALIGN_REPLICAS or
    PLURALIGN_REPLICA_INDEX and both values. What appeared in the store meanwhile is theirs: a failed start leaves it."""


class DeprecatedVariable(FutureWarning):
    """An old name of a setting's variable was set (FutureWarning: shown by default, to the operator)."""


# old names still read as the setting's variable, with a FutureWarning naming it (old -> new). Both set
# to different values is an error: which one was meant cannot be known.
DEPRECATED_VARIABLES: dict[str, str] = {
    # `pluralign train adapter`'s registry had a variable of its own, so the adapters it trained went where
    # the service never looked; both now read the service's setting
    "PLURALIGN_ADAPTER_DIR": "PLURALIGN_ADAPTERS_DIR",
}
# the variables Kubernetes gives every pod for each Service of its namespace (enableServiceLinks, on by
# default): a Service named `pluralign-api` (deploy/k8s) or `pluralign` makes <NAME>_SERVICE_HOST,
# <NAME>_SERVICE_PORT[_<port name>], <NAME>_PORT and <NAME>_PORT_<port>_<protocol>[_PROTO|_PORT|_ADDR].
# No setting is named so; they are not typos of one, and refusing them kept every pod from starting.
SERVICE_LINK = re.compile(r"(?:[A-Z0-9_]+_)?(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)")
POOLED_PRIOR_MAX_USERS = 128  # a tenant's pooled prior is estimated from at most this many users (one bounded query)
# the shortest `store_timeout_s`: one request to an object store (a TLS connection, a small GET) takes tens of
# milliseconds even on loopback, so a value below this (0.0001: a unit slip) failed every request as "did not answer"
MIN_STORE_TIMEOUT_S = 0.1
MAX_STORE_CACHE_MB = 1 << 30  # `store_cache_mb`: LanceDB takes its cache sizes as 64-bit counts of bytes
MAX_SHOTS = 16  # `shots`, and a chat's `pluralign.shots`: past comparisons put in its context
# `generator_api_key`, `encoder_api_key`: sent as `Authorization: Bearer <key>`, a header value (RFC 9110: visible ASCII,
# spaces inside)
API_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
METRICS_TOKEN = re.compile(r"[\x21-\x7e]{16,255}")  # `metrics_token`: printable ASCII, no spaces, long enough not to guess
MAX_CONNECTIONS = 1 << 20  # `max_connections`: more than any open-files limit a kernel is set to
POOLED_PRIOR_MAX_SPREAD = 100.0  # sd 10x a user's own posterior's: far wider than the model's own prior already


class Settings(Base, frozen=True):
    """Everything the app factory needs; each field can be set as PLURALIGN_<NAME> (upper case)."""

    data_dir: str = "./data"  # API keys, the PAL checkpoint, adapters and (by default) LanceDB live here
    store_uri: str | None = None  # LanceDB URI (a folder or object store); default <data_dir>/lancedb
    # with an object-store URI (`s3://bucket/prefix`): how to reach it; unset ones fall back to AWS_* variables
    store_endpoint: str | None = None  # e.g. http://minio:9000 for an S3-compatible server
    store_region: str | None = None  # e.g. us-east-1
    store_allow_http: bool = False  # allow a plain-http endpoint (local S3-compatible servers)
    store_access_key_id: str | None = None
    store_secret_access_key: str | None = None
    # with an object store: the longest one request to it may take (connecting at most 5 s of it), and how
    # often a failed one (refused, timed out, 5xx, SlowDown) is sent again, with backoff, within that time
    # from its first try; a request that needs the store while it is down is answered 503 within a few of these
    store_timeout_s: float = 10.0
    store_retries: int = 3
    generator: str = "smollm2"  # `smollm2`, a folder holding a saved causal LM, or `openai:URL` (vLLM)
    generator_model: str | None = None  # with `openai:URL`: the base model's name on that server
    # with `openai:URL` serving another model than SmolLM2: a folder holding that model (config.json, weights, tokenizer)
    # that a user's adapter job trains on (`adapter_base`); unset, adapter jobs train SmolLM2 when the server runs it
    # (`generator_model` unset or SmolLM2's name) and are refused (409) when it runs another
    generator_base: str | None = None
    generator_api_key: str | None = None  # with `openai:URL`: the server's key, if it wants one
    # with `openai:URL`: the longest one try of a generation request may take, whole (connecting, the server name's lookup
    # included, to the last byte of its answer); a streamed chat's until its first piece (the engine's queue and prefill)
    generator_timeout_s: float = 120.0
    generator_retries: int = 2  # with `openai:URL`: retries after a connection error, timeout, 408/409/429 or 5xx (backoff)
    # with `openai:URL`: a streamed chat past its first piece is bounded by the time without progress (no piece of it for
    # this many seconds: an engine stalled mid-way) and by a bound of its own for the whole (from its sending), not by
    # `generator_timeout_s` (which would cut a long answer of a slow or busy engine sent steadily)
    generator_stream_idle_s: float = 60.0
    generator_stream_timeout_s: float = 600.0
    # `minilm-onnx` (MiniLM on ONNX Runtime: the same vectors as `minilm` on torch, ~2-3x the texts/s here),
    # `minilm`, `minilm-onnx-int8` (faster, close but not equal vectors: its own encoder id),
    # a sentence-transformers folder, or `openai:URL` (a /v1/embeddings server)
    encoder: str = "minilm-onnx"
    encoder_model: str | None = None  # with `openai:URL`: the model's name on that server (default MiniLM's id)
    encoder_api_key: str | None = None  # with `openai:URL`: the server's key, if it wants one
    # with `openai:URL`: the word pieces of a text its model reads, the rest cut on the right (a local sentence-transformers
    # encoder's `max_seq_length`); unset: MiniLM's 256 for MiniLM, else what the server says (TEI's /info, vLLM's
    # /v1/models). A server saying another is refused at start naming this setting
    encoder_max_length: int | None = None
    # with `openai:URL`: the longest one try of an embeddings request may take, whole (connecting, the server name's lookup
    # included, to the last byte of its answer); 2 retries
    encoder_timeout_s: float = 60.0
    pal_dir: str | None = None  # PAL checkpoint folder; default <data_dir>/pal (bootstrapped if absent)
    # the API key file; default <data_dir>/api_keys.json. Replicas: one file all of them read and write (on a shared
    # volume), so a key revoked through any of them (a tenant's removal, `pluralign keys revoke`) is refused by every
    # replica at its next request (each checks the file with one stat per request: service.auth.KeyRing)
    keys_file: str | None = None
    # persona data a PAL checkpoint is bootstrapped from; default `../shared/data` beside the checkout
    # (`pluralign.data.shared`), wherever the service is started from
    shared_data: str | None = None
    candidates: int = 4  # answers generated per request when reranking (at least 2)
    rerank: bool = True  # rerank candidates by the user's PAL reward
    candidate_styles: bool = True  # generate the candidates in balanced answer styles (length, lists, register)
    user_model: str = "residual"  # `residual`: PAL's prototypes plus a per-user Bayesian residual; `prototypes`: PAL weights only
    maxmin_new_users: bool = True  # users still on the prior get the candidate best for the worst-off PAL prototype
    # `pluralign.compare` (two returned choices worth showing side by side) is offered while the best
    # pair's answer carries at least this many bits about which returned choice is best for the user
    # (`pluralign.user.active.best_information`, whatever `compare_target` chose the pair by); 1.0 or more turns it off
    compare_min_bits: float = 0.1
    # how chat's `compare` chooses its pair (`pluralign.user.active`): `coefficients` (BALD on the user
    # model's coefficients, as the onboarding route does) or `best` (which returned choice is best for
    # the user); on the closed loop neither beat the other or random pairs clearly (BENCHMARKS.md)
    compare_target: str = "coefficients"
    # a new user's first questions are chosen, and their comparisons fitted, under the tenant's pooled
    # prior (`pluralign.user.pooled`: how the tenant's fitted users differ, empirical Bayes) once at
    # least this many of its users are fitted; 0: the user model's own prior for everyone
    pooled_prior_users: int = 0
    pooled_prior_spread: float = 0.2  # weight of the users' mean posterior variance in the pooled prior
    pooled_prior_ttl_s: float = 60.0  # a tenant's pooled prior is estimated again after this many seconds
    # which stored answers show a user's nearest prototype in their profile's summary: `own` (the user's own only: the
    # profile is what a user reads about themself, and shows no one else's questions and answers; none stored: none
    # shown) or `tenant` (an opt-in for tenants whose data is shared by design: a sample of the tenant's pairs, any of
    # its users'); the dashboard (an auditor's view) shows the tenant's either way
    profile_examples: str = "own"
    # what next-comparison asks about when its request sends no `pool` and the tenant stored no calibration pool (PUT
    # /v1/calibration-pool; a stored one is asked whatever this says): `tenant` (pairs of the tenant's stored
    # comparisons, any of its users': issue 16 names them a pool, and apps rely on `{}` asking them) or `calibration`
    # (none: a 400 naming `pool` that says how to store one, so no user is shown another's prompt and answers)
    next_comparison_pool: str = "tenant"
    shots: int = 4  # past preferences put in the context
    max_tokens: int = 128  # default completion length
    max_tokens_limit: int = 1024  # largest max_tokens a request may ask for
    max_body_bytes: int = 1_000_000  # larger request bodies get 413
    max_source_chars: int = 128  # a feedback's (or imported row's) `source`; longer: 400 naming `source`
    max_attributes: int = 32  # labels in a feedback's (or imported row's) `attributes`; more: 400 naming `attributes`; a user's row keeps this many, those given last
    max_attribute_name_chars: int = 64  # one label's name; longer: 400 naming `attributes`
    max_attribute_value_chars: int = 256  # one label's value; longer: 400 naming `attributes.<name>`
    compact_every: int = 50  # table commits between background compactions (rows appended since are outside the BITMAP index and scanned)
    # one tenant's acknowledged feedback rows waiting in the feedback log to be moved into the table (and in memory), and
    # their size, 4 KiB a row of it (`pluralign.store.feedback_log.ROW_BYTES`): past either that tenant's new feedback and imports get 503 `feedback_backlog` with Retry-After, other tenants' are taken as
    # ever; a tenant with none waiting may send one import of any size (docs/operations.md, "One tenant's feedback backlog")
    tenant_feedback_backlog_rows: int = 50_000
    ingest_batch: int = 64  # feedback records embedded and moved into the preferences table per batch (at most 2,048 rows: `pluralign.store.ingest.INGEST_BATCH_ROWS`)
    history_cache_mb: int = 512  # users' histories (rows + vectors, ~470 KiB per 100 rows at 384-d) kept for retrieval and refits
    # LanceDB's caches of index pages and table metadata (Lance's default, 7 GiB, fills with every table
    # version's entries as writes go on: ~0.1 MB a write, never given back below it)
    store_cache_mb: int = 256
    adapter_every: int = 50  # new comparisons of a user that queue an adapter job for them
    job_workers: int = 1  # training/audit jobs running at once (each in its own process)
    job_runner: str = "local"  # `local` (worker processes of this one) or `ray` (detached Ray actors; see deploy/README.md)
    ray_address: str | None = None  # with `ray`: the cluster (`ray://host:10001`); unset: a local Ray
    # with `ray`: seconds (1 to 3600) a job sent to the cluster holds one of the `job_workers` while Ray has not started it
    # (no node has the GPU, CPUs or memory it asks for free); then it is queued again, its worker free for other jobs, and
    # sent again once the cluster has that free, else three times as long later at the earliest; one whose actor Ray
    # placed but was slow to start waits twice as long at its next send (docs/admin.md, "Turns across tenants")
    ray_place_wait_s: float = 10.0
    # several replicas on one store (deploy/README.md): each its own data_dir volume (feedback log, jobs)
    replicas: int = 1  # API processes sharing store_uri
    replica_index: int = 0  # this one's place among them, 0..replicas-1 (a StatefulSet ordinal)
    store_sync_ms: int | None = None  # how stale a read may be w.r.t. other replicas' commits; default 1000 with several, off with one
    deletion_sweep_s: float = 10.0  # how often unfinished DELETEs are retried (service.users.journal) and, with several replicas, each applies other replicas' DELETEs to its own files
    # per-user adapters, where `pluralign train adapter` saves them too; default <data_dir>/adapters (share it
    # between replicas). PLURALIGN_ADAPTER_DIR is its deprecated name
    adapters_dir: str | None = None
    # tenants' calibration pools (PUT /v1/calibration-pool); default <data_dir>/calibration-pools, each replica's own:
    # with several replicas a PUT is then refused (409), so name a folder every replica mounts (the shared volume)
    calibration_pools_dir: str | None = None
    fspo_adapter: str | None = None  # FSPO adapter folder (`pluralign train fspo --out`): serves users without their own
    # a local generator (`smollm2` or a folder) runs in a child process, so its Python-heavy sampling loop
    # never holds this process's GIL while light routes are served (issue 13: reads' p99 under a chat flood)
    generation_process: bool = True
    # chats generating at once, on threads of their own (light routes never wait behind generation); a local model takes
    # them in turns a token step at a time (`pluralign.policy.generator`), each holding its KV cache meanwhile
    generation_workers: int = 4
    # seconds a chat waits on a generation process that makes no progress (no forward pass of any chat, no message):
    # hung; it is killed, the chats it held answered 503, and the next chat starts a new one
    generation_stall_s: float = 60.0
    tenant_generations: int = 4  # chats one tenant may have waiting or running; more get 429 + Retry-After
    generation_queue: int = 32  # chats waiting across all tenants; more get 429 + Retry-After
    # DELETEs run one at a time on their own thread, tenants in turn (with replicas one may wait minutes
    # for the store's maintenance lease): those of one tenant waiting or running, and of all tenants waiting
    tenant_deletes: int = 8  # more get 429 + Retry-After
    delete_queue: int = 64  # more get 429 + Retry-After
    # GET /v1/users/{id}/export answers being sent at once (each holds a LanceDB read, 5-15 MB, while its client
    # reads): of one tenant, and of all tenants; one more is answered 429 `too_many_exports` with Retry-After
    max_exports_per_tenant: int = 4
    max_exports: int = 16
    # seconds an export's client may take no piece of its body (a reader that stopped reading); then it is cut
    # and its slot and LanceDB read given back
    export_send_timeout_s: float = 60.0
    max_context_tokens: int | None = None  # prompt + max_tokens limit (default: the model's context; set it for `openai:URL`)
    # prompt tokens (messages and retrieved shots) one chat may send: its prefill holds the generation
    # worker and costs the model every tenant takes in turns (slices of 64 tokens; a disconnect is seen between
    # two); retrieved shots are left out first; None: only the context limit
    max_prompt_tokens: int | None = 1024
    # prompt tokens one chat may prefill, as its generator prefills them (plain candidates of one prompt share one
    # prefill; styled ones each prefill their own): beyond it styled candidates are cut, then generated plainly, or
    # fewer generated, down to the `n` returned (service.chat.controllers.fit_prefill); None: no bound
    max_prefill_tokens: int | None = 4096
    tenant_requests_per_second: int = 200  # requests per second per tenant (429 + Retry-After beyond); 0: no limit
    tenant_queued_jobs: int = 8  # adapter jobs one tenant may have queued or running (the trigger waits beyond); its audits, apart
    job_attempts: int = 3  # launches of a job before a restart gives it up as failed
    # seconds a finished job's files (record, log, data snapshot, artifact) are kept; audits, served
    # artifacts and each user's (and population kind's) latest job stay (`training.jobs.retention`); 0: keep every job
    job_retention_s: float = 7 * 86400.0
    job_memory_mb: int = 6144  # resident memory one job's worker (with its children) may hold; over it: killed, job failed; 0: no cap (local runner)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (CORS); none by default
    adapter_budget_mb: int = 512  # memory for loaded per-user LoRA adapters; least recently used unload beyond it
    admin_session_s: int = 3600  # the dashboard's login session expires this many seconds after sign-in
    # seconds `pluralign serve` keeps listening once told to stop (SIGTERM), answering every new request 503
    # with Retry-After and X-Request-Id (`service.stopping.draining`): a load balancer still sending here
    # while it learns of the stop gets an answer to retry elsewhere, not a refused or dropped connection.
    # uvicorn itself closes its listening socket and idle connections first thing; 0: it does so at once
    stop_drain_s: float = 0.0
    # seconds `pluralign serve` (and `serve-embeddings`) gives a request to arrive whole (its headers, from the connection's opening or
    # the client's first byte after a response, and its body); a client still sending then gets a 408 (one that
    # sent nothing, no answer) and its connection is closed. uvicorn bounds only an idle connection after a
    # response: a client sending a byte at a time (slowloris) held a connection, and a file descriptor, forever
    request_read_timeout_s: float = 60.0
    # seconds a started stream may be silent before an SSE comment line (`: keep-alive`) goes out, which clients skip:
    # a chat reranking several candidates sends nothing while they are generated (tens of seconds on a CPU), nor does
    # one waiting for a generation slot, and a proxy in front closes a connection silent for longer than its read
    # timeout (nginx: 60 s). Its headers go with the first comment
    sse_keepalive_s: float = 15.0
    # connections `pluralign serve` (and `serve-embeddings`) keeps open at once, each a file descriptor: idle
    # keep-alive ones, ones whose request is arriving, streaming chats for their whole answer. One more is
    # answered 503 with Retry-After and closed; at start the open-files limit is raised to fit (or a value set is
    # refused). Unset: 1000, or as many as the open-files hard limit leaves room for, if fewer (said at start)
    max_connections: int | None = None
    # one line per request (logger `pluralign.access`: method, route template, status, ms, tenant, request id;
    # never a key, a raw path or a body); `pluralign serve` then leaves uvicorn's own access lines out
    access_log: bool = True
    # GET /metrics needs an admin key (a scraper sends `Authorization: Bearer <admin key>`): its totals count every
    # tenant's traffic, so one tenant's own subtracted leaves the others'. False: no key, as /health (service.auth)
    metrics_admin_only: bool = False
    # the bearer token a scraper sends for GET /metrics (`Authorization: Bearer <token>`; Prometheus'
    # `authorization: {credentials: ...}`): a credential that reads /metrics alone, not an admin key. Unset: /metrics
    # answers without a key only a scrape from this machine (a loopback peer, no proxy's forwarding header), an admin
    # key from anywhere (service.system.controllers.metrics)
    metrics_token: str | None = None
    log_format: str = "text"  # `pluralign serve`'s log lines: `text` or `json` (one object a line, for a log shipper)

    def __post_init__(self) -> None:
        for broken, error in RULES:  # the first rule broken is the error
            if broken(self):
                raise ValueError(error if isinstance(error, str) else error(self))

    def check_models(self) -> None:
        """`encoder` and `generator` name what a start can load (a name it knows, a folder, `openai:URL`),
        checked without importing torch or loading anything: a mistyped one is the ValueError loading it
        gives (service.runtime.make_encoder, make_generator) at once, not after seconds of imports and an
        encoder's load. What a folder holds is checked as it loads; an `openai:URL`'s server, at the first request."""
        from service.encoders import is_model_folder

        check_encoder_name(self.encoder, "PLURALIGN_ENCODER (setting encoder)")
        check_server_url(self.generator, GENERATOR_SETTING)
        if not (self.generator.startswith("openai:") or self.generator == "smollm2" or is_model_folder(self.generator)):
            raise ValueError(unknown_generator(self.generator))
        if self.generator_base is not None and not (Path(self.generator_base) / "config.json").is_file():
            raise ValueError(f"{GENERATOR_BASE_SETTING}: expected a folder holding the model the generation server runs "
                             f"(its config.json, weights and tokenizer), got {self.generator_base!r}")

    @property
    def data_path(self) -> Path:
        """`data_dir`, absolute: a job's worker runs in the checkout (`RunnerConfig.cwd`), not in the service's
        working folder, and reads the paths it is given (artifact folder, snapshot, store) as they are."""
        return Path(self.data_dir).absolute()

    @property
    def lancedb_uri(self) -> str:
        return self.store_uri or str(self.data_path / "lancedb")

    @property
    def storage_options(self) -> dict[str, str]:
        """Lance storage options for `lancedb_uri` (empty for a folder)."""
        return self.storage_options_for(self.lancedb_uri)

    def storage_options_for(self, uri: str) -> dict[str, str]:
        """Lance storage options these settings reach the store at `uri` with (`lancedb_uri`, or a command's `--store`):
        for an object store the endpoint, region, allow_http, keys and request bounds (`store_timeout_s`,
        `store_retries`); options left unset are left out (Lance's defaults: the `AWS_*` variables, the instance role).
        Empty for a folder or `memory://`, which none of them reach (a folder's holding
        the endpoint and keys would hand them to every job's worker: `store_environment`)."""
        from pluralign.store.location import is_object_store  # lancedb: imported by whoever opens the store anyway

        if not is_object_store(uri):
            return {}
        ms = max(1, round(self.store_timeout_s * 1000))  # object_store's own: 30 s a request, retried for up to 180 s
        options = {
            "aws_endpoint": self.store_endpoint, "aws_region": self.store_region,
            "allow_http": "true" if self.store_allow_http else None,
            "aws_access_key_id": self.store_access_key_id, "aws_secret_access_key": self.store_secret_access_key,
            "timeout": f"{ms}ms", "connect_timeout": f"{min(ms, 5000)}ms", "client_max_retries": str(self.store_retries),
            "client_retry_timeout": str(max(1, math.ceil(self.store_timeout_s))),
        }
        return {k: v for k, v in options.items() if v}

    def store_environment(self) -> dict[str, str]:
        """The variables a job's worker reaches `lancedb_uri` with as this process does, on this machine or a Ray node
        (which has its own environment): these settings as `PLURALIGN_STORE_*` variables (set here by variable or by the
        PLURALIGN_CONFIG file: the endpoint, region, allow_http, keys and request bounds), each of them, an unset one
        empty (`allow_http` false), so that neither the worker's machine's own `PLURALIGN_STORE_*` variables nor its
        PLURALIGN_CONFIG file fills in one left unset here (variables win over the file; an empty one is no option:
        `storage_options_for`); and the variables Lance reads of this process's environment for what they leave out
        (`pluralign.store.location.LANCE_ENV`: the endpoint, region, keys and what else locates or authenticates a
        store of its scheme, `DYNAMODB_ENDPOINT`). For a folder the request bounds alone: no key of an object store it
        does not use travels to a Ray node. Were the settings unset here
        left out, a worker would read them of its own machine: a store other than the service's, or its keys."""
        from pluralign.store.location import OPTION_ENV, is_object_store, store_environment

        if not is_object_store(self.lancedb_uri):
            lance = {}
        else:
            unset = {**dict.fromkeys(OPTION_ENV, ""), "PLURALIGN_STORE_ALLOW_HTTP": "false"}
            lance = {**unset, **store_environment(self.lancedb_uri, self.storage_options)}
        return {**lance, "PLURALIGN_STORE_TIMEOUT_S": f"{self.store_timeout_s:g}", "PLURALIGN_STORE_RETRIES": str(self.store_retries)}

    @property
    def keys_path(self) -> Path:
        return Path(self.keys_file) if self.keys_file else self.data_path / "api_keys.json"

    @property
    def pal_path(self) -> Path:
        return Path(self.pal_dir) if self.pal_dir else self.data_path / "pal"

    @property
    def shared_data_path(self) -> Path:
        from pluralign.data.shared import shared_data_dir

        return shared_data_dir(self.shared_data)

    @property
    def adapters_path(self) -> Path:
        return Path(self.adapters_dir) if self.adapters_dir else self.data_path / "adapters"

    @property
    def calibration_pools_path(self) -> Path:
        """Where tenants' calibration pools are kept (`service.calibration.pools`)."""
        return Path(self.calibration_pools_dir) if self.calibration_pools_dir else self.own_calibration_pools_path

    @property
    def own_calibration_pools_path(self) -> Path:
        """The calibration pools' folder in this process's own data folder (the default `calibration_pools_path`)."""
        return self.data_path / "calibration-pools"

    @property
    def sync_seconds(self) -> float | None:
        """The Store's `sync_seconds`: None (one replica, nothing to look for) unless set or several."""
        if self.store_sync_ms is None:
            return 1.0 if self.replicas > 1 else None
        return self.store_sync_ms / 1000

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        """Defaults < TOML file named by PLURALIGN_CONFIG < PLURALIGN_* variables < `overrides`.

        Raises ValueError for a PLURALIGN_* variable that is neither a setting nor in OTHER_VARIABLES
        (`check_variables`), and naming where a bad value came from and what is wrong with it:
        "PLURALIGN_MAX_TOKENS (setting max_tokens): expected `int`, got `str` 'abc'", "PLURALIGN_CONFIG
        FILE (setting ...): ...", "PLURALIGN_CONFIG FILE: not TOML (...)" or "...: no setting `name`"."""
        environ = dict(os.environ if environ is None else environ)
        check_variables(environ)
        for old_name, new_name in DEPRECATED_VARIABLES.items():
            if not environ.get(old_name):  # unset, or emptied: names nothing (as its readers took it before)
                environ.pop(old_name, None)
                continue
            if environ.get(new_name, environ[old_name]) != environ[old_name]:
                raise ValueError(redacted(f"{old_name} ({environ[old_name]}) and {new_name} ({environ[new_name]}) differ: "
                                          f"{old_name} is deprecated, unset it and keep {new_name}"))
            warnings.warn(f"{old_name} is deprecated: use {new_name}", DeprecatedVariable, stacklevel=2)
            environ[new_name] = environ.pop(old_name)
        values: dict = {}
        origin: dict[str, str] = {}  # setting -> where its value came from, for an error about it
        config = environ.get(ENV_PREFIX + "CONFIG")
        if config:
            values.update(_read_config(config, cls.__struct_fields__))
            origin.update(dict.fromkeys(values, f"{ENV_PREFIX}CONFIG {config} (setting {{}})"))
        for name in cls.__struct_fields__:
            key = ENV_PREFIX + name.upper()
            if key in environ:
                values[name] = _listed(environ[key]) if name in LIST_SETTINGS else environ[key]
                origin[name] = f"{key} (setting {{}})"
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        origin.update({k: f"--{k.replace('_', '-')}" for k in given})
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            problem, _, path = str(exc).partition(" - at `$.")
            named = [path.rstrip("`")] if path else re.findall(r"`(\w+)`", problem)  # __post_init__'s errors name settings so
            field = next((name for name in named if name in origin), None)
            if field is None:
                raise ValueError(redacted(f"bad setting: {exc}", secret_values(values))) from None
            problem = problem[:1].lower() + problem[1:]
            if problem == "expected `bool`, got `str`":  # a variable's text (`yes`, `off`): msgspec's words name no spelling it takes
                problem = "expected `bool`: `true` or `false` (or `1`, `0`; in any case), got"
            if problem.startswith("expected "):  # a type error: the value given, as given (a secret's withheld)
                problem += " (its value withheld: a credential)" if field in SECRET_SETTINGS else f" {values[field]!r}"
            raise ValueError(redacted(f"{origin[field].format(field)}: {problem}", secret_values(values))) from None


# settings holding a credential: a refusal never repeats their values (nor the password of any URL: `redacted`)
SECRET_SETTINGS = ("store_access_key_id", "store_secret_access_key", "generator_api_key", "encoder_api_key", "metrics_token")


def secret_values(values) -> list[str]:
    """The credentials among settings `values` (a mapping of setting names, or a Settings), for `redacted`."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name, None)
    return [str(get(name)) for name in SECRET_SETTINGS if get(name) is not None]


LIST_SETTINGS = ("cors_origins",)  # a list: in a variable, its items separated by commas (a TOML file: an array)


def _listed(value: str) -> list[str]:
    """A list setting's variable: "a, b," -> ["a", "b"]; empty: no items."""
    return [item.strip() for item in value.split(",") if item.strip()]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_fault(origin: str) -> str | None:
    """Why a browser never sends `origin` as its `Origin` header (RFC 6454: scheme://host[:port], lower
    case, no default port, nothing after it), with the form it would send where there is one; None when
    it may (`*`, any origin, too)."""
    if origin == "*":
        return None
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return f"{redacted(repr(origin))} is not an origin: write scheme://host[:port], as `https://app.example`"
    try:
        port = parts.port
    except ValueError:
        return f"{redacted(repr(origin))} is not an origin: its port is not a number from 0 to 65535"
    scheme, host = parts.scheme.lower(), _browser_host(parts.hostname or "")
    if host is None:
        return f"{redacted(repr(origin))} is not an origin: its host is not a name a browser can send (`*` only as a whole first label: `https://*.app.example`)"
    meant = f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else "")
    if origin != meant or parts.username or parts.password:
        return (f"{redacted(repr(origin))} is never a browser's Origin (scheme and host in lower case, a non-ASCII name in punycode, an IP "
                f"address in its short form, no default port, no path or trailing slash): `{meant}`")
    return None


def _browser_host(host: str) -> str | None:
    """`host` (lower case, as `urlsplit` gives it) as a browser writes it in `Origin` (the WHATWG URL
    standard's host serializer): an IPv6 address compressed, in brackets; an IPv4 address in four decimal
    parts (`127.1` is 127.0.0.1); a name with non-ASCII letters in its punycode (A-label) form; `*` as a
    whole first label kept (Litestar's wildcard: any subdomain). None when no browser sends it: a `*`
    elsewhere (Litestar reads it as `.*`, so `https://app.example*` would let in https://app.example.evil.net),
    a name IDNA refuses."""
    if ":" in host:
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
    wild = "*." if host.startswith("*.") else ""
    rest = host[len(wild):]
    if "*" in rest:
        return None
    if re.fullmatch(r"(0x[0-9a-f]*|\d+)", rest.rstrip(".").rpartition(".")[2]):  # ends in a number: an IPv4 address
        try:
            return socket.inet_ntoa(socket.inet_aton(rest.rstrip(".")))
        except OSError:
            return None
    if not rest.isascii():
        try:
            rest = idna.encode(rest, uts46=True).decode()
        except idna.IDNAError:
            return None
    return wild + rest


# (when a setting's value is broken, what the error says: a string, or one made from the settings),
# checked in this order by Settings.__post_init__. `not lo <= x <= hi` forms also refuse NaN.
Rule = tuple[Callable[[Settings], bool], str | Callable[[Settings], str]]


def _plain_http_refused(settings: Settings) -> bool:
    """Whether the tables are on an object store reached at an `http://` `store_endpoint` that object_store would refuse
    to send to: `store_allow_http` off, and no `AWS_ALLOW_HTTP` (Lance's own fallback for an option not given) allowing
    it (`pluralign.store.location.plain_http_endpoint`, which `pluralign audit --store URI` asks too)."""
    from pluralign.store.location import plain_http_endpoint

    return plain_http_endpoint(settings.lancedb_uri, settings.storage_options) is not None


def _commit_table_problem(settings: Settings) -> str | None:
    from pluralign.store.location import commit_table_problem

    return commit_table_problem(settings.store_uri or "")


def _known_length(settings: Settings) -> int | None:
    """The word pieces the local encoder of `encoder_model` (MiniLM's when unset) reads, where `encoder_max_length` is
    set and the model is one `pluralign.embed.named` knows; else None."""
    if settings.encoder_max_length is None or not settings.encoder.startswith("openai:"):
        return None
    from pluralign.embed.models import MINILM_ID
    from pluralign.embed.named import IDENTITIES

    known = IDENTITIES.get(settings.encoder_model or MINILM_ID)
    return known.max_length if known is not None else None


def _at_least_1(name: str) -> Rule:
    return (lambda s: getattr(s, name) < 1, f"`{name}` must be at least 1")


RULES: tuple[Rule, ...] = (
    # `PLURALIGN_DATA_DIR=$DATA` with DATA unset: else the working folder itself (Path("") is ".")
    (lambda s: not s.data_dir.strip(), "`data_dir` is empty: name the data folder, or leave the setting out for ./data"),
    # answers
    (lambda s: s.candidates < 1, "`candidates` must be at least 1"),
    (lambda s: s.rerank and s.candidates < 2, "`candidates` must be at least 2 when `rerank` is on"),
    # pluralign.bounded_http's MAX_BOUND_S (not imported: the settings load without the HTTP clients). inf, nan or 1e300
    # taken, every chat would fail in the socket (OverflowError), a 500 `internal error`
    (lambda s: not 0 < s.generator_timeout_s <= 86400,
     lambda s: f"`generator_timeout_s` must be above 0 and at most 86400 seconds (a day: each try of a request to the "
               f"generation server, whole), got {s.generator_timeout_s}"),
    (lambda s: not 0 < s.generator_stream_idle_s <= 86400,
     lambda s: f"`generator_stream_idle_s` must be above 0 and at most 86400 seconds (a day: the most a streamed chat may go "
               f"without a piece of it), got {s.generator_stream_idle_s}"),
    (lambda s: not 0 < s.generator_stream_timeout_s <= 86400,
     lambda s: f"`generator_stream_timeout_s` must be above 0 and at most 86400 seconds (a day: a streamed chat, whole), "
               f"got {s.generator_stream_timeout_s}"),
    (lambda s: not 0 < s.encoder_timeout_s <= 86400,
     lambda s: f"`encoder_timeout_s` must be above 0 and at most 86400 seconds (a day: each try of a request to the "
               f"embeddings server, whole), got {s.encoder_timeout_s}"),
    (lambda s: s.encoder_max_length is not None and s.encoder_max_length < 1,
     lambda s: f"`encoder_max_length` must be at least 1, got {s.encoder_max_length}"),
    (lambda s: s.encoder_max_length is not None and not s.encoder.startswith("openai:"),
     lambda s: f"`encoder_max_length` is for an `openai:URL` encoder (a local encoder reads what its model reads), not "
               f"{redacted(repr(s.encoder))}: leave it unset"),
    (lambda s: _known_length(s) not in (None, s.encoder_max_length),
     lambda s: f"`encoder_max_length` {s.encoder_max_length}: {s.encoder_model or 'MiniLM'} reads {_known_length(s)} word "
               "pieces of a text (the local encoder's, which the tables' and the PAL model's vectors are): leave it unset"),
    (lambda s: s.generator_retries < 0, lambda s: f"`generator_retries` must be at least 0, got {s.generator_retries}"),
    # a line end (a Kubernetes secret written with `echo`), a letter outside ASCII: taken,
    # the start would stop in the HTTP library's words naming no setting, or every request be "Connection error."
    # An empty one is no key (the clients send a placeholder), not refused
    *((lambda s, name=name: getattr(s, name) not in (None, "") and not API_KEY.fullmatch(getattr(s, name)),
       f"`{name}` must be printable ASCII, without spaces at its ends nor line ends (it is sent as `Authorization: Bearer "
       "<key>`); the key is not said here")
      for name in ("generator_api_key", "encoder_api_key")),
    (lambda s: s.max_prompt_tokens is not None and s.max_prompt_tokens < 1,
     lambda s: f"`max_prompt_tokens` must be at least 1, got {s.max_prompt_tokens}"),
    (lambda s: s.max_prefill_tokens is not None and s.max_prefill_tokens < 1,
     lambda s: f"`max_prefill_tokens` must be at least 1, got {s.max_prefill_tokens}"),
    # the defaults of a chat's own fields, which the chat checks against the same bounds: out of them, every chat that
    # left the field out would be a 400 naming a field its client never sent
    (lambda s: not 0 <= s.shots <= MAX_SHOTS,
     lambda s: f"`shots` must be 0 to {MAX_SHOTS} (past comparisons put in a chat's context), got {s.shots}"),
    (lambda s: s.max_tokens_limit < 1, lambda s: f"`max_tokens_limit` must be at least 1, got {s.max_tokens_limit}"),
    (lambda s: not 1 <= s.max_tokens <= s.max_tokens_limit,
     lambda s: f"`max_tokens` must be at least 1 and at most `max_tokens_limit` ({s.max_tokens_limit}), got {s.max_tokens}"),
    (lambda s: s.max_context_tokens is not None and s.max_context_tokens < 1,  # 0 was read as unset
     lambda s: f"`max_context_tokens` must be at least 1 when set, got {s.max_context_tokens}"),
    # the prompt's room is the context less the reply's tokens: at `max_tokens` or below it, every chat that sent no
    # `max_tokens` would be a 400 naming `messages` ("cannot fit the prompt budget of 0 tokens")
    (lambda s: s.max_context_tokens is not None and s.max_context_tokens <= s.max_tokens,
     lambda s: f"`max_context_tokens` must be above `max_tokens` ({s.max_tokens}): it holds a chat's prompt and the tokens "
               f"it generates, got {s.max_context_tokens}"),
    (lambda s: s.max_body_bytes < 1, lambda s: f"`max_body_bytes` must be at least 1, got {s.max_body_bytes}"),
    (lambda s: s.admin_session_s < 1, "`admin_session_s` must be at least 1"),
    (lambda s: s.log_format not in ("text", "json"), lambda s: f"`log_format` must be `text` or `json`, got {s.log_format!r}"),
    (lambda s: s.metrics_token is not None and s.metrics_admin_only,
     "`metrics_token` and `metrics_admin_only` exclude each other: with `metrics_admin_only` /metrics takes an admin key alone"),
    (lambda s: s.metrics_token is not None and not METRICS_TOKEN.fullmatch(s.metrics_token),
     "`metrics_token` must be 16-255 printable ASCII characters without spaces (a bearer token: `openssl rand -hex 32`)"),
    # the user model
    (lambda s: not 0.0 <= s.compare_min_bits, lambda s: f"`compare_min_bits` must be >= 0, got {s.compare_min_bits}"),
    (lambda s: not (s.pooled_prior_users == 0 or 2 <= s.pooled_prior_users <= POOLED_PRIOR_MAX_USERS),
     lambda s: f"`pooled_prior_users` must be 0 (off) or 2..{POOLED_PRIOR_MAX_USERS} (the most users a prior "
               f"is estimated from), got {s.pooled_prior_users}"),
    (lambda s: not 0 < s.pooled_prior_spread <= POOLED_PRIOR_MAX_SPREAD,
     lambda s: f"`pooled_prior_spread` must be above 0 (0 closes every direction the users' data left alone) "
               f"and at most {POOLED_PRIOR_MAX_SPREAD:g}, got {s.pooled_prior_spread}"),
    (lambda s: not 0 < s.pooled_prior_ttl_s < float("inf"),
     lambda s: f"`pooled_prior_ttl_s` must be positive and finite, got {s.pooled_prior_ttl_s}"),
    (lambda s: s.profile_examples not in ("own", "tenant"),
     lambda s: f"`profile_examples` must be `own` or `tenant`, got {s.profile_examples!r}"),
    (lambda s: s.next_comparison_pool not in ("tenant", "calibration"),
     lambda s: f"`next_comparison_pool` must be `tenant` or `calibration`, got {s.next_comparison_pool!r}"),
    (lambda s: s.compare_target not in ("best", "coefficients"),
     lambda s: f"`compare_target` must be `best` or `coefficients`, got {s.compare_target!r}"),
    (lambda s: s.user_model not in ("residual", "prototypes"),
     lambda s: f"`user_model` must be `residual` or `prototypes`, got {s.user_model!r}"),
    # the store and replicas
    (lambda s: not 1 <= s.store_cache_mb <= MAX_STORE_CACHE_MB,
     lambda s: f"`store_cache_mb` must be at least 1 and at most {MAX_STORE_CACHE_MB} (1 PiB; LanceDB counts "
               f"its caches' bytes in 64 bits), got {s.store_cache_mb}"),
    (lambda s: s.ingest_batch < 1, "`ingest_batch` must be at least 1"),
    (lambda s: s.tenant_feedback_backlog_rows < 1, "`tenant_feedback_backlog_rows` must be at least 1"),
    (lambda s: s.replicas < 1 or not 0 <= s.replica_index < s.replicas,
     lambda s: f"`replica_index` must be in 0..{s.replicas - 1} and `replicas` at least 1"),
    (lambda s: s.replicas > 1 and not s.store_uri, "`store_uri` must name the shared store when `replicas` is above 1"),
    (lambda s: s.job_runner not in ("local", "ray"), lambda s: f"`job_runner` must be `local` or `ray`, got {s.job_runner!r}"),
    # training.jobs.ray_runner's MIN_PLACE_WAIT_S and MAX_PLACE_WAIT_S (not imported: the settings load without training)
    (lambda s: not 1 <= s.ray_place_wait_s <= 3600,
     lambda s: f"`ray_place_wait_s` must be 1 to 3600 seconds (below 1 s no Ray actor has started: every job is given "
               f"back at each send), got {s.ray_place_wait_s}"),
    (lambda s: not 0 < s.deletion_sweep_s < float("inf"),
     lambda s: f"`deletion_sweep_s` must be positive and finite, got {s.deletion_sweep_s}"),
    (lambda s: not MIN_STORE_TIMEOUT_S <= s.store_timeout_s <= 3600,
     lambda s: f"`store_timeout_s` must be at least {MIN_STORE_TIMEOUT_S:g} (seconds; below it no request to the store "
               f"can finish) and at most 3600, got {s.store_timeout_s:g}"),
    (lambda s: not 0 <= s.store_retries <= 100, lambda s: f"`store_retries` must be 0..100, got {s.store_retries}"),
    (lambda s: s.store_sync_ms is not None and s.store_sync_ms < 0, "`store_sync_ms` must be at least 0"),
    # Lance refuses an s3+ddb:// URI without its one `ddbTableName` before any request, in words naming no setting, once
    # the models have loaded
    (lambda s: _commit_table_problem(s) is not None, lambda s: f"`store_uri` {redacted(s.store_uri)!r}: {_commit_table_problem(s)}"),
    # object_store sends nothing to a plain-http endpoint unless told it may: every request fails `BadScheme`, and the
    # start would end in Lance's words, seconds of model loading later, naming no setting
    (lambda s: _plain_http_refused(s),
     lambda s: f"`store_allow_http` must be true for the plain-http `store_endpoint` {redacted(s.store_endpoint)!r}: the "
               "object store sends no request to an http:// endpoint otherwise. Set PLURALIGN_STORE_ALLOW_HTTP=true (a "
               "local S3-compatible server: MinIO, moto), or give the endpoint as https://"),
    # queues, limits and jobs
    *(_at_least_1(name) for name in ("generation_workers", "tenant_generations", "generation_queue", "tenant_deletes", "delete_queue", "max_exports",
                                     "tenant_queued_jobs", "job_attempts", "max_source_chars", "max_attributes",
                                     "max_attribute_name_chars", "max_attribute_value_chars",
                                     # unchecked, an adapter trigger of 0 would fail the start once the models
                                     # had loaded ("`every` must be at least 1 comparison"), naming no setting
                                     "adapter_every", "compact_every")),
    # 0 job workers queue jobs and run none (the tests' replicas that must not train); a negative count is a typo
    *((lambda s, name=name: getattr(s, name) < 0, f"`{name}` must be 0 or more")
      for name in ("job_workers", "history_cache_mb", "adapter_budget_mb")),
    (lambda s: not 1 <= s.max_exports_per_tenant <= s.max_exports,
     lambda s: f"`max_exports_per_tenant` must be at least 1 and at most `max_exports` ({s.max_exports}), got {s.max_exports_per_tenant}"),
    (lambda s: not 5 <= s.generation_stall_s <= 3600,
     lambda s: f"`generation_stall_s` must be at least 5 and at most 3600 seconds, got {s.generation_stall_s}"),
    (lambda s: not 0 < s.export_send_timeout_s <= 3600,
     lambda s: f"`export_send_timeout_s` must be above 0 and at most 3600 seconds, got {s.export_send_timeout_s}"),
    (lambda s: s.tenant_requests_per_second < 0, "`tenant_requests_per_second` must be 0 (no limit) or more"),
    (lambda s: not 0 <= s.job_retention_s < float("inf"),
     lambda s: f"`job_retention_s` must be 0 (keep every job) or positive and finite, got {s.job_retention_s}"),
    (lambda s: s.job_memory_mb < 0, "`job_memory_mb` must be 0 (no cap) or more"),
    (lambda s: not 0 <= s.stop_drain_s <= 60, lambda s: f"`stop_drain_s` must be 0 (none) to 60 seconds, got {s.stop_drain_s}"),
    (lambda s: not 0 < s.request_read_timeout_s <= 3600,
     lambda s: f"`request_read_timeout_s` must be above 0 and at most 3600 seconds, got {s.request_read_timeout_s}"),
    (lambda s: not 0 < s.sse_keepalive_s <= 300,
     lambda s: f"`sse_keepalive_s` must be above 0 and at most 300 seconds, got {s.sse_keepalive_s}"),
    (lambda s: any(origin_fault(o) for o in s.cors_origins),
     lambda s: "`cors_origins`: " + next(f for f in map(origin_fault, s.cors_origins) if f)),
    (lambda s: s.max_connections is not None and not 1 <= s.max_connections <= MAX_CONNECTIONS,
     lambda s: f"`max_connections` must be at least 1 and at most {MAX_CONNECTIONS}, got {s.max_connections}"),
)


def check_encoder_name(name: str, where: str) -> None:
    """`name` is an encoder the service's `make_encoder` can load (`openai:URL`, a folder, or a name
    `pluralign.embed.named` knows); else a ValueError "<where>: unknown encoder ...", before any import of
    torch or a model library."""
    from service.encoders import is_model_folder

    check_server_url(name, where)
    if name.startswith("openai:") or is_model_folder(name):
        return
    from pluralign.embed.named import encoder_identity

    try:
        encoder_identity(name)
    except ValueError as exc:
        raise ValueError(f"{where}: {redacted(str(exc))}") from None


GENERATOR_SETTING = "PLURALIGN_GENERATOR (setting generator)"
GENERATOR_BASE_SETTING = "PLURALIGN_GENERATOR_BASE (setting generator_base)"


def unknown_generator(name: str) -> str:
    """The error for a generator no start can load ('' too: pathlib reads it as the working folder), naming the
    variable, as an unknown encoder's does."""
    return f"{GENERATOR_SETTING}: expected `smollm2`, a model folder or `openai:URL`, got {redacted(repr(name))}"


def check_keys_file(settings: Settings) -> None:
    """The key file `keys_file` names (PLURALIGN_KEYS_FILE: the one replicas share on a volume), before a start or
    `pluralign keys` reads or makes it: its folder must be there and it must not be a folder itself. Else a ValueError
    naming the setting and the path. A start making the folder (an unmounted volume, a
    typo) would find no keys and print a new development key: every client key refused by that replica. Without
    `keys_file` (the data folder's api_keys.json, made with the data folder) nothing is checked."""
    if not settings.keys_file:
        return
    path, where = settings.keys_path, f"PLURALIGN_KEYS_FILE (setting keys_file) {settings.keys_file}"
    if path.is_dir():
        raise ValueError(f"{where}: a folder, not a key file: name the file in it (e.g. {path / 'api_keys.json'})")
    if not path.parent.is_dir():
        raise ValueError(f"{where}: no such folder as {path.parent.absolute()} (the shared volume not mounted there?): "
                         "name a key file in a folder that is there (the one every replica names)")


def check_calibration_pools_dir(settings: Settings) -> None:
    """The folder `calibration_pools_dir` names (PLURALIGN_CALIBRATION_POOLS_DIR: the one replicas share on a volume),
    before a start: its parent must be a folder (a PUT makes the folder itself), and it must not be a file. Else a
    ValueError naming the setting and the path: an unmounted volume would otherwise get a folder of this replica's own,
    which no other replica reads. With several replicas, a folder in the replica's own data folder is refused too (it
    is shared with none), unless a volume is mounted between them. Without the setting nothing is checked."""
    if not settings.calibration_pools_dir:
        return
    path, where = settings.calibration_pools_path, f"PLURALIGN_CALIBRATION_POOLS_DIR (setting calibration_pools_dir) {settings.calibration_pools_dir}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where}: a file, not a folder: name the folder tenants' calibration pools are kept in")
    if settings.replicas > 1 and _in_own_folder(path, settings.data_path):
        # each replica's data folder is its own: a PUT stored there would be asked by that replica alone
        raise ValueError(f"{where}: in this replica's own data folder {settings.data_path} (PLURALIGN_DATA_DIR), which no "
                         f"other of the {settings.replicas} replicas (PLURALIGN_REPLICAS) reads: name a folder on the "
                         "volume every replica mounts")
    if not path.parent.is_dir():
        raise ValueError(f"{where}: no such folder as {path.parent.absolute()} (the shared volume not mounted there?): "
                         "name a folder in one that is there (the one every replica names)")


def _in_own_folder(path: Path, data_path: Path) -> bool:
    """Whether the folder `path` is in the data folder `data_path` (or is it) with no mount point between them: a volume
    mounted inside it (deploy/k8s/pluralign.yaml mounts the shared one at <data_dir>/shared) is another folder."""
    path, data = path.resolve(), data_path.resolve()
    if not path.is_relative_to(data):
        return False
    while path != data:
        if os.path.ismount(path):
            return False
        path = path.parent
    return True


def check_server_url(name: str, where: str) -> None:
    """An encoder's or generator's `name` of the form `openai:URL` has a URL the `openai` client can reach (an http(s)
    one naming its host: `pluralign.urls.base_url_problem`); else a ValueError "<where>: ...". The client takes
    anything: `openai:` alone (`openai:$VLLM_URL`, the variable unset) started a service whose every chat was a 500."""
    from pluralign.urls import base_url_problem

    if name.startswith("openai:") and (problem := base_url_problem(name.removeprefix("openai:"))):
        raise ValueError(f"{where}: `openai:URL` needs the server's http:// or https:// URL (`openai:http://127.0.0.1:8000/v1`), "
                         f"got {redacted(repr(name))}: {problem}")


def check_variables(environ: dict[str, str] | None = None) -> None:
    """Raises ValueError for the first PLURALIGN_* variable in `environ` (default os.environ) that is
    neither a setting nor in OTHER_VARIABLES nor a Kubernetes service link (SERVICE_LINK): "<variable>: no such setting or variable (did you mean
    <the closest known name>?)", or "(see docs/api.md)" when none is close. One in lower or mixed case
    (`pluralign_data_dir`, which the settings never read) likewise: "<variable>: no such variable; the
    settings' variables are upper case (did you mean PLURALIGN_DATA_DIR?)". And when PLURALIGN_DEVICE
    names a device this machine lacks, or no device at all (`pluralign.device.check_device_variable`)."""
    environ = os.environ if environ is None else environ
    known = [name.upper() for name in Settings.__struct_fields__] + [name.removeprefix(ENV_PREFIX) for name in OTHER_VARIABLES]
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].upper()
        if name == name.upper() and (rest in known or SERVICE_LINK.fullmatch(rest)):
            continue
        # the prefix alone is not close; one set already is not meant (`pluralign_data_dir` beside PLURALIGN_DATA_DIR),
        # by its name or the old one it replaced
        close = closest_name(rest, known)
        meant = DEPRECATED_VARIABLES.get(f"{ENV_PREFIX}{close}", f"{ENV_PREFIX}{close}") if close else None  # never an old name
        if close and (meant in environ or f"{ENV_PREFIX}{close}" in environ):  # (os.environ: `None in` raises)
            meant = None
        hint = f"did you mean {meant}?" if meant else "see docs/api.md"
        if name != name.upper():  # `pluralign_max_tokens`: variables are case-sensitive, and ours are upper case
            raise ValueError(f"{name}: no such variable; the settings' variables are upper case ({hint})")
        raise ValueError(f"{name}: no such setting or variable ({hint})")
    if environ.get("PLURALIGN_DEVICE"):  # torch only then: `pluralign keys` starts without it
        from pluralign.device import check_device_variable

        check_device_variable(environ)


def _read_config(config: str, fields: tuple[str, ...]) -> dict:
    """The settings in the TOML file `config` (PLURALIGN_CONFIG). Raises ValueError naming it when
    it cannot be read, is not TOML, or names a setting there is not (a typo would be ignored; the
    closest setting is named)."""
    where = f"{ENV_PREFIX}CONFIG {config}"
    try:
        values = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: not TOML ({exc})") from None
    unknown = [name for name in values if name not in fields]
    if unknown:
        if unknown[0].lower() in fields and unknown[0].lower() not in values:  # written as its variable is
            raise ValueError(f"{where}: no setting `{unknown[0]}` (did you mean `{unknown[0].lower()}`? the file's settings are lower case)")
        close = closest_name(unknown[0], fields, given=values)  # one the file holds is not meant
        raise ValueError(f"{where}: no setting `{unknown[0]}`" + (f" (did you mean `{close}`?)" if close else ""))
    return values
