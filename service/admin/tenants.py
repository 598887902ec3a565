"""A tenant's users, and the removal of a whole tenant (docs/admin.md, "Tenants"):

    GET  /admin/tenants/{tenant}/users?after=&limit=   a page of the tenant's users: ids, row counts, last activity
    POST /admin/tenants/{tenant}/removal               remove every trace of the tenant (202; 200: one is running)
    GET  /admin/tenants/{tenant}/removal               its progress
    GET  /v1/users?after=&limit=                       a tenant key: its own tenant's users, the same page

The listing reads the store (`pluralign.store.tenants`); the removal runs in the background (`service.tenants`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, get, post
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import Response

from pluralign.store.tenants import MAX_PAGE, TenantUser
from service.errors import (
    bad_request,
    error_response,
    error_responses,
    query_not_utf8,
    storage_failure_of,
    storage_response,
)
from service.ids import tenant_problem
from service.tenants import KeysKeptElsewhere, TenantRemoval, TenantRemovals, TenantUnseen, read_removal


class TenantUserPage(msgspec.Struct, kw_only=True):
    """A page of a tenant's users in user-id order; `next`: the `after` of the next page, null on the last."""

    tenant: str
    users: list[TenantUser]
    pending: dict[str, int]  # user -> feedback rows acknowledged and not yet in the store (of this page's users and
    # of users with nothing stored yet, whose ids fall in the page's range)
    next: str | None


def _tenant(tenant: str) -> str:
    problem = tenant_problem(tenant)
    if problem:
        raise bad_request("tenant", problem)
    return tenant


def _after(request: Request, after: str | None) -> str | None:
    """The page's cursor; a 400 naming `after` for one of no UTF-8 bytes (`%FF`: read as U+FFFD, which sorts after
    every user id, it gave an empty last page) or of another length than an id's."""
    if after is not None and (refusal := query_not_utf8(request, "after")) is not None:
        raise refusal
    if after is not None and not 1 <= len(after) <= 256:
        raise bad_request("after", "a user id from the `next` of the page before (1-256 characters)")
    return after


def user_page(request: Request, tenant: str, after: str | None, limit: int) -> TenantUserPage:
    """The page (`TenantUserPage`) of `tenant`'s users after `after`; the pending rows of the feedback log are
    counted for the users in its range, read from the tenant's own pending records (`FeedbackLog.tenant_pending`: work
    in proportion to its backlog, not to every tenant's users in the log)."""
    rt = request.app.state.runtime
    users, more = rt.store.tenant_users(tenant, after, limit)
    last = users[-1].user if more else None
    in_range = lambda u: (after is None or u > after) and (last is None or u <= last)  # noqa: E731
    pending = {u: rows for u, rows in sorted(rt.ingest.log.tenant_pending(tenant).items()) if in_range(u)}
    return TenantUserPage(tenant=tenant, users=users, pending=pending, next=last)


@get("/tenants/{tenant:str}/users", sync_to_thread=True, summary="A page of a tenant's users")
def list_tenant_users(request: Request, tenant: FromPath[str], after: FromQuery[str | None] = None,
                      limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100) -> TenantUserPage:
    """Any tenant's users (an admin key); 400 naming `tenant` for a name no tenant can have. A tenant that holds
    nothing (never seen, or removed) is an empty page, not a 404: the store cannot tell it from one whose users all
    went (so the route declares no 404)."""
    return user_page(request, _tenant(tenant), _after(request, after), limit)


@get("/v1/users", sync_to_thread=True, summary="A page of your tenant's users")
def list_users(request: Request, after: FromQuery[str | None] = None,
               limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100) -> TenantUserPage:
    """The users of the key's own tenant; no parameter reaches another tenant's."""
    return user_page(request, request.user.tenant, _after(request, after), limit)


def _removals(request: Request) -> TenantRemovals:
    return request.app.state.tenant_removals


@post("/tenants/{tenant:str}/removal", sync_to_thread=True, status_code=202, responses={
    **error_responses(404, 409, 503, 507, why={
        409: "`tenant_keys_kept_elsewhere`: the tenant's keys are in a key file this service must not rewrite (a link, "
             "as replicas share one): revoke them where they are kept, then send the removal again; nothing removed"}),
    200: ResponseSpec(data_container=TenantRemoval, generate_examples=False,
                      description="A removal of the tenant is running already: that one, nothing begun again"),
}, summary="Remove every trace of a tenant")
def remove_tenant(request: Request, tenant: FromPath[str], even_if_unseen: FromQuery[bool] = False) -> Response[TenantRemoval]:
    """202 with the removal begun (its keys revoked at once; the rest in the background, `Location` to poll);
    200 with the one running when there is one. 404 (`tenant_unseen`, naming the tenant) for a tenant that shows
    nowhere here (no key, no removal before, nothing of it stored, in the feedback log, its dead letters or its jobs: a mistyped
    name), nothing begun, unless `even_if_unseen=true`, as the CLI's `tenants remove --even-if-unseen` (else
    any name would begin a removal that finds nothing and ends `done`). 409 (`tenant_keys_kept_elsewhere`) when the tenant's keys are in a
    key file that is a link (replicas); 507 (`insufficient_storage`) when the record or the key file cannot be
    written for a full disk, as every route answers one; 503 with Retry-After when DELETEs are refused (replicas'
    clocks disagree) or the record cannot be written otherwise (a read-only folder): nothing was removed."""
    tenant = _tenant(tenant)
    rt = request.app.state.runtime
    sweep = rt.deletion_sweep
    if sweep is not None and (problem := sweep.clocks_problem()) is not None:
        raise ServiceUnavailableException(detail=f"DELETEs are refused while {problem}: nothing of the tenant was removed",
                                          headers={"Retry-After": "60"})
    try:
        removal, begun = _removals(request).begin(tenant, even_if_unseen)
    except TenantUnseen as exc:
        return error_response(404, f"{exc}; `even_if_unseen=true` begins it all the same", param="tenant", code="tenant_unseen")
    except KeysKeptElsewhere as exc:
        return error_response(409, str(exc), param="tenant", code="tenant_keys_kept_elsewhere")
    except OSError as exc:
        if (failure := storage_failure_of(rt, exc)) is not None and failure.problem == "full":  # a 507, not a 503
            return storage_response(request, failure, done="nothing of the tenant was removed; send it again once there is room")
        raise ServiceUnavailableException(detail=f"the removal could not be recorded ({exc.strerror or exc}): nothing of the "
                                          "tenant was removed; send it again", headers={"Retry-After": "10"}) from None
    return Response(removal, status_code=202 if begun else 200, headers={"Location": request.url.path})


@get("/tenants/{tenant:str}/removal", sync_to_thread=False, responses=error_responses(404), summary="A tenant's removal: its progress")
def get_tenant_removal(request: Request, tenant: FromPath[str]) -> TenantRemoval:
    settings = request.app.state.runtime.settings
    removal = read_removal(settings.data_path, _tenant(tenant))
    if removal is None and settings.replicas > 1:  # the record is in the data folder of the replica the POST reached
        raise NotFoundException(
            f"no removal of tenant {tenant} was begun on this replica (replica {settings.replica_index} of {settings.replicas}): "
            "a removal's record is kept by the replica it was sent to; ask each replica at its own address, not through "
            f"the load balancer (`GET /admin/tenants/{tenant}/users` on any replica shows what of the tenant is left)")
    if removal is None:
        raise NotFoundException(f"no removal of tenant {tenant} was begun")
    return removal


TENANT_ADMIN_HANDLERS = (list_tenant_users, remove_tenant, get_tenant_removal)
