"""The tenant's calibration pool (docs/api.md, "A stored calibration pool"):

    PUT    /v1/calibration-pool   store it, in place of any before (200: what was stored, counted)
    GET    /v1/calibration-pool   read it (404: none stored)
    DELETE /v1/calibration-pool   remove it (204; 404: none stored)

`POST /v1/users/{id}/next-comparison` with no `pool` of its own asks from it (`service.users.controllers`).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import msgspec
from litestar import Request, delete, get, put
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import JSONBody

from pluralign.data.record import Base
from pluralign.embed.base import checked_vectors
from pluralign.embed.cache import encoder_cache_id
from pluralign.embed.remote import RemoteTextsRefused
from service.calibration.pools import (
    CalibrationItem,
    CalibrationPool,
    read_pool,
    remove_pool,
    remove_pool_before,
    write_pool,
)
from service.deletions import tenant_removed_since
from service.encoders import refused_text
from service.errors import bad_request, error_responses
from service.users.controllers import MAX_POOL_ITEMS, PoolItem, checked_pool
from service.users.services import distinct_answers, pool_fields

log = logging.getLogger("pluralign.calibration")

NONE_STORED = "this tenant stored no calibration pool (PUT /v1/calibration-pool stores one)"


class CalibrationPoolRequest(Base):
    """The tenant's calibration pool: prompts with 2-8 answers each, as next-comparison's `pool`."""

    pool: Annotated[list[PoolItem], msgspec.Meta(min_length=1, max_length=MAX_POOL_ITEMS)]


class CalibrationPoolStored(msgspec.Struct, kw_only=True):
    items: int  # prompts stored
    answers: int  # their answers, all together
    updated_at: float  # unix seconds
    version: int  # larger for each pool stored: of two PUTs, the one stored last answers the larger


@put("/v1/calibration-pool", sync_to_thread=True, status_code=200, responses=error_responses(409, 413, 429, 503, 507, why={
    409: "`per_replica`: several replicas run and pools would be kept in each one's own data folder "
         "(PLURALIGN_CALIBRATION_POOLS_DIR names a folder they share), or `tenant_removed`: the tenant was removed while "
         "its pool was stored; nothing kept"}),
     summary="Store the tenant's calibration pool for next-comparison")
def put_calibration_pool(request: Request, data: JSONBody[CalibrationPoolRequest]) -> CalibrationPoolStored:
    """Stores the tenant's calibration pool in place of any before: the questions
    `POST /v1/users/{id}/next-comparison` asks a user about when its request sends no `pool` (a request's own `pool`
    still wins). The same items and limits as that `pool` (1-64 prompts, 2-8 answers each, at most 64 answers in
    all, no blank text), and each prompt's answers must hold two a person can tell apart (`pluralign.data.text.look_key`:
    a 400 naming `pool[i].answers`); a refused item stores nothing and keeps the pool before. Each text is embedded here and
    the vectors stored beside the pool (`<sha256>.vectors`, read by every replica: `service.calibration.vectors`), so no
    replica's first question waits for an embedding, and a text the embeddings server refuses is a 400 naming it. Written
    whole: a crash part way keeps the pool before. Of two PUTs the one that writes last is stored, whatever the
    replicas' clocks: its `version` is the larger (`write_pool`)."""
    rt, tenant = request.app.state.runtime, request.user.tenant
    arrived = getattr(request.state, "key_checked_at", None) or time.time()  # its key checked (`BearerAuth`)
    if rt.settings.replicas > 1 and not rt.settings.calibration_pools_dir:  # in each replica's own data folder: a pool
        # stored in one would not be asked by the others
        problem = ("a calibration pool is kept in a replica's own data folder, and this service runs "
                   f"{rt.settings.replicas} replicas (PLURALIGN_REPLICAS): name a folder every replica mounts with "
                   "PLURALIGN_CALIBRATION_POOLS_DIR, or send `pool` with each next-comparison")
        raise HTTPException(status_code=409, detail=f"`pool`: {problem}", extra=[{"key": "pool", "message": problem, "code": "per_replica"}])
    items = checked_pool(data.pool)
    for i, (_, answers) in enumerate(items):  # never asked: every `{}` of a pool of these alone would be a 400
        if len(distinct_answers(answers)) < 2:
            raise bad_request(f"pool[{i}].answers", "its answers read as one answer (answers that differ only in Unicode "
                                                    "normalization (NFC), invisible characters, spacing or ligatures are one: "
                                                    "docs/api.md, \"The same answer\"): a stored prompt needs at least two "
                                                    "answers a person can tell apart")
    texts = CalibrationPool(pool=[CalibrationItem(prompt=p, answers=a) for p, a in items], updated_at=arrived).texts()
    once = list(dict.fromkeys(texts))  # a text in two items embedded once
    try:
        embedded = checked_vectors(rt.encoder, rt.encoder.encode(once), len(once))
    except RemoteTextsRefused as exc:
        raise refused_text(rt.encoder, pool_fields(items), exc) from None
    rt.calibration_vectors.embedded += len(once)
    row = {text: i for i, text in enumerate(once)}
    vectors = embedded[[row[text] for text in texts]]  # (N, dim), N = prompts + answers, as `CalibrationPool.texts`
    folder = rt.settings.calibration_pools_path
    stored = write_pool(folder, tenant, items, arrived, vectors=(encoder_cache_id(rt.encoder), vectors))
    if stored is None:  # a removal of the tenant began after its key was checked (noted by the pools folder)
        problem = "this tenant was removed while its calibration pool was being stored: nothing was kept"
        raise HTTPException(status_code=409, detail=f"`pool`: {problem}", extra=[{"key": "pool", "message": problem, "code": "tenant_removed"}])
    if (began := tenant_removed_since(rt, tenant, arrived)) is not None:  # its removal, answered by another replica,
        # cleaned the shared folder while this ran: what this stored goes too (`apply_deletions` takes it if it comes later)
        remove_pool_before(rt.settings.calibration_pools_path, tenant, began)
        problem = "this tenant was removed while its calibration pool was being stored: nothing was kept"
        raise HTTPException(status_code=409, detail=f"`pool`: {problem}", extra=[{"key": "pool", "message": problem, "code": "tenant_removed"}])
    # this replica's first question waits for none; held once kept (held before, a 409 above would leave them held)
    try:
        rt.calibration_vectors.keep(tenant, stored, rt.encoder, vectors, folder)
    except OSError as exc:  # its look back at the pool, stored (not a 503 "nothing acknowledged"): the
        # next request reads the vectors from beside it, none of the pool before held meanwhile
        rt.calibration_vectors.forget(tenant)
        log.warning("a calibration pool stored (version %d), its vectors not held in memory: %s", stored.version, exc)
    return CalibrationPoolStored(items=len(stored.pool), answers=sum(len(i.answers) for i in stored.pool),
                                 updated_at=stored.updated_at, version=stored.version)


@get("/v1/calibration-pool", sync_to_thread=True, responses=error_responses(404, 429),
     summary="The tenant's calibration pool")
def get_calibration_pool(request: Request) -> CalibrationPool:
    """The tenant's stored calibration pool as it was stored, with its `format` and when it was stored (`updated_at`);
    a 404 when the tenant stored none."""
    found = read_pool(request.app.state.runtime.settings.calibration_pools_path, request.user.tenant)
    if found is None:
        raise NotFoundException(NONE_STORED)
    return found


@delete("/v1/calibration-pool", sync_to_thread=True, status_code=204, responses=error_responses(404, 429),
        summary="Remove the tenant's calibration pool")
def delete_calibration_pool(request: Request) -> None:
    """Removes the tenant's calibration pool (on disk when answered) and its texts' vectors kept in memory;
    next-comparison's `{}` then asks as if none was ever stored. A 404 when there was none."""
    rt, tenant = request.app.state.runtime, request.user.tenant
    if not remove_pool(rt.settings.calibration_pools_path, tenant):
        raise NotFoundException(NONE_STORED)
    rt.calibration_vectors.forget(tenant)
