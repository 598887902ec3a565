"""A tenant's users as the store holds them: who they are, how many rows each has in each table, and when
each was last active. What an operator lists before offboarding a tenant (`GET /admin/tenants/{tenant}/users`,
`pluralign tenants users`) and what a tenant's removal goes through (`service.tenants`).

A user is anyone with a row of the tenant in any of the store's tables (`Store.tables`: preferences,
interactions, users, stated_changes): a user who only chatted, or only stated preferences, is one too.
Pages are in user-id order (code points), `after` the last id of the page before, so users added or
removed meanwhile never shift a page.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

# the column of each table that says when a row came (unix seconds); `received_at` too where a table has it
# (an import keeps its file's `created_at`, which may be years old: when it reached the service is the activity)
TIME_COLUMNS = {"preferences": ("created_at", "received_at"), "interactions": ("created_at",),
                "users": ("updated_at",), "stated_changes": ("at",)}
MAX_PAGE = 1000  # users one page may hold
# rows of one table a listing reads at once: a page held every row's id and times of the tenant's tables at once
# (3,000,000 rows: 230 MB for a page of one user), what any of its keys could ask for again and again
LISTING_ROWS_PER_READ = 65_536


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


def _batches(table, where: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The `columns` of `table`'s rows matching `where`, `LISTING_ROWS_PER_READ` rows a batch at most."""
    reader = table.search().where(where).select(columns).limit(None).to_batches(LISTING_ROWS_PER_READ)
    for batch in reader:
        for start in range(0, batch.num_rows, LISTING_ROWS_PER_READ):  # a reader may hand over larger batches
            yield batch.slice(start, LISTING_ROWS_PER_READ)


def _per_user(table, tenant: str, after: str | None, columns: tuple[str, ...], keep: int) -> dict[str, list]:
    """user_id -> [row count, latest time (None: none)] of the `keep` first users of `tenant` (after `after`) in
    `table`, in user-id order, read `LISTING_ROWS_PER_READ` rows at a time. A user among the first `keep` of every table
    together is among the first `keep` of each table it has rows in, so a page of `keep - 1` users keeps no more (it still
    reads every row of the tenant after `after`: rows come in no order of user)."""
    present = [c for c in columns if c in table.schema.names]
    where = f"tenant = {_quote(tenant)}" + (f" AND user_id > {_quote(after)}" if after is not None else "")
    found: dict[str, list] = {}
    for batch in _batches(table, where, ["user_id", *present]):
        user_ids = batch.column("user_id")
        if len(found) >= keep:  # only users before the last kept can still be among the first `keep`
            below = pc.less(user_ids, max(found))
            batch, user_ids = batch.filter(below), user_ids.filter(below)
            if not batch.num_rows:
                continue
        times = [batch.column(c) for c in present]
        latest = times[0] if len(times) == 1 else pc.max_element_wise(*times, skip_nulls=True)
        rows = pa.table({"user_id": user_ids, "t": latest.cast(pa.float64())})
        counted = rows.group_by("user_id").aggregate([("user_id", "count"), ("t", "max")])
        for user, n, t in zip(counted.column("user_id").to_pylist(), counted.column("user_id_count").to_pylist(),
                              counted.column("t_max").to_pylist(), strict=True):
            entry = found.setdefault(user, [0, None])
            entry[0] += n
            if t is not None and (entry[1] is None or t > entry[1]):
                entry[1] = t
        if len(found) > keep:
            for user in sorted(found)[keep:]:
                del found[user]
    return found


def tenant_users(tables: Mapping[str, object], tenant: str, after: str | None = None,
                 limit: int = 100) -> tuple[list[TenantUser], bool]:
    """Up to `limit` (1..MAX_PAGE) users of `tenant` in user-id order, those after `after` (an id) only, and
    whether more follow. `tables`: LanceDB tables by name (`Store.tables`); a table not in TIME_COLUMNS is
    not read. One read of two or three columns of the tenant's rows per table (the BITMAP index on tenant),
    so a page costs what the tenant holds, not what the store holds; read `LISTING_ROWS_PER_READ` rows at a time,
    keeping the counts of each table's first `limit + 1` users only, so it holds what a page and a read hold, not what
    the tenant does.
    Raises ValueError for a `limit` out of bounds; the tables' own errors (OSError, RuntimeError) as they come."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}, got {limit}")
    found: dict[str, TenantUser] = {}
    for name, columns in TIME_COLUMNS.items():
        if name not in tables:
            continue
        for user, (n, t) in _per_user(tables[name], tenant, after, columns, limit + 1).items():
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
            for batch in _batches(tables[name], f"tenant = {_quote(tenant)}", ["user_id"]):
                ids.update(pc.unique(batch.column("user_id")).to_pylist())
    return ids
