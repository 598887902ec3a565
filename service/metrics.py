"""Counters and latency histograms rendered in the Prometheus text format (no extra dependency)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters and histograms, keyed by name and labels."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, str], float] = defaultdict(float)
        self.histograms: dict[tuple[str, str], list] = {}
        self.help: dict[str, tuple[str, str]] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        self.help.setdefault(name, ("counter", help))
        with self._lock:
            self.counters[(name, _labels(labels))] += value

    def set_gauge(self, name: str, value: float, help: str = "", **labels: str) -> None:
        self.help.setdefault(name, ("gauge", help))
        with self._lock:
            self.counters[(name, _labels(labels))] = value

    def observe(self, name: str, seconds: float, help: str = "", **labels: str) -> None:
        self.help.setdefault(name, ("histogram", help))
        key = (name, _labels(labels))
        with self._lock:
            counts, total = self.histograms.setdefault(key, [[0] * (len(BUCKETS) + 1), [0.0, 0]])
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            total[0] += seconds
            total[1] += 1

    def render(self) -> str:
        lines = []
        with self._lock:
            for name in sorted(self.help):
                kind, text = self.help[name]
                lines.append(f"# HELP {name} {text or name}")
                lines.append(f"# TYPE {name} {kind}")
                if kind in ("counter", "gauge"):
                    for (n, labels), value in sorted(self.counters.items()):
                        if n == name:
                            lines.append(f"{name}{labels} {value:g}")
                    continue
                for (n, labels), (counts, (total, count)) in sorted(self.histograms.items()):
                    if n != name:
                        continue
                    running = 0
                    for bound, c in zip((*BUCKETS, float("inf")), counts, strict=True):
                        running += c
                        le = "+Inf" if bound == float("inf") else f"{bound:g}"
                        inner = (labels[1:-1] + "," if labels else "") + f'le="{le}"'
                        lines.append(f"{name}_bucket{{{inner}}} {running}")
                    lines.append(f"{name}_sum{labels} {total:.6f}")
                    lines.append(f"{name}_count{labels} {count}")
        return "\n".join(lines) + "\n"


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Counts HTTP requests by route and status, and times them."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        except HTTPException as exc:  # raised by inner middleware (auth); answered by the app's handler
            status["code"] = exc.status_code
            raise
        finally:
            metrics: Metrics = scope["litestar_app"].state.runtime.metrics
            handler = scope.get("route_handler")
            route = next(iter(handler.paths)) if handler is not None else "unmatched"
            method = scope.get("method", "")
            metrics.inc("pluralign_http_requests_total", help="HTTP requests by route and status", route=route, method=method, status=str(status["code"]))
            metrics.observe("pluralign_http_request_seconds", time.perf_counter() - start, help="HTTP request latency", route=route, method=method)

    return middleware
