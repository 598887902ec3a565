"""A tenant's users as the store holds them: who they are, how many rows each has in each table, and when
each was last active. What an operator lists before offboarding a tenant (`GET /admin/tenants/{tenant}/users`,
`pluralign tenants users`) and what a tenant's removal goes through (`service.tenants`).

A user is anyone with a row of the tenant in any of the store's tables (`Store.tables`: preferences,
interactions, users, stated_changes): a user who only chatted, or only stated preferences, is one too.
Pages are in user-id order (code points), `after` the last id of the page before, so users added or
removed meanwhile never shift a page.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

# the column of each table that says when a row came (unix seconds); `received_at` too where a table has it
# (an import keeps its file's `created_at`, which may be years old: when it reached the service is the activity)
TIME_COLUMNS = {"preferences": ("created_at", "received_at"), "interactions": ("created_at",),
                "users": ("updated_at",), "stated_changes": ("at",)}
MAX_PAGE = 1000  # users one page may hold


class TenantUser(msgspec.Struct, kw_only=True):
    """One user of a tenant: their id, their rows by table (absent tables count 0) and `last_activity`, the
    latest time any of their rows carries (unix seconds)."""

    user: str
    preferences: int = 0
    interactions: int = 0
    stated_changes: int = 0
    has_profile: bool = False  # a users row (fitted weights, stated preferences, attributes) is held
    last_activity: float | None = None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _per_user(table, tenant: str, after: str | None, columns: tuple[str, ...]) -> pa.Table:
    """(user_id, n, t) for each user of `tenant` (after `after`) in `table`: their row count and latest time."""
    present = [c for c in columns if c in table.schema.names]
    where = f"tenant = {_quote(tenant)}" + (f" AND user_id > {_quote(after)}" if after is not None else "")
    rows = table.search().where(where).select(["user_id", *present]).limit(None).to_arrow()
    times = [rows.column(c) for c in present]
    latest = times[0] if len(times) == 1 else pc.max_element_wise(*times, skip_nulls=True)
    rows = pa.table({"user_id": rows.column("user_id"), "t": latest.cast(pa.float64())})
    return rows.group_by("user_id").aggregate([("user_id", "count"), ("t", "max")])


def tenant_users(tables: Mapping[str, object], tenant: str, after: str | None = None,
                 limit: int = 100) -> tuple[list[TenantUser], bool]:
    """Up to `limit` (1..MAX_PAGE) users of `tenant` in user-id order, those after `after` (an id) only, and
    whether more follow. `tables`: LanceDB tables by name (`Store.tables`); a table not in TIME_COLUMNS is
    not read. One read of two or three columns of the tenant's rows per table (the BITMAP index on tenant),
    so a page costs what the tenant holds, not what the store holds. Raises ValueError for a `limit` out of
    bounds; the tables' own errors (OSError, RuntimeError) as they come."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}, got {limit}")
    found: dict[str, TenantUser] = {}
    for name, columns in TIME_COLUMNS.items():
        if name not in tables:
            continue
        counted = _per_user(tables[name], tenant, after, columns)
        for user, n, t in zip(counted.column("user_id").to_pylist(), counted.column("user_id_count").to_pylist(),
                              counted.column("t_max").to_pylist(), strict=True):
            entry = found.setdefault(user, TenantUser(user=user))
            if name == "users":
                entry.has_profile = True
            else:
                setattr(entry, name, getattr(entry, name) + n)
            if t is not None and (entry.last_activity is None or t > entry.last_activity):
                entry.last_activity = t
    ordered = sorted(found)
    return [found[u] for u in ordered[:limit]], len(ordered) > limit


def tenant_user_ids(tables: Mapping[str, object], tenant: str) -> set[str]:
    """Every user id of `tenant` with a row in any of `tables` (as `tenant_users` reads them, without counts)."""
    ids: set[str] = set()
    for name in TIME_COLUMNS:
        if name in tables:
            rows = tables[name].search().where(f"tenant = {_quote(tenant)}").select(["user_id"]).limit(None).to_arrow()
            ids.update(pc.unique(rows.column("user_id")).to_pylist())
    return ids
