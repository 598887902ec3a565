"""`service.openapi.install` serves a later app the document built for an earlier one with the same routes
(speed41c): only when nothing the document says differs. Two apps whose routes share a path, a method and
a handler function but differ in what the handler or its router declare (status, summary, tags, security,
response headers) each get their own document; apps alike share one (what keeps a test service's start fast)."""

from __future__ import annotations

from litestar import Litestar, Router, get
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.datastructures import ResponseHeader
from litestar.openapi import OpenAPIConfig

from service.openapi import install


async def probe() -> dict:
    return {}


def probe_sync() -> dict:  # Litestar wraps it in an `AsyncCallable` of each app's own
    return {}


def document(*route_handlers) -> dict:
    app = Litestar(route_handlers=list(route_handlers), openapi_config=OpenAPIConfig(title="pluralign", version="0.1.0"))
    install(app)
    return app.plugins.get(OpenAPIPlugin).provide_openapi_schema()


def test_a_handler_s_own_declarations_are_in_its_app_s_document():
    first = document(get("/admin/probe-r41", summary="one", tags=["one"])(probe))["paths"]["/admin/probe-r41"]["get"]
    second = document(get("/admin/probe-r41", summary="two", tags=["two"], status_code=202, deprecated=True)(probe))
    second = second["paths"]["/admin/probe-r41"]["get"]
    assert (first["summary"], first["tags"], "200" in first["responses"]) == ("one", ["one"], True)
    assert (second["summary"], second["tags"], "202" in second["responses"], "200" in second["responses"]) == ("two", ["two"], True, False)
    assert second.get("deprecated") is True


def test_what_a_router_declares_for_its_handlers_is_in_its_app_s_document():
    handler = get("/probe-r41-router")(probe)
    plain = document(Router(path="/layer", route_handlers=[handler]))["paths"]["/layer/probe-r41-router"]["get"]
    layered = document(Router(path="/layer", route_handlers=[handler], tags=["layered"],
                              response_headers=[ResponseHeader(name="X-Layer", value="1", description="the layer's")]))
    layered = layered["paths"]["/layer/probe-r41-router"]["get"]
    assert "tags" not in plain and "X-Layer" not in plain["responses"]["200"].get("headers", {})
    assert layered["tags"] == ["layered"]
    assert "X-Layer" in layered["responses"]["200"]["headers"]


def test_apps_with_the_same_routes_share_one_document_sync_handlers_too():
    handlers = (get("/probe-r41-same")(probe), get("/probe-r41-sync", sync_to_thread=False)(probe_sync))
    first, second = document(*handlers), document(*handlers)
    assert second is first
    assert "ErrorBody" in second["components"]["schemas"] and second["paths"]["/probe-r41-sync"]["get"]["responses"]["500"]
