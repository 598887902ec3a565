"""The app factory: `create_app(settings)` returns a ready Litestar app (models loaded, tables open).

Tenant routes need a tenant key; the admin routes (jobs, audits, dashboard; or `admin_handlers` when
given) are mounted under /admin and need an admin key. The job runner starts and stops with the app. Tests pass a `runtime` built from tiny models; `pluralign serve` passes settings only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from litestar import Litestar, Router
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.middleware._internal.cors import CORSMiddleware  # the one Litestar wraps its router in (2.25 pinned)
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from service.admin.controllers import ADMIN_HANDLERS, close_admin, start_admin, stop_admin
from service.admin.paths import check_jobs_folder
from service.admin.session import SESSION_HANDLERS, AdminSessions
from service.admin.tenants import list_users
from service.auth import BearerAuth, admin_guard, caller_lane, public_paths, tenant_guard
from service.calibration.controllers import delete_calibration_pool, get_calibration_pool, put_calibration_pool
from service.chat.controllers import create_chat_completion, list_models, retrieve_model
from service.docs_page import SwaggerPage, docs_router_hook
from service.errors import internal_error_handler, refuse_request_id
from service.feedback.controllers import create_feedback
from service.feedback.services import after_move, refit_waiting
from service.head import answer_head
from service.heap import freeze_started_heap, thaw
from service.ids import one_segment_ids
from service.metrics import access_route_of, count_unrouted, method_of, metrics_middleware
from service.openapi import install as install_openapi
from service.ratelimit import rate_limit
from service.requestid import app_logging, with_request_ids
from service.runtime import Runtime
from service.scheduler import TenantThreads, request_threads
from service.scopes import released_once_answered
from service.settings import Settings
from service.startup_files import check_startup_files
from service.stopping import STOPPING, draining
from service.strict import DecodedRequest, before_request
from service.system.controllers import health, metrics, scrape_state
from service.tenants import TenantRequests, tenant_requests_middleware
from service.users.controllers import (
    delete_user,
    export_user,
    get_stated,
    get_user,
    import_preferences,
    list_preferences,
    next_comparison,
    patch_stated,
    retract_preference,
    retract_preference_by_query,
    score_responses,
)
from service.users.retractions import retract_owed
from service.users.services import UnfinishedDeletes, keep_dropped_refits, refit_dropped
from service.web_headers import VaryKeepingCORS, keyed_answers

log = logging.getLogger("pluralign.service")

TENANT_HANDLERS = (
    create_chat_completion, list_models, retrieve_model, create_feedback,
    get_user, list_preferences, export_user, import_preferences, delete_user, retract_preference,
    retract_preference_by_query, score_responses,
    get_stated, patch_stated, next_comparison, list_users,
    put_calibration_pool, get_calibration_pool, delete_calibration_pool,
)


# the answer headers a page on another origin may read (besides the few CORS always lets through): what a UI
# and the `openai` JS SDK act on: the request id to quote, the stated preferences' entity tag for If-Match,
# when to retry and how much of the rate limit is left, whether feedback was a replay, an export's file name,
# a queued job's address
EXPOSED_HEADERS = ("X-Request-Id", "ETag", "Retry-After", "RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining",
                   "RateLimit-Reset", "Idempotent-Replayed", "Content-Disposition", "Location")


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    admin_handlers: Sequence[ControllerRouterHandler] | None = None,
) -> Litestar:
    settings = settings or (runtime.settings if runtime else Settings.load())
    # before any model loads: what startup would fail on is an error naming the file, at once
    check_jobs_folder(runtime.settings if runtime else settings)
    if runtime is not None:
        return _assemble(settings, runtime, admin_handlers)
    check_startup_files(settings)
    runtime = Runtime.build(settings)
    try:
        app = _assemble(settings, runtime, admin_handlers)
        app.state.owns_runtime = True  # built here: its stop ends what the runtime started (`_close_generator`)
        return app
    except BaseException:  # a stop (SIGTERM, Ctrl-C) or a failure once the models loaded: what it started ends now
        runtime.close()
        raise


def _assemble(settings: Settings, runtime: Runtime, admin_handlers: Sequence[ControllerRouterHandler] | None) -> Litestar:
    """The app around a built `runtime` (`create_app`)."""
    _wire_ingest(runtime)
    route_handlers: list[ControllerRouterHandler] = [
        health,
        metrics,
        create_static_files_router(path=DOCS_ASSETS, directories=[swagger_ui_static()], include_in_schema=False, name="docs-assets"),
        Router(path="/", route_handlers=list(TENANT_HANDLERS), guards=[tenant_guard]),
    ]
    admin_handlers = ADMIN_HANDLERS if admin_handlers is None else admin_handlers
    if admin_handlers:
        route_handlers.append(Router(path="/admin", route_handlers=list(admin_handlers), guards=[admin_guard]))
        route_handlers.extend(SESSION_HANDLERS)  # the dashboard's login form: no key needed to reach it
    app = Litestar(
        route_handlers=route_handlers,
        middleware=[
            metrics_middleware,
            *([rate_limit(settings.tenant_requests_per_second).middleware] if settings.tenant_requests_per_second else []),
            DefineMiddleware(BearerAuth, exclude=public_paths(settings.metrics_admin_only)),
            tenant_requests_middleware,  # inside the key's check: each tenant's requests being handled (a removal's last look)
        ],
        # a ValueError is no client's error unless raised as `bad_request` (service.errors): it is a 500
        exception_handlers={HTTPException: internal_error_handler, Exception: internal_error_handler},
        openapi_config=OpenAPIConfig(
            title="pluralign", version="0.1.0", description="Personalized chat completions, feedback and users",
            render_plugins=[swagger_page()],  # the first plugin also serves /schema
            # Litestar's own 404 page under /schema is HTML: the hook makes it the API's JSON 404, and gives
            # the docs pages a content security policy fitted to their inline script
            openapi_router=Router(path="/schema", route_handlers=[], include_in_schema=False, after_request=docs_router_hook),
        ),
        request_max_body_size=settings.max_body_bytes,
        request_class=DecodedRequest,  # a body read in its charset is what the routes' own decoding reads
        # answers of 1 KiB and more are gzipped for a client that accepts it (an export: ~6x smaller); never a
        # chat completion, whose stream's events must reach the client as they are written, unbuffered
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024, exclude=["^/v1/chat/completions$"]),
        before_request=before_request,
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            # any header a listed origin's page asks for (Litestar names each back: `*` would not cover
            # Authorization): If-Match, X-Pluralign-User (deploy/README.md), and what client libraries add,
            # the `openai` JS SDK's X-Stainless-* and OpenAI-Organization, tracing's traceparent; the server
            # ignores a header it does not read, as it does for any client that is not a browser
            allow_headers=["*"], max_age=600, expose_headers=list(EXPOSED_HEADERS),
        ) if settings.cors_origins else None,
        debug=False,
        logging_config=app_logging(settings.log_format),  # Litestar's own, with the request id on every line
        on_startup=[_share_request_threads, start_admin, _start_deletion_sweep, _start_unfinished_deletes, _refit_dropped, _retract_owed, _freeze_heap],
        on_shutdown=[stop_taking_work, _stop_unfinished_deletes, _stop_deletion_sweep, stop_admin, _stop_refits, _stop_ingest, close_admin, _close_generator,
                     _thaw_heap],
        after_exception=[count_unrouted],
    )
    # every answer, routed or not, carries X-Request-Id, and its access-log line is written (service.requestid)
    app.state.draining = False  # `pluralign serve` told to stop and draining (setting stop_drain_s): every request 503
    # and every answer, refusals included, says how it may be cached and never to sniff it (service.web_headers)
    # the refusals made outside Litestar's router (a malformed request id, a draining service's 503) get the
    # CORS headers the app's other answers get, so a browser reads them
    if app.cors_config:  # the router's CORS, keeping the answer's own Vary (service.web_headers)
        if not isinstance(app.asgi_handler, CORSMiddleware):  # what Litestar 2.25 builds (requirements.txt pins it)
            raise TypeError(f"Litestar's router is no longer wrapped in its CORS middleware: {app.asgi_handler!r}")
        app.asgi_handler = VaryKeepingCORS(app.asgi_handler.app, app.cors_config)
    with_cors = partial(VaryKeepingCORS, config=app.cors_config) if app.cors_config else None
    # outside every other: a request's state (its body, its JSON) is let go once answered, not kept by its idle
    # connection until the next request on it (service.scopes)
    app.asgi_handler = released_once_answered(keyed_answers(answer_head(with_request_ids(
        draining(one_segment_ids(app.asgi_handler), lambda: app.state.draining, around=with_cors), log_access=settings.access_log,
        tenant_of=_tenant_of, route_of=access_route_of, refuse=refuse_request_id, method_of=method_of,
        around_refusal=with_cors or (lambda refusal: refusal),
    )), public_paths(settings.metrics_admin_only), cors=app.cors_config is not None))  # HEAD wherever GET is (Litestar routes only declared methods)
    app.state.runtime = runtime
    app.state.tenant_requests = TenantRequests()  # `tenant_requests_middleware` counts them; a tenant's removal waits on them
    app.state.admin_sessions = AdminSessions(settings.admin_session_s, still_admin=runtime.keys.is_admin)
    runtime.metrics.state_reader = partial(scrape_state, app)  # gauges read at scrape time
    install_openapi(app)
    return app


DOCS_ASSETS = "/schema/assets"


def _tenant_of(scope) -> str | None:
    """The tenant whose key the request presented (None: no key, an admin key's own tenant is named too)."""
    return getattr(scope.get("user"), "tenant", None)


def swagger_ui_static() -> Path:
    """Swagger UI's JS, CSS and icons as shipped in the `swagger-ui-py` wheel (found, not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def swagger_page() -> SwaggerRenderPlugin:
    """/schema and /schema/swagger, drawn from assets the app serves itself: no CDN, works offline."""
    return SwaggerPage(  # Litestar's page with a lang, a main landmark, readable colours (service/docs_page.py)
        path="/swagger",
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
    )


def _share_request_threads(app: Litestar) -> None:
    """The request threads take the tenants' waiting work in turn (`TenantThreads`), not first come first
    served: one tenant's burst of slow requests queued every other tenant's behind it."""
    asyncio.get_running_loop().set_default_executor(TenantThreads(request_threads(), lane=caller_lane))


def _freeze_heap(app: Litestar) -> None:
    """Last of the start: what the service loaded is left out of full garbage collections while it serves
    (`service.heap`): one tenant's body of many JSON arrays made them walk it all, stalling every tenant."""
    app.state.heap_frozen = freeze_started_heap()


def _close_generator(app: Litestar) -> None:
    """The generation process of an app that built its runtime (`pluralign serve`) ends with its stop, once the
    requests in flight are answered or cut: a call that comes later (a chat's thread the stop cut off, still planning)
    raises GeneratorClosed (the stop's 503) and starts no process. Left to the
    interpreter's exit, the process would let such a call start a new one that no one ended. An app around a runtime it was
    given leaves it to its owner. A remote generator's and encoder's connections are closed there too (not left
    to the interpreter's exit), a call after it the server's error (503), nothing sent."""
    if not app.state.get("owns_runtime"):
        return
    for model in (app.state.runtime.generator, app.state.runtime.encoder):
        if hasattr(model, "close"):  # `ProcessGenerator`, `RemoteGenerator`, `RemoteEncoder`
            model.close()


def _thaw_heap(app: Litestar) -> None:
    if app.state.pop("heap_frozen", None) is not None:
        thaw()


def _start_deletion_sweep(app: Litestar) -> None:
    """With several replicas: apply other replicas' DELETEs to this one's files (service.deletions),
    after the admin area has hooked its jobs folder in; and serve a new population model put into the shared
    PLURALIGN_PAL_DIR (service.pal_dir)."""
    for periodic in (app.state.runtime.deletion_sweep, app.state.runtime.pal_dir_watch):
        if periodic is not None:
            periodic.start()


def _stop_deletion_sweep(app: Litestar) -> None:
    for periodic in (app.state.runtime.deletion_sweep, app.state.runtime.pal_dir_watch):
        if periodic is not None:
            periodic.stop()


def _start_unfinished_deletes(app: Litestar) -> None:
    """Finish the DELETEs a stopped process left in the journal (`service.users.journal`), now and every
    `deletion_sweep_s`, after the admin area has hooked its jobs folder in (their population files)."""
    runtime = app.state.runtime
    app.state.unfinished_deletes = UnfinishedDeletes(runtime, runtime.settings.deletion_sweep_s)
    app.state.unfinished_deletes.start()


def _stop_unfinished_deletes(app: Litestar) -> None:
    finishing = app.state.get("unfinished_deletes")
    if finishing is not None:
        finishing.stop()


def stop_taking_work(app: Litestar) -> int:
    """The service is told to stop: work still waiting for its turn never begins, and its clients get 503
    with Retry-After at once (nothing done: safe to send again, to another replica or once this one is
    back): chats waiting for a generation slot (streamed or not) and DELETEs waiting for theirs, and
    so does every chat or DELETE received from now on. What runs goes on: chats generating now until
    `cut_running`, a running DELETE to its end (or the journal finishes it at the next start).
    `pluralign serve` calls it when uvicorn begins its shutdown, before it waits for the requests in
    flight; the app's shutdown calls it again. An audit's move of its tenant's feedback under way (`POST /admin/jobs`,
    the audit route) ends too: 503 with Retry-After, nothing queued (`Admin.stopping`). Returns how many waiting chats and
    DELETEs were refused."""
    if (admin := app.state.get("admin")) is not None:
        admin.stopping.set()
    return app.state.runtime.scheduler.close(STOPPING) + stop_taking_deletes(app)


def cut_running(app: Litestar) -> int:
    """The service is stopping and its graceful wait is nearly over: the chats still generating stop at
    their next token; a plain one is answered 503 with Retry-After (nothing stored), a stream ends with
    an error event saying the service stops, then `[DONE]`, rather than being cut mid-body when the
    server's graceful timeout cancels its request. `pluralign serve` calls it a second before uvicorn's
    timeout. Returns how many chats were stopped."""
    return app.state.runtime.chats.cut()


def stop_taking_deletes(app: Litestar) -> int:
    """The service is told to stop: DELETEs still waiting for their turn never begin, their clients get
    503 with Retry-After at once (nothing of the user deleted: safe to send again), and so does every
    DELETE received from now on; a running DELETE goes on (the journal finishes it at the next start if the
    process ends first). `pluralign serve` calls it when uvicorn begins its shutdown, before it waits for
    the requests in flight (and would answer them 500 once its graceful timeout ran out); the app's
    shutdown calls it again. Returns how many waiting DELETEs were refused."""
    return app.state.runtime.deletes.close(STOPPING)


def _refit_dropped(app: Litestar) -> None:
    """The refits the last stop dropped (`service.users.services.refit_dropped`) are queued in the background:
    those users' stored rows are brought up to date without waiting for their next read. So are those of the users
    whose feedback the log replayed, when the worker moved all of it before `after_move` was hooked in (while the
    population model loaded); else the move that empties the log queues them (`refit_waiting`)."""
    runtime = app.state.runtime
    queued = refit_dropped(runtime)
    if queued:
        log.info("starting: %d background refits the last stop dropped, or a crash left waiting, are queued again", queued)
    if replayed := refit_waiting(runtime):
        log.info("starting: %d background refits of users whose feedback the log replayed are queued", replayed)


def _retract_owed(app: Litestar) -> None:
    """With replicas, the rows the last run stored that a retraction through another replica took back meanwhile, and
    that it had not taken back yet (a crash: `service.owed_retractions`), are taken back now, on the DELETEs' threads."""
    if owed := retract_owed(app.state.runtime):
        log.info("starting: %d rows taken back through another replica while they were stored here are taken back now", owed)


def _stop_refits(app: Litestar) -> None:
    """Refits queued behind the feedback never run here and the running one ends, before the ingest worker stops:
    no background refit reads or writes the tables once the app has stopped (the next start refits those users)."""
    dropped = app.state.runtime.stop_refits()
    if dropped:
        log.info("stopping: %d background refits dropped (the next start refits those users)", dropped)


def _stop_ingest(app: Litestar) -> None:
    """The worker stops; what it had not moved stays in the log and is replayed at the next start. The users whose
    refits the stop dropped (those of the rows it moved last included), or the log's backlog still held back, are kept
    for the next start (the log says how many)."""
    runtime = app.state.runtime
    try:
        runtime.ingest.close()
    finally:
        if kept := keep_dropped_refits(runtime):
            log.info("stopping: the background refits of %d users are kept for the next start", kept)


def _wire_ingest(runtime: Runtime) -> None:
    """Rows the ingestor moves into the table trigger compaction and (when caught up) refits."""
    hook = partial(after_move, runtime)
    if not any(getattr(h, "func", None) is after_move for h in runtime.moved_hooks):
        runtime.moved_hooks.append(hook)
