"""Service settings: defaults, overridden by a TOML file (PLURALIGN_CONFIG), then by PLURALIGN_* env vars."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import msgspec

from pluralign.data.record import Base

ENV_PREFIX = "PLURALIGN_"


class Settings(Base, frozen=True):
    """Everything the app factory needs; each field can be set as PLURALIGN_<NAME> (upper case)."""

    data_dir: str = "./data"  # API keys, the PAL checkpoint, adapters and (by default) LanceDB live here
    store_uri: str | None = None  # LanceDB URI (a folder or object store); default <data_dir>/lancedb
    generator: str = "smollm2"  # `smollm2`, a folder holding a saved causal LM, or `openai:URL` (vLLM)
    generator_model: str | None = None  # with `openai:URL`: the base model's name on that server
    generator_api_key: str | None = None  # with `openai:URL`: the server's key, if it wants one
    encoder: str = "minilm"  # `minilm` or a sentence-transformers folder (embeds prompts and answers)
    pal_dir: str | None = None  # PAL checkpoint folder; default <data_dir>/pal (bootstrapped if absent)
    shared_data: str = "../shared/data"  # persona data used to bootstrap a PAL checkpoint
    candidates: int = 4  # answers generated per request when reranking (at least 2)
    rerank: bool = True  # rerank candidates by the user's PAL reward
    user_model: str = "residual"  # `residual`: PAL's prototypes plus a per-user Bayesian residual; `prototypes`: PAL weights only
    maxmin_new_users: bool = True  # users still on the prior get the candidate best for the worst-off PAL prototype
    shots: int = 4  # past preferences put in the context
    max_tokens: int = 128  # default completion length
    max_tokens_limit: int = 1024  # largest max_tokens a request may ask for
    max_body_bytes: int = 1_000_000  # larger request bodies get 413
    compact_every: int = 50  # table commits between background compactions (rows appended since are outside the BITMAP index and scanned)
    ingest_batch: int = 64  # feedback records embedded and moved into the preferences table per batch
    history_cache_mb: int = 512  # users' histories (rows + vectors, ~470 KiB per 100 rows at 384-d) kept for retrieval and refits
    adapter_every: int = 50  # new comparisons of a user that queue an adapter job for them
    job_workers: int = 1  # training/audit jobs running at once (each in its own process)
    fspo_adapter: str | None = None  # FSPO adapter folder (`pluralign train fspo --out`): serves users without their own
    generation_workers: int = 1  # threads that generate (their own: light routes never wait behind generation)
    tenant_generations: int = 4  # chats one tenant may have waiting or running; more get 429 + Retry-After
    generation_queue: int = 32  # chats waiting across all tenants; more get 429 + Retry-After
    max_context_tokens: int | None = None  # prompt + max_tokens limit (default: the model's context; set it for `openai:URL`)
    tenant_requests_per_second: int = 200  # requests per second per tenant (429 + Retry-After beyond); 0: no limit
    tenant_queued_jobs: int = 8  # adapter jobs one tenant may have queued or running (the trigger waits beyond)
    job_attempts: int = 3  # launches of a job before a restart gives it up as failed
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (CORS); none by default
    adapter_budget_mb: int = 512  # memory for loaded per-user LoRA adapters; least recently used unload beyond it

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError("`candidates` must be at least 1")
        if self.rerank and self.candidates < 2:
            raise ValueError("`candidates` must be at least 2 when `rerank` is on")
        if self.user_model not in ("residual", "prototypes"):
            raise ValueError(f"`user_model` must be `residual` or `prototypes`, got {self.user_model!r}")
        if self.ingest_batch < 1:
            raise ValueError("`ingest_batch` must be at least 1")
        for name in ("generation_workers", "tenant_generations", "generation_queue", "tenant_queued_jobs", "job_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")
        if self.tenant_requests_per_second < 0:
            raise ValueError("`tenant_requests_per_second` must be 0 (no limit) or more")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def lancedb_uri(self) -> str:
        return self.store_uri or str(self.data_path / "lancedb")

    @property
    def pal_path(self) -> Path:
        return Path(self.pal_dir) if self.pal_dir else self.data_path / "pal"

    @property
    def adapters_path(self) -> Path:
        return self.data_path / "adapters"

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        """Defaults < TOML file named by PLURALIGN_CONFIG < PLURALIGN_* variables < `overrides`."""
        environ = dict(os.environ if environ is None else environ)
        values: dict = {}
        config = environ.get(ENV_PREFIX + "CONFIG")
        if config:
            values.update(tomllib.loads(Path(config).read_text()))
        for name in cls.__struct_fields__:
            key = ENV_PREFIX + name.upper()
            if key in environ:
                values[name] = environ[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"bad setting: {exc}") from None
