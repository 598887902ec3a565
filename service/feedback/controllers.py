"""POST /v1/feedback."""

from __future__ import annotations

from litestar import Request, post
from litestar.params import JSONBody

from service.feedback import services
from service.feedback.schemas import FeedbackBody, FeedbackReceipt
from service.runtime import Runtime


@post("/v1/feedback", status_code=201, summary="Record feedback (choice, comparison, rating or edit)")
async def create_feedback(request: Request, data: JSONBody[FeedbackBody]) -> FeedbackReceipt:
    """201 only once the rows are on disk (the feedback log, fsynced). Embedding them, moving them into
    the preferences table, refitting the user's reward and the adapter trigger all run after the
    reply; a request of the user that comes first moves their rows and refits them itself."""
    rt: Runtime = request.app.state.runtime
    return await services.record(rt, request.user.tenant, data)
