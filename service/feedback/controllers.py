"""POST /v1/feedback."""

from __future__ import annotations

from litestar import Request, post
from litestar.params import JSONBody

from service.feedback import services
from service.feedback.schemas import FeedbackBody, FeedbackReceipt
from service.runtime import Runtime


@post("/v1/feedback", sync_to_thread=True, status_code=201, summary="Record feedback (choice, comparison, rating or edit)")
def create_feedback(request: Request, data: JSONBody[FeedbackBody]) -> FeedbackReceipt:
    """201 only once the rows are committed to LanceDB. The user's reward is then refitted in the
    background; a request of the user that comes first refits it itself, so it is never stale."""
    rt: Runtime = request.app.state.runtime
    receipt = services.record(rt, request.user.tenant, data)
    admin = request.app.state.get("admin")
    if admin is not None:  # enough new comparisons queue an adapter job: checked after the reply, not before it
        rt.background.submit(admin.on_feedback, request.user.tenant, receipt.user)
    return receipt
