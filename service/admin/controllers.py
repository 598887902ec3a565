"""Admin routes (mounted under /admin behind the admin-key guard):

    POST /admin/jobs                     queue a job: {"kind": "adapter", "params": {"tenant": "acme", "user": "alice"}}
    GET  /admin/jobs?kind=&state=&limit= jobs, newest first
    GET  /admin/jobs/{id}                state, progress, metrics, log tail
    GET  /admin/jobs/{id}/report         an audit job's report (202 while it runs)
    POST /admin/jobs/{id}/cancel
    GET  /admin/audits/fairness?group_by=segment&since=1764000000&tenant=acme&min_group_size=5&min_comparisons=50&wait=60
    GET  /admin/dashboard                HTML: per-group accuracy, worst group over time, jobs
    GET  /admin/tenants/{tenant}/users   a tenant's users; POST/GET /admin/tenants/{tenant}/removal (service.admin.tenants)
    GET  /admin/feedback/dead-letter?tenant=&after=&limit=   feedback records set aside (rows the store refused,
                                         `pluralign.store.dead_letter`), a page oldest first
    POST /admin/feedback/dead-letter/{name}/requeue   put one back in the feedback log
    DELETE /admin/feedback/dead-letter/{name}         discard one for good
"""

from __future__ import annotations

import logging
import math
import time
from typing import Annotated

from litestar import Litestar, Request, delete, get, post
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException, NotFoundException, ServiceUnavailableException, TooManyRequestsException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, QueryParameter
from litestar.response import Response

from pluralign.data.record import MAX_CREATED_AT
from pluralign.fairness.report import AuditReport, audit_settings, since_previous
from pluralign.files import DECODE_ERRORS
from pluralign.store.dead_letter import NAME as DEAD_LETTER_NAME
from pluralign.store.failures import StoreUnavailable
from pluralign.store.ingest import Backlogged, StillMoving
from service.admin.dashboard import render_dashboard
from service.admin.schemas import (
    QUEUED_AUDIT_EXAMPLE,
    RUNNING_AUDIT_EXAMPLE,
    AuditPending,
    DeadLetterList,
    DeadLetterView,
    JobList,
    JobRequest,
    Requeued,
)
from service.admin.services import Admin, NoAdapterBase, QuotaExceeded, Stopping, StoredReports, UnreadableReport
from service.admin.session import PAGE_HEADERS, TENANT_NAME_RULE
from service.admin.tenants import TENANT_ADMIN_HANDLERS
from service.errors import (
    bad_request,
    controls_escaped,
    drain_retry_after,
    error_response,
    error_responses,
    query_not_utf8,
    shown,
)
from service.head import NO_HEAD
from service.ids import USER_ID, tenant_problem
from service.openapi import example
from service.stopping import RETRY_SAFE, STOPPING, STOPPING_RETRY_AFTER
from service.tenants import TenantRemovals
from service.users.services import READ_INLINE_ROWS, READ_RETRY_AFTER
from training.jobs.params import PARAMS, JobParamsError, decode_params
from training.jobs.record import Job, JobState, tenant_of
from training.jobs.runner import UnknownJob

# seconds an audit's move of its tenant's acknowledged feedback into the table may take by default, from POST /admin/jobs
# and GET /admin/audits/fairness alike (the latter's `wait` bounds its job's run too)
AUDIT_MOVE_WAIT_S = 60.0
DASHBOARD_JOBS = 200  # the newest jobs the dashboard reads (its chart counts them; its table shows the newest 25)
log = logging.getLogger("pluralign.service")


def _admin(request: Request) -> Admin:
    return request.app.state.admin


# the 409 and 422 the audit routes and the jobs route declare (`_being_removed`, `audit_failed`)
BEING_REMOVED = "`tenant_being_removed`: the tenant's removal runs (no job for it is queued)"
AUDIT_FAILED = "`audit_failed`: the audit job ended without a report (failed or cancelled); `error.message` gives its state and error"


def _being_removed(request: Request, tenant: str | None, param: str) -> Response | None:
    """The 409 for a job of a tenant whose removal runs (its users' data is being removed: none is trained on or audited),
    else None."""
    removals: TenantRemovals = request.app.state.tenant_removals
    if tenant and removals.removing(tenant):
        return error_response(409, f"tenant {tenant} is being removed (GET /admin/tenants/{tenant}/removal): no job for it is queued",
                              param=param, code="tenant_being_removed")
    return None


@post("/jobs", sync_to_thread=True, status_code=201, summary="Queue a job (adapter, pal, em, audit)", responses={
    **error_responses(409, 429, 503, 507, why={409: f"{BEING_REMOVED}; or `no_adapter_base`: an adapter job, where the service "
                                                     "generates on a remote server whose model no setting names "
                                                     "(`error.message` names the setting)"}),
    200: ResponseSpec(data_container=Job, description="An audit whose params are those of an audit still queued, or running since the last feedback it audits was stored: that job, nothing queued",
                      generate_examples=False, examples=[example("an audit still queued", QUEUED_AUDIT_EXAMPLE)]),
})
def create_job(
    request: Request,
    data: JSONBody[JobRequest],
    # an audit's: seconds its move of the tenant's acknowledged feedback into the table may take (the audit route's rule)
    wait: Annotated[float, Parameter(ge=0, le=600)] = AUDIT_MOVE_WAIT_S,
) -> Response[Job]:
    """201 with the job queued (`Location`: the job's URL); 200 with the queued (or running, `Admin.submit`) audit an
    identical audit request is (nothing queued; `Content-Location`: that job's URL).
    `params` must fit the kind's allow-list (training.jobs.params); paths are never taken from a request.
    An audit first moves its tenant's acknowledged feedback into the table (`Admin.submit`): 503 `feedback_backlog`
    with Retry-After, nothing queued, when rows still wait once `wait` seconds passed (as GET /admin/audits/fairness;
    unbound, the POST could wait minutes behind a tenant's backlog). Other kinds ignore it."""
    params = {name: value for name, value in data.params.items() if value is not None}  # a null: the kind's default
    # a population job without a protocol trains on the service's own comparisons (`Admin.submit`): checked so;
    # the null parameters' names with the rest (a misspelled one is refused, null or not)
    checked = {**data.params, "protocol": params.get("protocol", "file")} if data.kind in ("pal", "em") else data.params
    try:
        decode_params(data.kind, checked, from_client=True)
    except JobParamsError as exc:
        raise bad_request(exc.field, exc.problem, code="unknown_parameter" if exc.unknown else "invalid_value") from None
    if (refusal := _being_removed(request, tenant_of(params), "params.tenant")) is not None:
        return refusal
    try:
        admin = _admin(request)
        if data.kind == "audit":  # cut by the graceful wait, it queues nothing once the service stops: a 503 to send again
            request.scope[RETRY_SAFE] = True  # type: ignore[literal-required]
        job, created = admin.submit(data.kind, params, deadline=time.monotonic() + wait if data.kind == "audit" else None)
    except StillMoving as exc:  # the audit must cover them: asked again once the worker moved them
        tenant = params.get("tenant")
        return _still_moving(request, exc, tenant if isinstance(tenant, str) else None, wait)
    except Stopping:
        return _stopping()
    except QuotaExceeded as exc:
        raise TooManyRequestsException(detail=str(exc), headers={"Retry-After": "60"}) from None
    except NoAdapterBase as exc:  # the service's settings, not the request: a retry is refused the same until they change
        return error_response(409, str(exc), code="no_adapter_base")
    except Backlogged as exc:  # an adapter job's user: their large import is still being stored
        raise ServiceUnavailableException(
            detail=f"the user's comparisons are still being stored ({exc.rows} rows, an import): nothing was queued; "
                   f"retry after {READ_RETRY_AFTER} seconds", headers={"Retry-After": str(READ_RETRY_AFTER)}) from None
    where = f"{request.url.path.rstrip('/')}/{job.id}"  # GET it (under the admin router's prefix, whatever it is)
    if not created:  # an identical audit queued, or running since the last feedback moved: it covers this request too
        log.info("%s job %s already %s with these params", data.kind, job.id, job.state)
        return Response(admin.public.job(job), status_code=200, headers={"Content-Location": where})
    log.info("queued %s job %s", data.kind, job.id)  # the request's id on it: from the request to the job's own log
    return Response(admin.public.job(job), status_code=201, headers={"Location": where})


@get("/jobs", sync_to_thread=False, summary="Jobs, newest first")
def list_jobs(
    request: Request,
    kind: FromQuery[str | None] = None,
    job_state: Annotated[JobState | None, QueryParameter(name="state")] = None,  # `state` is a reserved name in Litestar
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> JobList:
    if kind is not None and kind not in PARAMS:  # a misspelled kind would list nothing, as if none had run
        raise bad_request("kind", f"unknown job kind {shown(kind)}; known: {', '.join(sorted(PARAMS))}")
    admin = _admin(request)
    return JobList(jobs=[admin.public.job(j) for j in admin.runner.list(kind=kind, state=job_state, limit=limit)])


@get("/jobs/{job_id:str}", sync_to_thread=False, responses=error_responses(404), summary="One job: state, progress, metrics, log tail")
def get_job(request: Request, job_id: FromPath[str]) -> Job:
    job = _admin(request).runner.get(job_id)
    if job is None:
        raise no_job(request.app.state.runtime, job_id)
    return _admin(request).public.job(job)


# the 200 of the two routes answering an audit's report: the handlers return a Response (a 202 otherwise), from which
# Litestar can derive no schema, so the document would say `{}` otherwise
REPORT_RESPONSE = ResponseSpec(data_container=AuditReport, description="The audit's report, with its change since the previous "
                               "audit of the same settings", generate_examples=False)


@get("/jobs/{job_id:str}/report", responses={**error_responses(404, 422, why={422: AUDIT_FAILED}), 200: REPORT_RESPONSE, 202: ResponseSpec(
    data_container=AuditPending, description="The audit job is still queued or running", generate_examples=False,
    examples=[example("the audit job, running", RUNNING_AUDIT_EXAMPLE)])}, summary="An audit job's report")
async def get_job_report(request: Request, job_id: FromPath[str]) -> Response:
    """200 with an audit job's AuditReport, as the audit route answers once it ended (with its change since the previous
    audit of the same settings); 202 with the job while it is queued or running (poll this); what the audit route
    answers for a failed audit (400 naming the parameter at fault, 422); 404 for no such job or one that is no audit."""
    admin = _admin(request)
    job = admin.runner.get(job_id)
    if job is None:
        raise no_job(request.app.state.runtime, job_id)
    if job.kind != "audit":
        article = "an" if job.kind[:1] in "aeiou" else "a"  # an adapter, an em, an audit; a train, a refit
        raise NotFoundException(f"job {shown(job_id)} is {article} {job.kind} job: only an audit job has a report")
    if job.state in ("queued", "running"):
        return Response(AuditPending(job=admin.public.job(job)), status_code=202)
    return await sync_to_thread(_audit_response, admin, job)


# on a thread: the cancel waits for the job runner's lock, which its dispatcher holds while it polls and finishes jobs, and
# the cancel of a job whose worker ended waits for its promotion (an adapter copied in, a population model swapped in,
# a wait for the user's lock: `LocalJobRunner.cancel`); not on the event loop, where
# no request of any tenant would be answered meanwhile
@post("/jobs/{job_id:str}/cancel", sync_to_thread=True, status_code=200, responses=error_responses(404), summary="Cancel a queued or running job")
def cancel_job(request: Request, job_id: FromPath[str]) -> Job:
    try:
        return _admin(request).public.job(_admin(request).runner.cancel(job_id))
    except UnknownJob:
        raise no_job(request.app.state.runtime, job_id) from None


@get("/audits/fairness", opt=NO_HEAD, responses={**error_responses(409, 422, 429, 503, 507, why={409: BEING_REMOVED, 422: AUDIT_FAILED}), 200: REPORT_RESPONSE, 202: ResponseSpec(
    data_container=AuditPending, description="The audit job is still running after `wait` seconds", generate_examples=False,
    examples=[example("the audit job, running", RUNNING_AUDIT_EXAMPLE)])}, summary="Fairness audit of the stored comparisons (runs as an audit job)")
async def fairness_audit(
    request: Request,
    group_by: FromQuery[str],
    # Unix seconds: the audit job's `since` range (`Epoch`: every time an import takes, MAX_CREATED_AT). `minimum` again in
    # the document: Litestar 2.25 skips a `ge` of 0 (falsy)
    since: Annotated[float | None, Parameter(ge=0, le=MAX_CREATED_AT, schema_extra={"minimum": 0})] = None,
    tenant: FromQuery[str | None] = None,
    min_group_size: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,  # the audit job's own ranges
    min_comparisons: Annotated[int, Parameter(ge=0, le=100_000_000)] = 50,
    wait: Annotated[float, Parameter(ge=0, le=600)] = AUDIT_MOVE_WAIT_S,
) -> Response:
    """200 with the AuditReport (with its change since the previous audit by the same attribute of the same
    tenant, or of every tenant for an audit of every tenant);
    202 with the job if it is still running after `wait` seconds."""
    if (refusal := query_not_utf8(request, "group_by")) is not None:  # read as U+FFFD: no attribute a client named
        raise refusal
    params: dict = {"group_by": group_by, "min_group_size": min_group_size, "min_comparisons": min_comparisons}
    if since is not None:
        params["since"] = since
    if tenant:
        params["tenant"] = tenant
    try:
        decode_params("audit", params, from_client=True)
    except JobParamsError as exc:  # query parameters: named without the `params.` of a job request
        raise bad_request(exc.field.removeprefix("params."), exc.problem) from None
    if (refusal := _being_removed(request, tenant, "tenant")) is not None:
        return refusal
    admin = _admin(request)
    try:
        job = await admin.audit(params, wait)
    except StillMoving as exc:  # the audit must cover them: asked again once the worker moved them
        return _still_moving(request, exc, tenant, wait)
    except Stopping:
        return _stopping()
    except QuotaExceeded as exc:  # the tenant's audits queued or running (`Admin.submit`), as POST /admin/jobs answers
        raise TooManyRequestsException(detail=str(exc), headers={"Retry-After": "60"}) from None
    if job.state in ("queued", "running"):
        return Response(AuditPending(job=admin.public.job(job)), status_code=202)
    # reading the report and every stored one is file work: off the event loop, or it stalls every request
    return await sync_to_thread(_audit_response, admin, job)


def _stopping(rows: str = "") -> Response:
    """The 503 of an audit not queued because the service is stopping (`Admin.stopping`), with Retry-After."""
    return error_response(503, f"{rows}{STOPPING}, and the audit, which covers every acknowledged feedback of what it audits, "
                               "was not queued: send the request again (to another replica, or once this one is back)",
                          headers={"Retry-After": str(STOPPING_RETRY_AFTER)})


def _still_moving(request: Request, exc: StillMoving, tenant: str | None, wait: float) -> Response:
    """The 503 `feedback_backlog` of an audit whose feedback was still being moved into the table once `wait` passed:
    its `Retry-After` the seconds its rows waiting take at the rate the audited tenant's rows (every tenant's, for an
    audit of every tenant) left the log lately (`FeedbackLog.drain_rate`, `drain_retry_after`: 1-60 s, 5 s unmeasured),
    as a refused feedback's."""
    if _admin(request).stopping.is_set():  # the service stops: its move ended there, whatever the wait
        return _stopping(f"{exc}: ")
    rate = request.app.state.runtime.ingest.log.drain_rate(tenant or None)
    lately = "" if rate is None else f" (they are stored at ~{rate:.3g} rows/s lately)"
    after = drain_retry_after(exc.rows / rate if rate else None)
    return error_response(503, f"{exc} after the `wait` of {wait:g} s{lately}; the audit, which covers every acknowledged "
                               f"feedback of what it audits, was not queued: ask again after `Retry-After` seconds ({after:g}) "
                               "or with a longer `wait`", code="feedback_backlog", headers={"Retry-After": f"{after:g}"})


def _audit_response(admin: Admin, job: Job) -> Response:
    """The ended audit job's answer: its report with the change since the previous one, or why not."""
    try:
        report = admin.report(job)
    except UnreadableReport as exc:  # the server's, not the request's: a 500
        if not exc.schema:  # missing or damaged: what the decode said may quote the file, so the log alone says it
            raise RuntimeError(f"audit job {job.id} succeeded but its report cannot be read: {exc.detail}") from None
        log.error("%s", exc)  # a later release's: our own words, naming the schemas
        return error_response(500, str(exc), code="audit_report_unreadable")
    if report is None:
        if "no stored comparisons" in (job.error or ""):
            tenant = job.params.get("tenant")
            if tenant:  # others may hold many: the tenant named is the request's mistake (a typo, a tenant with no feedback yet)
                raise bad_request("tenant", f"tenant {shown(tenant)} has no stored comparisons to audit "
                                            "(no user of it has sent a comparison that is stored)")
            raise bad_request("group_by", "there are no stored comparisons to audit yet")
        named = f"pluralign: error: --group-by {controls_escaped(str(job.params.get('group_by')))}: "  # as the worker names it
        if named in (job.error or ""):  # no stored comparison nor user has the attribute (a misspelled name)
            raise bad_request("group_by", admin.public.text(job.error.split(named, 1)[1]))
        # the worker could not compute this audit (e.g. no comparison carries `group_by`): the request's
        # parameters cannot be served, and the job record keeps the worker's log for the operator
        return error_response(422, f"audit job {job.id} {job.state}: {admin.public.text(job.error or '')}", code="audit_failed")
    # compared with an audit of the same tenant only: another tenant's users are another population (else
    # acme's audit would be given its change since globex's, as if acme's worst group had moved); and of the same settings
    # only (`since_previous`)
    return Response(_since_previous(report, admin.reports(like=job)))


def _since_previous(report: AuditReport, stored: StoredReports) -> AuditReport:
    """`since_previous` over the readable stored reports; but when the latest earlier audit of the same settings is
    one this release cannot read (a later release's, or missing or damaged), no change is given (None), rather than a change against an
    older one, and the log says which and why."""
    settings = audit_settings(report)
    earlier = [r.created_at for r in stored.readable if audit_settings(r) == settings and r.created_at < report.created_at]
    # an unreadable report's method is not known (its job's params do not say it): it may be of the same
    unread = [u for u in stored.unreadable if u.settings == settings[:5] and u.created_at < report.created_at
              and u.created_at > max(earlier, default=-math.inf)]
    if unread:
        log.warning("no change since the previous audit by %r is given: %s", report.group_by, "; ".join(map(str, unread)))
        return report
    return since_previous(report, stored.readable)


@get("/dashboard", sync_to_thread=True, summary="The operator's dashboard (HTML)", media_type="text/html")
def dashboard(request: Request, tenant: FromQuery[str | None] = None) -> Response:
    """`tenant`: that tenant's audits and jobs, and the prototypes described by its stored answers (default: every tenant's);
    feedback acknowledged before the request is moved out of the log first, so it counts, unless more than
    READ_INLINE_ROWS rows wait there (a large import being stored) or the table cannot take them (no room, a
    read-only folder): the page then says so, and is described by what is stored."""
    from service.users.services import prototype_descriptions

    if tenant is not None and not USER_ID.fullmatch(tenant):  # as the audit's `tenant`: an id, or no page of one
        raise bad_request("tenant", TENANT_NAME_RULE)
    admin = _admin(request)
    # a tenant's page: its own audits (not the newest 50 of every tenant, where a busy tenant's would push the
    # others' off); the line over time: up to 50 audits the latest is compared with, however many others are newer
    stored = admin.reports(tenant=tenant)
    history = stored.readable
    latest: AuditReport | None = history[0] if history else None
    line = admin.reports(like=stored.jobs[0]).readable if history else []
    signed_in = "authorization" not in request.headers  # reached with the session cookie
    rt = request.app.state.runtime
    unmoved = ""
    try:  # feedback acknowledged before this request describes the prototypes too, unless a large import's
        rt.ingest.flush_some(tenant, READ_INLINE_ROWS)  # backlog waits (minutes to move): then what is stored, said so
        backlog = 0
    except Backlogged:
        backlog = READ_INLINE_ROWS
    except StoreUnavailable as exc:  # nor when the table cannot take it (a full disk): the page the operator needs then
        backlog, unmoved = 0, exc.public  # is still served, saying so (the ingest worker logs the failure and retries)
    prototypes = prototype_descriptions(rt, tenant)
    # a tenant's page: its own jobs only, those whose turn is its turn (not the newest 200 of every tenant,
    # where acme's page would name globex's users, parameters and errors), chosen before the limit (the records are in memory)
    jobs = admin.runner.list(limit=DASHBOARD_JOBS if tenant is None else 1 << 62)
    if tenant is not None:
        jobs = [j for j in jobs if tenant_of(j.params) == tenant][:DASHBOARD_JOBS]
    unseen = tenant is not None and not (jobs or history or _tenant_shows(request, tenant))
    # an admin key's tenant only labels it: such a label's page does not say "it has no key"
    admin_label = unseen and any(k.admin and k.tenant == tenant for k in rt.keys.list())
    return Response(render_dashboard(latest, history, [admin.public.job(j) for j in jobs], signed_in, prototypes,
                                     rt.rewards.version, backlog, unmoved=unmoved, unreadable=[admin.public.text(str(u)) for u in stored.unreadable],
                                     tenants=stored.tenants, line=line, jobs_of=tenant,
                                     unseen=unseen, admin_label=admin_label),
                    media_type="text/html", headers=PAGE_HEADERS)


def _tenant_shows(request: Request, tenant: str) -> bool:
    """Whether `tenant` shows here as `tenants remove` checks it before it begins (`service.tenants.tenant_seen`: a key,
    a removal before, anything held of it). A dashboard asked for a tenant that shows nowhere (a typo) says so, not "No audit has
    been run yet" and "no jobs" as of an idle tenant."""
    from service.tenants import tenant_seen

    removals: TenantRemovals | None = getattr(request.app.state, "tenant_removals", None)
    rt = request.app.state.runtime
    holds = (lambda: removals.holds_anything(tenant)) if removals is not None else (lambda: True)
    return tenant_seen(rt.settings.data_path, rt.keys, tenant, holds)


def dead_letter_cursor(after: str | None) -> tuple[float, str] | None:
    """The (set_aside_at, name) an `after` cursor holds (`DeadLetterList.next`: `<set_aside_at>~<name>`); a 400 naming
    `after` for one the list did not write."""
    if after is None:
        return None
    at, _, name = after.partition("~")
    try:
        when = float(at)
    except ValueError:
        when = math.nan
    if not (math.isfinite(when) and DEAD_LETTER_NAME.fullmatch(name)):
        raise bad_request("after", f"is not a cursor this list wrote (pass on a page's `next` as it is), got {shown(after)}")
    return when, name


REPLICA_PARAMETER = Parameter(ge=0, le=10_000, description="the replica (PLURALIGN_REPLICA_INDEX) meant: another answering is a 421")


def answering_replica(rt, replica: int | None) -> None:
    """A 421 (Misdirected Request) naming `replica` when the replica answering is not the one the admin meant: each
    replica keeps the dead letters of its own feedback log, so through a load balancer a listing, a requeue or a discard
    meant for one would read or change another's. An
    index no replica has (at least PLURALIGN_REPLICAS) is a 400 naming `replica`."""
    index, count = (rt.settings.replica_index if rt.settings.replicas > 1 else 0), rt.settings.replicas
    if replica is not None and replica >= count:  # no replica has it: a 400, not a 421 sending the admin to ask it
        raise bad_request("replica", f"is {replica}, but the replicas are 0..{count - 1} (PLURALIGN_REPLICAS={count}): "
                                     "no replica has that index")
    if replica is not None and replica != index:
        problem = (f"is {replica}, but replica {index} of {rt.settings.replicas} answered: each replica keeps the dead "
                   "letters of its own feedback log; ask replica {replica} at its own address, not through the load balancer")
        raise HTTPException(status_code=421, detail=f"`replica`: {problem.format(replica=replica)}",
                            extra=[{"key": "replica", "message": problem.format(replica=replica), "code": "other_replica"}])


def no_job(rt, job_id: str) -> NotFoundException:
    """The 404 for a job id this replica holds no record of, saying that job records are per replica when there are
    several (its own data folder's `jobs/`: a poll through the load balancer may reach another replica)."""
    if rt.settings.replicas > 1:
        return NotFoundException(f"no job {shown(job_id)} on this replica (replica {rt.settings.replica_index} of "
                                 f"{rt.settings.replicas}): a job's record is kept by the replica that queued it; ask each "
                                 "replica at its own address, not through the load balancer")
    return NotFoundException(f"no job {shown(job_id)}")


def no_letter(rt, name: str) -> NotFoundException:
    """The 404 for a letter `name` this replica does not hold, saying that letters are per replica when there are several."""
    where = (f" on replica {rt.settings.replica_index} (each replica keeps the letters of its own feedback log: ask the one "
             "whose listing names it)") if rt.settings.replicas > 1 else ""
    return NotFoundException(f"no dead letter {shown(name)}{where}")


@get("/feedback/dead-letter", sync_to_thread=True, responses=error_responses(400, 421),
     summary="Feedback records set aside: rows the store refused, a page oldest first")
def list_dead_letters(
    request: Request,
    tenant: Annotated[str | None, QueryParameter(max_length=256, description="only letters holding rows of this tenant")] = None,
    after: Annotated[str | None, QueryParameter(max_length=128, description="the `next` of the page before")] = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    replica: Annotated[int | None, REPLICA_PARAMETER] = None,
) -> DeadLetterList:
    """The feedback records the worker set aside, oldest first: each failed `tries` times on its own with a row's
    error (a blank owner, a non-finite time: a damaged or hand-edited feedback log, an older release's), so it no
    longer holds up every tenant's feedback. Kept until requeued or discarded (docs/admin.md, "Dead letters"). With
    replicas, the answering replica's letters only (`replica` says which): each sets aside its own log's records.
    `limit` letters a page (1-1000, 100); `next`, the `after` of the next page (null on the last); `tenant`, only the
    letters holding that tenant's rows; `rows`, the rows of every letter listed (all pages). 400 naming `tenant` or
    `after` for a name no tenant can have or a cursor the list did not write; 421 naming `replica` when another replica
    than the one it names answered (`answering_replica`)."""
    if tenant is not None and (problem := tenant_problem(tenant)):
        raise bad_request("tenant", problem)
    letters = []
    rt = request.app.state.runtime
    answering_replica(rt, replica)
    dead = rt.ingest.dead_letters
    names, rows, following = dead.page(tenant, dead_letter_cursor(after), limit)
    for name in names:
        try:
            letter = dead.read(name)
        except KeyError:  # discarded or requeued meanwhile
            continue
        except (OSError, *DECODE_ERRORS) as exc:
            log.warning("dead letter %s cannot be read (%s): left out of the list", name, exc)
            continue
        letters.append(DeadLetterView(name=name, tenant=letter.rows[0].tenant if letter.rows else "", rows=letter.rows,
                                      error=letter.error, tries=letter.tries, set_aside_at=letter.set_aside_at,
                                      row_numbers=letter.row_numbers))
    return DeadLetterList(letters=letters, rows=rows,
                          next=None if following is None else f"{following[0]!r}~{following[1]}",
                          replica=rt.settings.replica_index if rt.settings.replicas > 1 else None)


@post("/feedback/dead-letter/{name:str}/requeue", sync_to_thread=True, status_code=200, responses=error_responses(404, 421),
      summary="Put a set-aside feedback record back in the feedback log")
def requeue_dead_letter(request: Request, name: FromPath[str],
                        replica: Annotated[int | None, REPLICA_PARAMETER] = None) -> Requeued:
    """The letter's rows are appended to the feedback log again (received when they first were) and the letter goes;
    the worker tries them anew (refused again, they are set aside again after as many tries). 404: no such letter
    (on this replica); 421 naming `replica` when another replica answered (`answering_replica`)."""
    rt = request.app.state.runtime
    answering_replica(rt, replica)
    try:
        return Requeued(name=name, rows=rt.ingest.requeue(name))
    except KeyError:
        raise no_letter(rt, name) from None


@delete("/feedback/dead-letter/{name:str}", sync_to_thread=True, status_code=204, responses=error_responses(404, 421),
        summary="Discard a set-aside feedback record for good")
def discard_dead_letter(request: Request, name: FromPath[str], replica: Annotated[int | None, REPLICA_PARAMETER] = None) -> None:
    """The letter is removed for good (its rows were never stored). 404: no such letter (on this replica); 421 naming
    `replica` when another replica answered (`answering_replica`)."""
    rt = request.app.state.runtime
    answering_replica(rt, replica)
    if not rt.ingest.dead_letters.discard(name):
        raise no_letter(rt, name)


ADMIN_HANDLERS = (create_job, list_jobs, get_job, get_job_report, cancel_job, fairness_audit, dashboard,
                  list_dead_letters, requeue_dead_letter, discard_dead_letter, *TENANT_ADMIN_HANDLERS)


def start_admin(app: Litestar) -> None:
    """On startup: open the job folder (re-queueing interrupted jobs) and start dispatching."""
    admin = Admin(app.state.runtime)
    app.state.admin = admin
    app.state.runtime.moved_hooks.append(admin.on_moved)
    admin.runner.start()
    if admin.retention is not None:
        admin.retention.start()
    # removals of whole tenants (service.tenants): begun by a stopped process or `pluralign tenants remove` too
    app.state.tenant_removals = TenantRemovals(app.state.runtime, app.state.runtime.settings.deletion_sweep_s, admin,
                                               app.state.get("tenant_requests"))
    app.state.tenant_removals.start()
    app.state.runtime.removal_runs = app.state.tenant_removals.removing  # its batches finish its users' unfinished DELETEs


def stop_admin(app: Litestar) -> None:
    removals: TenantRemovals | None = app.state.get("tenant_removals")
    if removals is not None:
        app.state.runtime.removal_runs = None
        removals.stop()
    admin: Admin | None = app.state.get("admin")
    if admin is not None:
        admin.stopping.set()  # an audit's move under way ends (`stop_taking_work` set it first under `pluralign serve`)
        if admin.on_moved in app.state.runtime.moved_hooks:
            app.state.runtime.moved_hooks.remove(admin.on_moved)
        if admin.forget_jobs in app.state.runtime.delete_hooks:
            app.state.runtime.delete_hooks.remove(admin.forget_jobs)
        if admin.retention is not None:
            admin.retention.stop()
        admin.runner.stop()


def close_admin(app: Litestar) -> None:
    """The app's last shutdown step, after every writer of the admin area's files has stopped (the job runner in
    `stop_admin`, the DELETE passes, the ingest worker): the audits' members index is closed, so SQLite folds its
    write-ahead log into the file and removes the `-wal` and `-shm` files (left beside it at every stop before). A
    DELETE still running past the stop then fails at the index and the deletion journal finishes it at the next start."""
    admin: Admin | None = app.state.get("admin")
    if admin is not None:
        admin.audit_members.close()
