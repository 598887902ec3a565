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
        "feedback_pending": rt.ingest.log.backlog()[1],  # acknowledged rows not yet embedded into the table
    }


@get("/metrics", sync_to_thread=True, summary="Prometheus text format")
def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    for name, count in rt.store.stats().items():
        rt.metrics.set_gauge("pluralign_table_rows", count, help="rows per LanceDB table", table=name)
    records, rows = rt.ingest.log.backlog()
    rt.metrics.set_gauge("pluralign_feedback_pending_rows", rows, help="acknowledged feedback rows still in the log (not yet embedded)")
    rt.metrics.set_gauge("pluralign_feedback_moved_rows", rt.ingest.moved, help="feedback rows embedded and moved into the table since start")
    histories = rt.store.histories
    rt.metrics.set_gauge("pluralign_history_cache_users", len(histories), help="users whose history is held in memory")
    rt.metrics.set_gauge("pluralign_history_cache_hits", histories.hits, help="history reads answered from memory")
    rt.metrics.set_gauge("pluralign_history_cache_misses", histories.misses, help="history reads loaded from LanceDB")
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
