"""Audit the service's stored comparisons straight from LanceDB: the stored vectors are used as they
are (nothing is embedded again), and groups come from the comparison's own attributes, else the
user's attributes (set through the API), else a learned component: `pal_prototype` groups users by
their largest PAL mixture weight."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow.compute as pc

from pluralign.data.record import MAX_CREATED_AT, seconds_meant_of, stand_in_received
from pluralign.data.text import answer_key
from pluralign.fairness.audit import NO_VALUE, Comparisons, UnknownGroupBy, index_labels, policy_outcome
from pluralign.store.failures import reading
from pluralign.store.location import connect, options_from_env
from pluralign.store.tables import quote, refuse_newer

PAL_PROTOTYPE = "pal_prototype"  # group_by value: each user's nearest PAL prototype


def user_groups_from_store(db, group_by: str, tenant: str | None, names: set[str] | None = None) -> dict[str, str]:
    """`tenant/user` -> group from the users table (attributes, or the argmax of the PAL logits).
    `names`, if given, receives every user attribute name (and `pal_prototype` where a user has PAL logits)."""
    table = db.open_table("users")
    refuse_newer("users", db.uri, table.schema.metadata)
    where = f"tenant = {quote(tenant)}" if tenant else None
    query = table.search().select(["tenant", "user_id", "attributes", "pal_logits"])
    rows = (query.where(where) if where else query).limit(None).to_list()
    groups: dict[str, str] = {}
    for row in rows:
        key = f"{row['tenant']}/{row['user_id']}"
        attributes = {answer_key(k): v for k, v in json.loads(row["attributes"] or "{}").items()}  # NFD spellings, stray spaces or zero-width characters: one name
        if names is not None:
            names.update(attributes)
            if row["pal_logits"] is not None:
                names.add(PAL_PROTOTYPE)
        if group_by == PAL_PROTOTYPE:
            if row["pal_logits"] is not None:
                groups[key] = f"prototype-{int(np.argmax(row['pal_logits']))}"
        else:
            value = attributes.get(answer_key(group_by))
            if value is not None:
                groups[key] = answer_key(str(value))  # a label that reads the same is one group (NFC or NFD, stray invisibles)
    return groups


def _labels(db, data, group_by: str, tenant: str | None, uri: str, options: dict[str, str]):
    """(each row's user `tenant/user`, its group label, its attributes) for the rows `data` holds (columns
    tenant, user_id, attributes); UnknownGroupBy when no row nor user has `group_by`."""
    users = [f"{t}/{u}" for t, u in zip(data.column("tenant").to_pylist(), data.column("user_id").to_pylist(), strict=True)]
    group_by = answer_key(group_by)  # names and labels compared as answers are (answer_key): one group however a client spelt it
    attributes = [{answer_key(k): v for k, v in json.loads(a or "{}").items()} for a in data.column("attributes").to_pylist()]
    user_names: set[str] = set()
    with reading(uri, "table `users`", options):
        by_user = user_groups_from_store(db, group_by, tenant, user_names)
    own = group_by != PAL_PROTOTYPE  # pal_prototype is never read from a comparison's attributes
    if not any((own and group_by in a) or u in by_user for a, u in zip(attributes, users, strict=True)):
        # a misspelled name would put every comparison in one group, NO_VALUE
        raise UnknownGroupBy(group_by, {name for a in attributes for name in a} | user_names, "stored comparison or user")
    labels = [
        answer_key(str(a[group_by])) if own and group_by in a else by_user.get(u, NO_VALUE)
        for a, u in zip(attributes, users, strict=True)
    ]
    return users, labels, attributes


def _audited_rows(uri: str, tenant: str | None, options: dict[str, str], columns: list[str]):
    """(db, the `columns` of every stored non-tie comparison an audit reads, of one tenant or all): a column an older
    table lacks is left out. Raises as `comparisons_from_store` does."""
    with reading(uri, "table `preferences`", options):
        db = connect(uri, options)
        table = db.open_table("preferences")
        refuse_newer("preferences", uri, table.schema.metadata)
        where = "tie = false AND rejected != ''" + (f" AND tenant = {quote(tenant)}" if tenant else "")
        columns = [c for c in columns if c in table.schema.names]
        return db, table.search().where(where).select(columns).limit(None).to_arrow()


def group_members_from_store(uri: str, group_by: str, tenant: str | None = None,
                             storage_options: dict[str, str] | None = None) -> dict[str, set[str]]:
    """The users (`tenant/user`) whose stored non-tie comparisons an audit by `group_by` (of one tenant, or
    all) puts in each group, by the group's name, as `comparisons_from_store` labels them now: a group
    none of whose users is stored any more is absent. Raises as `comparisons_from_store` does (an empty
    store: {})."""
    options = options_from_env() if storage_options is None else storage_options
    db, data = _audited_rows(uri, tenant, options, ["tenant", "user_id", "attributes"])
    if data.num_rows == 0:
        return {}
    members: dict[str, set[str]] = {}
    try:
        users, labels, _ = _labels(db, data, group_by, tenant, uri, options)
    except UnknownGroupBy:  # every user who had it is gone
        return {}
    for user, label in zip(users, labels, strict=True):
        members.setdefault(label, set()).add(user)
    return members


def first_received_from_store(uri: str, tenant: str | None = None, storage_options: dict[str, str] | None = None) -> dict[str, float]:
    """When each user (`tenant/user`) whose non-tie comparisons an audit reads (of one tenant, or all) sent the
    oldest one stored now: unix seconds, its `received_at` (a row stored before that column was kept: its
    `created_at`, as `pluralign.data.record.stand_in_received` reads it, as a DELETE does). A user whose oldest row is newer than an audit was not in it with these rows: one its members
    list names was deleted since and came back. Raises as `group_members_from_store` does (an empty store: {})."""
    options = options_from_env() if storage_options is None else storage_options
    _, rows = _audited_rows(uri, tenant, options, ["tenant", "user_id", "created_at", "received_at"])
    data = rows.to_pydict()
    first: dict[str, float] = {}
    received = data.get("received_at") or [None] * len(data["created_at"])
    now = time.time()  # a stand-in time past it (a date to come) means none, as a DELETE reads it
    for t, user, created, got in zip(data["tenant"], data["user_id"], data["created_at"], received, strict=True):
        key, at = f"{t}/{user}", stand_in_received(created, now) if got is None else got  # (another unit, or none: an older version's)
        first[key] = min(first.get(key, at), at)
    return first


class NoStore(ValueError):
    """The store URI holds no pluralign tables (a mistyped prefix): nothing to audit there."""


def _user_keys(rows):
    """Each row's `tenant` and `user_id` as one string (a NUL between: in neither), (N,) pyarrow."""
    return pc.binary_join_element_wise(rows.column("tenant"), rows.column("user_id"), "\x00")


def _times(created_at: np.ndarray) -> np.ndarray:
    """Stored `created_at` values as the seconds they mean (NaN: a value that means no time).  # (N,) float64"""
    made = seconds_meant_of(created_at)
    made[~((made >= 0) & (made <= MAX_CREATED_AT))] = np.nan
    return made


def comparisons_from_store(uri: str, group_by: str, tenant: str | None = None, storage_options: dict[str, str] | None = None) -> Comparisons:
    """Every stored non-tie comparison (of one tenant, or all), users named `tenant/user`, the stored ties of those
    users counted in `ties_skipped` (not those of a user who gave only ties: no audit's members file lists them). An object
    store is reached with `storage_options`, default those named by `PLURALIGN_STORE_*` variables.
    Raises NoStore (a ValueError naming `uri`) when `uri` holds no `preferences` table."""
    options = options_from_env() if storage_options is None else storage_options
    with reading(uri, "table `preferences`", options):
        db = connect(uri, options)
        try:
            table = db.open_table("preferences")
        except ValueError as exc:  # LanceDB's "Table 'preferences' was not found": a URI with no store under it
            if "not found" not in str(exc):
                raise
            raise NoStore(f"{uri}: no pluralign store there (no `preferences` table)") from None
        refuse_newer("preferences", uri, table.schema.metadata)
        encoder_id = (table.schema.metadata or {}).get(b"encoder_id", b"unknown").decode()
        mine = f" AND tenant = {quote(tenant)}" if tenant else ""
        columns = ["tenant", "user_id", "created_at", "attributes", "chosen_vec", "rejected_vec"]
        data = table.search().where("tie = false AND rejected != ''" + mine).select(columns).limit(None).to_arrow()
        tied = table.search().where("tie = true AND rejected != ''" + mine).select(["tenant", "user_id", "created_at"]).limit(None).to_arrow()
    # the audited users' ties (a store's audit does not say 0 whatever it skipped): a user of ties alone is in
    # no audit's members file, so their DELETE rewrites no report, and their ties counted here would stay in it. Their
    # times too: an audit with `since` counts those at or after it, not every one
    tied = tied.filter(pc.is_in(_user_keys(tied), value_set=_user_keys(data).unique()))
    ties = tied.num_rows
    if data.num_rows == 0:
        raise ValueError("no stored comparisons to audit" + (f" for tenant {tenant}" if tenant else ""))
    dim = data.schema.field("chosen_vec").type.list_size
    vectors = lambda name: data.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)  # noqa: E731
    diff = (vectors("chosen_vec") - vectors("rejected_vec")).astype(np.float32)  # (N, d)
    users, labels, attributes = _labels(db, data, group_by, tenant, uri, options)
    user, names = index_labels(users)
    group, groups = index_labels(labels)
    policy = np.array([policy_outcome(a) for a in attributes], np.int8)
    # a time in milli-, micro- or nanoseconds an older version stored as the seconds it meant: `since` and each user's
    # order read them; one that means no time (-5, 1e300, inf) as NaN, unknown: never at or after a `since`, last in order
    made = _times(data.column("created_at").to_numpy())
    return Comparisons(diff=diff, user=user, users=names, group=group, groups=groups, time=made, policy_win=policy, encoder_id=encoder_id,
                       ties_skipped=ties, tie_time=_times(tied.column("created_at").to_numpy()),
                       fold_names=[name.partition("/")[2] for name in names])  # a tenant's name holds no `/` (USER_ID)
