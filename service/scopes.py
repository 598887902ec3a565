"""A request's state (its body, its JSON decoded) is let go once it is answered, not kept by its connection.

The server keeps each connection's last request's scope until the next request on that connection (uvicorn's
`RequestResponseCycle`, for its protocol's `cycle`), and Litestar caches the request's body and decoded JSON in the
scope's `state` (its `ScopeState`). A client's connection idle between requests (an SDK's pool keeps it open,
uvicorn's `timeout_keep_alive` 5 s by default) thus held the last chat's messages, or feedback's texts, after the
answer, and after a DELETE of their user sent on another connection. Neither uvicorn nor Litestar has a setting to
drop it, hence this wrapper, outside every other (`service.app`): nothing reads the state once the app returned.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Receive, Scope, Send


def released_once_answered(app: ASGIApp) -> ASGIApp:
    """`app`, the state of whose HTTP requests (`scope["state"]`: uvicorn's copy of the lifespan state for this
    request, Litestar's parsed body in it) is emptied once `app` returned for them, answered or failed."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan's state is the app's own, copied into each request's scope
            await app(scope, receive, send)
            return
        try:
            await app(scope, receive, send)
        finally:
            state = scope.get("state")
            if isinstance(state, dict):
                state.clear()

    return handler
