"""GET /health and GET /metrics (no key needed)."""

from __future__ import annotations

from pathlib import Path

from litestar import Request, get
from litestar.response import Response

from service.runtime import Runtime


def _public(model_id: str) -> str:
    """A hub-style id as it is; a model loaded from a folder by the folder's name, not its path."""
    return Path(model_id).name if Path(model_id).is_absolute() else model_id


@get("/health", sync_to_thread=False, summary="Readiness and what is loaded")
def health(request: Request) -> dict:
    rt: Runtime = request.app.state.runtime
    # public: model ids and versions only, never a filesystem path (the PAL note names its folder)
    pal = {k: v for k, v in rt.rewards.describe().items() if k != "note"}
    return {
        "status": "ok",
        "generator": _public(rt.generator.model_id),
        "encoder": _public(rt.encoder.encoder_id),
        "pal": pal,
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
    rt.metrics.set_gauge("pluralign_embed_truncated_texts", getattr(rt.encoder, "truncated", 0),
                         help="texts embedded since start that were longer than the encoder reads (only their start counts)")
    histories = rt.store.histories
    rt.metrics.set_gauge("pluralign_history_cache_users", len(histories), help="users whose history is held in memory")
    rt.metrics.set_gauge("pluralign_history_cache_hits", histories.hits, help="history reads answered from memory")
    rt.metrics.set_gauge("pluralign_history_cache_misses", histories.misses, help="history reads loaded from LanceDB")
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")
