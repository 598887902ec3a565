"""POST /v1/feedback."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, post
from litestar.params import HeaderParameter, JSONBody

from service.errors import KEY_REUSED, error_responses
from service.feedback import services
from service.feedback.schemas import FeedbackBody, FeedbackReceipt
from service.ids import user_header_lines
from service.runtime import Runtime


@post("/v1/feedback", status_code=201, responses=error_responses(404, 413, 422, 429, 503, 507, why={422: KEY_REUSED}), summary="Record feedback (choice, comparison, rating or edit)",
      response_description="Acknowledged once on disk: `stored` lists the ids of the preference rows it made")
async def create_feedback(
    request: Request,
    data: JSONBody[FeedbackBody],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
) -> Response[FeedbackReceipt]:
    """201 only once the rows are on disk (the feedback log, fsynced). Embedding them, moving them into
    the preferences table, refitting the user's reward and the adapter trigger all run after the
    reply; a request of the user that comes first moves their rows and refits them itself.

    Send `Idempotency-Key` to retry safely: a retry of a feedback already stored (even across a
    crash) stores nothing and answers 201 with the first receipt and `Idempotent-Replayed: true`. A `choice`,
    `rating` or `edit` sent without one that is the same as the last feedback stored on its response (a button
    clicked twice) is answered so too."""
    rt: Runtime = request.app.state.runtime
    services.one_idempotency_key(request)
    receipt, replayed = await services.record(rt, request.user.tenant, data, idempotency_key, user_header_lines(request))
    return Response(receipt, status_code=201, headers={"Idempotent-Replayed": "true"} if replayed else None)
