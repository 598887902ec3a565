"""Prometheus metrics with `prometheus_client`, one registry per app (tests build several in a process).

Request counters and latency histograms are labelled by the full route template
(`/admin/jobs/{job_id:str}`), so cardinality stays bounded; requests no route matched count as
`route="unmatched"`. The `method` label is one of HTTP's own methods (RFC 9110 and PATCH) or
`other`: a server may take any token as a method (uvicorn's h11 does), and each made-up one would
be a series of its own. Values that live elsewhere (table rows, the feedback backlog, jobs by state,
the generation queue) are read at scrape time by `StateCollector`. `process_*` and `python_*`
metrics come from prometheus_client's own collectors.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable

from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from service.head import HEAD_KEY
from service.requestid import Hangup

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# the classic text format, which every Prometheus reads, answered unless the scraper asks for another
# (`Accept`); Litestar adds `; charset=utf-8`
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.removesuffix("; charset=utf-8")
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"
STOP_CUT = 503  # a request cancelled by the server's graceful wait before its answer began: `draining` answers it so
_COUNTED = "pluralign.metrics.counted"  # scope key: the request was counted by the middleware
# Series that exist from the start, at 0 (Prometheus: "avoid missing metrics"), so an alert or a
# rate() over one reads 0, not "no data", before its first event: name -> (help, label values).
# A request's route and status, which no list bounds ahead, are not among them.
DECLARED_COUNTERS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "pluralign_chat_completions_total": ("chat completions served", {"stream": ("false", "true")}),
    "pluralign_chat_cancelled_total": ("chats stopped because their client disconnected", {}),
    "pluralign_chat_stopped_total": ("chats the service's stop ended: waiting (503, never begun) or generating (cut: a 503, a "
                                     "stream's error event)", {"when": ("waiting", "generating")}),
    "pluralign_stream_errors_total": ("streams that ended with an error event", {}),
    "pluralign_feedback_rows_total": ("preference rows written", {"kind": ("comparison", "choice", "rating", "edit", "import")}),
    "pluralign_feedback_replayed_total": ("feedback retries answered from what was stored", {}),
    "pluralign_chat_replayed_total": ("chats sent again with an Idempotency-Key already answered: the first answer given, "
                                      "nothing generated", {}),
    "pluralign_users_deleted_total": ("users deleted", {}),
    "pluralign_preferences_retracted_total": ("stored preferences taken back by their users "
                                              "(DELETE /v1/users/{user_id}/preferences/{pref_id})", {}),
    "pluralign_preferences_retractions_pending_total": ("retractions recorded for rows in no table yet, with replicas (a 202: "
                                                        "dropped when they come)", {}),
    "pluralign_compactions_total": ("background table compactions", {}),
    "pluralign_population_swaps_total": ("population reward models swapped in while serving", {}),
    "pluralign_deletions_applied_total": ("other replicas' user deletions applied to this replica's files", {}),
    "pluralign_unfinished_deletes_finished_total": ("DELETEs a stopped process left unfinished, finished from the journal", {}),
    "pluralign_tenants_removed_total": ("tenants removed whole (every user, job and key of theirs: `POST /admin/tenants/{tenant}/removal`; "
                                        "one that found nothing is not counted)", {}),
    "pluralign_jobs_pruned_total": ("finished jobs whose files the job retention removed", {}),
    "pluralign_exports_stalled_total": ("exports cut because their client took no piece of the body for export_send_timeout_s", {}),
    "pluralign_adapters_unusable_total": ("users' adapters found damaged or built for another base model (each once, until its files "
                                          "change); their users are served by the fallback", {}),
}
DECLARED_HISTOGRAMS = {"pluralign_personalization_seconds": "retrieval + context + rerank time"}


class Metrics:
    """The app's registry. `inc`/`observe`/`set_gauge` create a metric on first use, by name and
    label names (a counter's name ends in `_total`); `track` counts requests in a section of code."""

    def __init__(self):
        # collectors naming no series ahead (StateCollector: read at scrape time) are asked at every `?name[]=` scrape too
        self.registry = CollectorRegistry(auto_describe=True, support_collectors_without_names=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._lock = threading.Lock()
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self.state_reader: Callable[[], list] | None = None  # set by the app factory: see StateCollector
        self.registry.register(StateCollector(lambda: self.state_reader() if self.state_reader else []))
        self.generation_queue = self._get(
            Gauge, "pluralign_generation_queue", "chat requests waiting for or running generation (up to generation_workers run at once, in turns)", ()
        )
        for name, (help, labels) in DECLARED_COUNTERS.items():
            counter = self._get(Counter, name, help, tuple(labels))
            for label, values in labels.items():  # one label each
                for value in values:
                    counter.labels(**{label: value})
        for name, help in DECLARED_HISTOGRAMS.items():
            self._get(Histogram, name, help, (), buckets=BUCKETS)

    def _get(self, kind, name: str, help: str, labels: Iterable[str], **kwargs):
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None:
                metric = kind(name, help or name, labelnames=tuple(labels), registry=self.registry, **kwargs)
                self._metrics[name] = metric
            elif not isinstance(metric, kind):
                raise ValueError(f"metric {name!r} is a {type(metric).__name__}, not a {kind.__name__}")
        return metric

    @staticmethod
    def _child(metric, labels: dict[str, str]):
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        """Add `value` (>= 0) to the counter `name` (which must end in `_total`)."""
        if not name.endswith("_total"):
            raise ValueError(f"counter names end in _total, got {name!r}")
        self._child(self._get(Counter, name, help, sorted(labels)), labels).inc(value)

    def observe(self, name: str, seconds: float, help: str = "", **labels: str) -> None:
        """Record `seconds` in the histogram `name`."""
        self._child(self._get(Histogram, name, help, sorted(labels), buckets=BUCKETS), labels).observe(seconds)

    def set_gauge(self, name: str, value: float, help: str = "", **labels: str) -> None:
        self._child(self._get(Gauge, name, help, sorted(labels)), labels).set(value)

    def render(self, accept: str | None = None, names: Iterable[str] = ()) -> tuple[bytes, str]:
        """The registry in the exposition format an `Accept` header asks for, and its content type:
        OpenMetrics 1.0 (`application/openmetrics-text`, what Prometheus asks for first) or the text
        format (`text/plain; version=1.0.0` asked for, else 0.0.4, `CONTENT_TYPE`), chosen by
        prometheus_client's own `choose_encoder`. With `names` (sample names: `x_total`, `x_bucket`), only those
        samples, as prometheus_client's own exposition answers `?name[]=...` (its `restricted_registry`); none
        of them found: an empty body."""
        encode, content_type = choose_encoder(accept or "")
        if content_type.startswith("text/"):  # Litestar adds the charset to a text type, even one that names it
            content_type = content_type.replace("; charset=utf-8", "")
        names = set(names)
        return encode(self.registry.restricted_registry(names) if names else self.registry), content_type


class StateCollector(Collector):
    """Gauges and running totals read from the runtime when Prometheus scrapes.

    `read()` returns (name, kind, help, [(labels, value), ...]) tuples; kind is "gauge" or "counter"."""

    def __init__(self, read: Callable[[], list[tuple[str, str, str, list[tuple[dict[str, str], float]]]]]):
        self.read = read

    def collect(self):
        for name, kind, help, samples in self.read():
            labelnames = sorted({k for labels, _ in samples for k in labels})
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help, labels=labelnames)
            for labels, value in samples:
                family.add_metric([str(labels.get(k, "")) for k in labelnames], value)
            yield family


def route_of(scope: Scope) -> str:
    """The full route template the request matched (router prefix included: `/admin/jobs/{job_id}`),
    or `unmatched`. A mount (static files) reports the path asked for, so it is cut to the mount."""
    handler = scope.get("route_handler")
    if handler is not None and getattr(handler, "is_mount", False):
        return next(iter(handler.paths)).rstrip("/") + "/{file_path}"
    return scope.get("path_template") or UNMATCHED


def access_route_of(scope: Scope) -> str:
    """`route_of`, and for a request whose path a route has but not its method (405: Litestar then sets no
    template) that route's template, so the access log names it (never the raw path: user ids are in
    paths). `unmatched` when no route has the path (404)."""
    route = route_of(scope)
    app = scope.get("app")
    if route != UNMATCHED or app is None:
        return route
    path = scope.get("path", "")
    return next((template for pattern, template in _route_patterns(app) if pattern.fullmatch(path)), UNMATCHED)


@functools.lru_cache(maxsize=8)
def _route_patterns(app) -> list[tuple[re.Pattern, str]]:
    """Each HTTP route of `app` as (a regex its paths match, its template), plain paths before those with
    parameters (`/v1/users/export` before `/v1/users/{user_id}`); a `:path` parameter spans segments."""
    found = []
    for route in app.routes:
        if not hasattr(route, "path_format") or getattr(route, "is_mount", False):
            continue
        pattern = re.sub(r"\\\{(\w+):path\\\}", ".*", re.escape(route.path))
        pattern = re.sub(r"\\\{\w+(?::\w+)?\\\}", "[^/]+", pattern)
        found.append((len(route.path_parameters), re.compile(pattern), route.path_format))
    return [(pattern, template) for _, pattern, template in sorted(found, key=lambda f: f[0])]


def method_of(scope: Scope) -> str:
    """The request's method as a label value: HTTP's own methods as sent, any other token `other`
    (methods are case-sensitive: `get` is not GET). A HEAD is HEAD, though it is routed as a GET inside."""
    if scope.get(HEAD_KEY):
        return "HEAD"
    method = scope.get("method", "")
    return method if method in METHODS else OTHER_METHOD


def _count(metrics: Metrics, scope: Scope, status: int, seconds: float | None) -> None:
    route, method = route_of(scope), method_of(scope)
    metrics.inc("pluralign_http_requests_total", help="HTTP requests by route template, method and status", route=route, method=method, status=str(status))
    if seconds is not None:
        metrics.observe("pluralign_http_request_seconds", seconds, help="HTTP request latency by route template", route=route, method=method)


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Counts HTTP requests by route template and status, and times them. A request whose answer ends is counted as its
    last piece is handed to the server, before it goes out: a client that has read the answer (a scrape right after it,
    a test) finds it counted. Counted after it, a scrape on a loaded machine could come first.
    A request with no such piece (an exception, a client gone before any answer) is counted once its handling ends;
    one the service's stop cut off before its answer began as the 503 `service.stopping.draining` answers it (not a 500,
    as the access log says 503)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        scope[_COUNTED] = True  # type: ignore[literal-required]
        start = time.perf_counter()
        status = {"code": 500}  # an exception before the answer began
        hangup, began, counted = Hangup(receive), False, False

        def count() -> None:
            nonlocal counted
            if not counted:
                counted = True
                _count(scope["litestar_app"].state.runtime.metrics, scope, status["code"], time.perf_counter() - start)

        async def send_wrapper(message) -> None:
            nonlocal began
            if message["type"] == "http.response.start":
                status["code"], began = message["status"], True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                count()  # the answer's last piece: counted before it goes
            await send(message)

        try:
            await app(scope, hangup.receive, send_wrapper)
            status["code"] = hangup.status(status["code"] if began else None)  # a client gone before any answer: 499
        except HTTPException as exc:  # raised by inner middleware (auth); answered by the app's handler
            status["code"] = exc.status_code
            raise
        except asyncio.CancelledError:  # the server's graceful wait ran out: `service.stopping.draining` answers 503
            status["code"] = status["code"] if began else STOP_CUT
            raise
        finally:
            count()

    return middleware


def count_unrouted(exc: Exception, scope: Scope) -> None:
    """An `after_exception` hook: requests that never reached a route (no path matched: 404; the
    method is not allowed: 405) are counted here, since route middleware never ran for them."""
    if scope.get("type") != "http" or scope.get(_COUNTED):
        return
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    _count(scope["litestar_app"].state.runtime.metrics, scope, status, None)
