"""GET /health (no key needed) and GET /metrics (`check_scraper`: from this machine no key; from elsewhere the setting
`metrics_token`'s bearer token or an admin key; with the setting `metrics_admin_only` an admin key alone).

What they show to whom (docs/operations.md, "What one tenant sees of another"): the service's state and totals, never a
tenant's name, a user id or a job id, nor a figure of one tenant. A total of every tenant's (/health's `feedback_pending`
and `vectors_owed`) goes only to whoever /metrics answers (`reads_totals`): a tenant's own figure subtracted from it leaves
the others'. A tenant's key reads its own tenant's figure instead where there is one (`feedback_pending`; a purge owed
names text hashes, which tenants' texts share, not a tenant: `vectors_owed` is null to it); any other caller (a probe from
elsewhere) none. /health's answer thus depends on the key sent: every answer says `Vary: Authorization`, and one that
carries a figure `Cache-Control: no-store` (`health_headers`: the totals depend on the caller's address too, which no
`Vary` names); `service.web_headers` leaves a public path's headers as its handler sends them."""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections import Counter
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Literal

from litestar import Litestar, Request, get
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.response import Response

from pluralign.data.record import Base
from service.auth import CHALLENGE, INVALID_TOKEN, bearer_key
from service.metrics import CONTENT_TYPE
from service.runtime import Runtime


def _public(model_id: str) -> str:
    """A hub-style id as it is; a model loaded from a folder by the folder's name, not its path."""
    return Path(model_id).name if Path(model_id).is_absolute() else model_id


class Health(Base, kw_only=True):
    """GET /health's answer (a Struct so the OpenAPI document names each field, not only `object`)."""

    status: Literal["ok", "degraded"]  # degraded: `storage`, `clocks` or `replicas` says why
    storage: list[dict[str, Any]]  # tables (or the feedback log) failing lately: {what, action, problem, failures, since, last}
    clocks: str | None  # with replicas: why DELETEs are refused (clocks apart); None when they are not
    replicas: str | None  # with replicas: live replicas set up with another PLURALIGN_REPLICAS; None when none is seen
    generator: str  # the served generator's model id (a folder's name, never its path)
    encoder: str  # the text encoder's id
    pal: dict[str, Any]  # the population model: trained, version, digest (the same whatever the release), k, kind
    # acknowledged feedback rows not yet embedded into the table: every tenant's to whoever /metrics answers, a tenant's
    # own to its key, null to anyone else (`pending_for`)
    feedback_pending: int | None
    # purges of deleted users' vectors a busy embedding cache put off (vectors-owed/), retried each pass: to whoever
    # /metrics answers, null to anyone else, a tenant key too (a purge names no tenant)
    vectors_owed: int | None


@get("/health", sync_to_thread=False, summary="Readiness and what is loaded")
def health(request: Request) -> Response[Health]:
    rt: Runtime = request.app.state.runtime
    sent = bearer_key(request.headers.get("authorization", ""))
    # /health needs no key (probes send none), so the key is looked up here: an unknown one is no key
    entry = rt.keys.lookup(sent) if sent is not None else None
    tenant = entry.tenant if entry is not None and not entry.admin else None
    # a tenant key reads its own tenant's figures, and no total, wherever it calls from (where /metrics would answer it)
    totals = tenant is None and reads_totals(request, rt, sent)
    # public: model ids and versions only, never a filesystem path (the PAL note names its folder)
    pal = {k: v for k, v in rt.rewards.describe().items() if k != "note"}
    # tables (or the feedback log) that failed to be read or written lately: the operator's log names the folder
    storage = rt.store.problems.recent()
    # with replicas: clocks seen further apart than store_sync_ms, while DELETEs are refused (pluralign.store.clocks)
    clocks = rt.deletion_sweep.clocks_problem() if rt.deletion_sweep is not None else None
    # with replicas: live replicas set up with another PLURALIGN_REPLICAS (they divide the users differently)
    replicas = rt.deletion_sweep.replicas_problem() if rt.deletion_sweep is not None else None
    answer = Health(status="degraded" if storage or clocks or replicas else "ok", storage=storage, clocks=clocks,
                    replicas=replicas, generator=_public(rt.generator.model_id), encoder=_public(rt.encoder.encoder_id), pal=pal,
                    feedback_pending=pending_for(rt, tenant, totals), vectors_owed=rt.owed_vectors.owed() if totals else None)
    return Response(answer, headers=health_headers(answer))


def pending_for(rt: Runtime, tenant: str | None, totals: bool) -> int | None:
    """/health's `feedback_pending` for its caller: a tenant key's own tenant's rows (`tenant`); every tenant's when the
    caller reads the totals (`totals`: an admin key, or whoever /metrics answers without a tenant key, `reads_totals`);
    None to anyone else."""
    if tenant is not None:
        return rt.ingest.log.tenant_pending_rows(tenant)
    return rt.ingest.log.backlog()[1] if totals else None


def health_headers(answer: Health) -> dict[str, str]:
    """/health's caching headers: `Vary: Authorization` on every answer (its figures depend on the key: a cache must
    not hand one caller's to a caller with another key, nor a keyless probe's nulls to a tenant), and `Cache-Control:
    no-store` on one carrying a figure (a tenant's own, or the totals, which a keyless caller on the service's machine
    reads and one from elsewhere does not: no `Vary` names the caller's address)."""
    figures = answer.feedback_pending is not None or answer.vectors_owed is not None
    return {"Vary": "Authorization", **({"Cache-Control": "no-store"} if figures else {})}


# /metrics' caching headers, on every answer it gives (the scrape, its 401): `Vary: Accept` for the format Prometheus
# negotiates (the text format or OpenMetrics), `Authorization` for the key or token that may read it, and `no-store`
# because whether the totals or a 401 come back also depends on the caller's address, which no `Vary` can name (a cache
# on this machine that adds no `Via` would otherwise hand a keyless local scrape's totals to whoever asked it next)
METRICS_HEADERS = {"Vary": "Accept, Authorization", "Cache-Control": "no-store"}

ROWS_WAIT_S = 2.0  # the longest a scrape waits for the tables' row counts before it reports the last ones


class TableRows:
    """The tables' row counts for /metrics, counted on a thread of their own, one count at a time: a
    scrape waits at most ROWS_WAIT_S for the count, then reports the last one it got. Counted in the
    scrape, an object store that hangs held every scrape for its timeouts and retries (33 s with
    `store_timeout_s` 1 s on replicas, which count on the store), past a scraper's own timeout
    (Prometheus: 10 s), so the storage-failure gauge beside it was never read when it mattered."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._counting: Future | None = None
        self._last: dict[str, int] = {}

    def _count(self, future: Future) -> None:
        try:
            future.set_result(self.store.stats())
        except BaseException as exc:  # noqa: BLE001 - handed to the scrape that waits, if any
            future.set_exception(exc)

    def get(self, wait_s: float = ROWS_WAIT_S) -> dict[str, int]:
        with self._lock:
            if self._counting is None or self._counting.done():
                self._counting = Future()
                threading.Thread(target=self._count, args=(self._counting,), name="table-rows", daemon=True).start()
            counting = self._counting
        try:
            self._last = counting.result(timeout=wait_s)
        except FutureTimeout:
            pass
        return self._last


def scrape_state(app: Litestar) -> list:
    """What /metrics reads from the runtime at scrape time: (name, kind, help, [(labels, value)])."""
    rt: Runtime = app.state.runtime
    _, pending = rt.ingest.log.backlog()
    histories = rt.store.histories
    rows = app.state.get("table_rows")
    if rows is None:
        rows = app.state.table_rows = TableRows(rt.store)
    state = [
        ("pluralign_table_rows", "gauge", "rows per LanceDB table", [({"table": name}, n) for name, n in rows.get().items()]),
        ("pluralign_storage_failures", "gauge", "failures to read or write stored data lately, of what /health lists under storage",
         [({}, sum(p["failures"] for p in rt.store.problems.recent()))]),
        ("pluralign_feedback_pending_rows", "gauge", "acknowledged feedback rows still in the log (not yet embedded)", [({}, pending)]),
        ("pluralign_vectors_owed", "gauge", "purges of deleted users' vectors a busy embedding cache put off (files in the data "
         "folder's vectors-owed/), retried each pass of the unfinished DELETEs and at each job's exit", [({}, rt.owed_vectors.owed())]),
        ("pluralign_retractions_owed", "gauge", "rows this replica stored that another replica's pending retraction took back "
         "meanwhile, not taken back yet (tried again until done; retractions-owed.json in the data folder)",
         [({}, len(rt.owed_retractions))]),
        ("pluralign_feedback_moved_rows", "counter", "feedback rows embedded and moved into the table since start", [({}, rt.ingest.moved)]),
        ("pluralign_feedback_dead_letter_rows", "gauge", "acknowledged feedback rows set aside after failing on their own "
         "(GET /admin/feedback/dead-letter: rows the store refused), kept until requeued or discarded",
         [({}, rt.ingest.dead_letters.rows())]),
        ("pluralign_feedback_set_aside_rows", "counter", "feedback rows the worker set aside as dead letters since start",
         [({}, rt.ingest.set_aside)]),
        ("pluralign_feedback_refused", "counter", "feedback requests and imports refused since start, by reason (feedback_backlog: "
         "the tenant's rows waiting in the feedback log were at PLURALIGN_TENANT_FEEDBACK_BACKLOG_ROWS)",
         [({"reason": "feedback_backlog"}, rt.ingest.log.refused)]),
        ("pluralign_feedback_left_out_rows", "counter", "acknowledged feedback rows the mover left out since start: their pref_id "
         "was stored with other content (by another replica, on a store without pref_id claims)", [({}, rt.ingest.left_out)]),
        ("pluralign_exports_in_flight", "gauge", "user exports being sent now, of at most PLURALIGN_MAX_EXPORTS",
         [({}, rt.exports.in_flight)]),
        ("pluralign_exports_refused", "counter", "user exports answered 429 too_many_exports since start", [({}, rt.exports.refused)]),
        ("pluralign_history_cache_users", "gauge", "users whose history is held in memory", [({}, len(histories))]),
        ("pluralign_history_cache_hits", "counter", "history reads answered from memory", [({}, histories.hits)]),
        ("pluralign_history_cache_misses", "counter", "history reads loaded from LanceDB", [({}, histories.misses)]),
        ("pluralign_adapter_bytes", "gauge", "users' LoRA adapters held in memory, in bytes (with openai:URL, their files' size), "
         "by state: loaded (within adapter_budget_mb) and evicted_in_use (out of the pool, evicted past the budget, retrained "
         "or deleted, while chats generate with them: held beside the budget until those chats end, at most one adapter "
         "per chat generating; and those served beside the budget without being kept, a take of smaller tenants' room "
         "refused: each until a load of another adapter finds no chat generating with it)",
         [({"state": "loaded"}, rt.adapters.bytes_used), ({"state": "evicted_in_use"}, rt.adapters.bytes_evicted_in_use)]),
        ("pluralign_adapter_budget_bytes", "gauge", "adapter_budget_mb, in bytes", [({}, rt.adapters.budget_bytes)]),
        ("pluralign_embed_truncated_texts", "counter",
         "texts embedded since start that were longer than the encoder reads (only their start counts)",
         [({}, getattr(rt.encoder, "truncated", 0))]),
    ]
    connections = app.state.get("connections")  # `pluralign serve`'s (training.commands.serve.ConnectionCounts)
    if connections is not None:
        state += [
            ("pluralign_open_connections", "gauge", "HTTP connections open to this process (idle, a request arriving or answered, "
             "streaming), of at most pluralign_max_connections", [({}, connections.open)]),
            ("pluralign_max_connections", "gauge", "PLURALIGN_MAX_CONNECTIONS in force (-1: unbounded)",
             [({}, -1 if connections.limit is None else connections.limit)]),
            ("pluralign_connections_refused", "counter", "connections answered 503 too_many_connections at once, over "
             "PLURALIGN_MAX_CONNECTIONS, since start", [({}, connections.refused)]),
        ]
    sweep = rt.deletion_sweep
    if sweep is not None:  # with replicas (pluralign.store.clocks)
        state += [
            ("pluralign_replica_clock_skew_seconds", "gauge",
             "the largest lead of one replica's clock over another's seen (or still held), which DELETEs are judged by",
             [({}, sweep.clocks.skew.seconds)]),
            ("pluralign_replica_clocks_refusing_deletes", "gauge",
             "1 while DELETEs are refused (clocks_disagree: a skew over store_sync_ms, or two processes with one replica index)",
             [({}, float(sweep.clocks_disagree()))]),
            ("pluralign_replica_counts_disagree", "gauge",
             "1 while a live replica runs with another PLURALIGN_REPLICAS than this one (or an index this one's count has no "
             "place for): some users' adapter jobs are queued twice, others' never", [({}, float(sweep.replicas_problem() is not None))]),
        ]
    admin = app.state.get("admin")
    if admin is not None:
        by = Counter((job.kind, job.state) for job in admin.runner.list(limit=1 << 30))
        states = ("queued", "running", "succeeded", "failed", "cancelled")
        kinds = sorted({kind for kind, _ in by} | set(getattr(admin.runner, "kinds", {}) or {}))
        samples = [({"kind": kind, "state": s}, by.get((kind, s), 0)) for kind in kinds for s in states]
        state.append(("pluralign_jobs", "gauge", "training and audit jobs by kind and state", samples))
    return state


# headers a proxy adds to what it passes on: a request carrying one came through a proxy, from wherever its client is;
# `Via` is the one RFC 9110 (7.6.3) requires of every proxy (else a cache adding only it, Varnish's
# or a Squid not forwarding the client's address, would pass on scrapes as from this machine)
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-envoy-external-address", "via")


def from_this_machine(request: Request) -> bool:
    """Whether the request's peer is a loopback address and no proxy says it passed it on (`FORWARDING_HEADERS`). An
    IPv4 peer of a dual-stack socket (IPV6_V6ONLY off: one handed to the app by whatever embeds it; `pluralign serve
    --host ::` is IPv6 alone, asyncio sets IPV6_V6ONLY) is seen as its IPv4-mapped address (`::ffff:127.0.0.1`, RFC
    4291 2.5.5.2), read as the IPv4 address it maps (`ipaddress`'s `ipv4_mapped`), so a mapped
    loopback address is loopback."""
    host = request.client.host if request.client is not None else None
    try:
        peer = ipaddress.ip_address(host) if host is not None else None
    except ValueError:  # not an address (a unix socket's peer, a test client's name)
        peer = None
    mapped = getattr(peer, "ipv4_mapped", None)
    loopback = peer is not None and (mapped or peer).is_loopback
    return loopback and not any(name in request.headers for name in FORWARDING_HEADERS)


def reads_totals(request: Request, rt: Runtime, sent: str | None) -> bool:
    """Whether the caller, who sent the bearer key or token `sent`, may read every tenant's figures together: whoever
    /metrics answers. An admin key; with the setting `metrics_admin_only` nobody else; else the token `metrics_token`,
    and without that setting a request from this machine (`from_this_machine`), whatever `Authorization` it carries."""
    if sent is not None and (entry := rt.keys.lookup(sent)) is not None and entry.admin:
        return True
    if rt.settings.metrics_admin_only:
        return False
    token = rt.settings.metrics_token
    if sent is not None and token is not None and hmac.compare_digest(sent.encode(), token.encode()):
        return True
    return token is None and from_this_machine(request)


def check_scraper(request: Request, rt: Runtime) -> None:
    """Who may read /metrics (its totals count every tenant's traffic: with two tenants, the totals less one's own are
    the other's). A scraper sending `Authorization: Bearer <metrics_token>` or an admin key; without the setting
    `metrics_token`, also a scrape from this machine without a key (`from_this_machine`: `make serve`, a Prometheus or
    agent beside the service), whatever `Authorization` it carries (a tenant's client set up with its key: no
    401, as the same scrape without the header is answered). Raises a 401 with
    `WWW-Authenticate: Bearer` saying which setting to use."""
    token = rt.settings.metrics_token
    sent = bearer_key(request.headers.get("authorization", ""))
    if reads_totals(request, rt, sent):
        return
    if token is None:
        problem = ("`/metrics` answers a scrape from another machine (or through a proxy) with `Authorization: Bearer "
                   "<PLURALIGN_METRICS_TOKEN>` or an admin key: its totals count every tenant's traffic. Set "
                   "PLURALIGN_METRICS_TOKEN on the service and give the scraper the same token")
    else:
        problem = ("`/metrics` needs `Authorization: Bearer <PLURALIGN_METRICS_TOKEN>` (the scraper's token set on the "
                   "service) or an admin key: its totals count every tenant's traffic")
    raise NotAuthorizedException(problem, headers={**(CHALLENGE if sent is None else INVALID_TOKEN), **METRICS_HEADERS})


@get("/metrics", sync_to_thread=True, summary="Prometheus text format, or OpenMetrics when `Accept` asks for it", media_type=CONTENT_TYPE)
def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    if rt.settings.metrics_admin_only and not request.user.admin:  # the key was checked (it is no public path then)
        raise PermissionDeniedException("`/metrics` needs an admin key here (PLURALIGN_METRICS_ADMIN_ONLY): its totals count every tenant's traffic")
    if not rt.settings.metrics_admin_only:
        check_scraper(request, rt)
    # `?name[]=x&name[]=y`: those series only, as prometheus_client's own exposition answers (a blank one names none,
    # as its `parse_qs` drops it)
    names = [name for name in request.query_params.getall("name[]", []) if name]
    body, content_type = rt.metrics.render(request.headers.get("accept"), names)
    return Response(body, media_type=content_type, headers=METRICS_HEADERS)
