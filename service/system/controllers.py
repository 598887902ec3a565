"""GET /health and GET /metrics (no key needed)."""

from __future__ import annotations

from litestar import Request, get
from litestar.response import Response

from service.runtime import Runtime


@get("/health", sync_to_thread=False, summary="Readiness and what is loaded")
def health(request: Request) -> dict:
    rt: Runtime = request.app.state.runtime
    return {
        "status": "ok",
        "generator": rt.generator.model_id,
        "encoder": rt.encoder.encoder_id,
        "pal": rt.rewards.describe(),
        "store": rt.store.uri,
    }


@get("/metrics", sync_to_thread=True, summary="Prometheus text format")
def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    for name, count in rt.store.stats().items():
        rt.metrics.set_gauge("pluralign_table_rows", count, help="rows per LanceDB table", table=name)
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
