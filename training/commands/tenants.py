"""`pluralign tenants`: list a tenant's users, remove a whole tenant, and follow its removal.

    pluralign tenants users --tenant acme --limit 100 [--after bob]
    pluralign tenants remove --tenant acme
    pluralign tenants status --tenant acme

The folder is PLURALIGN_DATA_DIR (default ./data) unless --data-dir is given; the store is PLURALIGN_STORE_URI
(default its `lancedb/`). `users` reads the store (a running service may be serving it) and prints one JSON line
per user (`user`, row counts by table, `has_profile`, `last_activity` in unix seconds), then
`{"users": N, "next": <the --after of the next page, or null>}`. `remove` revokes the tenant's keys at once
and records the removal in the data folder; the service (running, or at its next start) removes every trace
of the tenant in the background (docs/admin.md, "Tenants") and `status` prints how far it went. It prints the
removal's record (`state`: running or done); sent again while one runs, that one. A tenant whose keys are in a
key file that is a link (replicas' shared Secret) is refused (exit 1): revoke them there first. So is a tenant with no
key, no row in the store, no job naming it and no removal before (a mistyped name; exit 2), unless --even-if-unseen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.common import print_json, tenant_name


def register(subparsers) -> None:
    parser = subparsers.add_parser("tenants", help="list a tenant's users, remove a whole tenant", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    # before the subcommand too (and after it), as docs/api.md and `keys` have it
    parser.add_argument("--data-dir", default=None, help="the service's data folder (default PLURALIGN_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="action", required=True)
    users = sub.add_parser("users", help="a page of the tenant's users: ids, row counts, last activity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    users.add_argument("--after", default=None, help="the last user id of the page before (its `next`)")
    users.add_argument("--limit", type=_limit, default=100, help="users in the page (1-1000, default 100)")
    remove = sub.add_parser("remove", help="revoke the tenant's keys and remove every trace of it (the service runs it)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    remove.add_argument("--even-if-unseen", action="store_true",
                        help="begin it for a tenant with no key, no row in the store, no job and no removal before (refused otherwise: a typo)")
    status = sub.add_parser("status", help="how far the tenant's removal went", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for command in (users, remove, status):
        command.add_argument("--tenant", required=True, type=tenant_name, help="the tenant")
        command.add_argument("--data-dir", default=argparse.SUPPRESS, help="the service's data folder (as `tenants --data-dir`)")
    parser.set_defaults(func=run, settings_data_dir=True)  # its --data-dir is the setting data_dir (training.cli._run)


def _limit(text: str) -> int:
    from pluralign.store.tenants import MAX_PAGE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of users, 1-{MAX_PAGE}") from None
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{value}: a page holds 1-{MAX_PAGE} users")
    return value


def run(args: argparse.Namespace) -> int:
    from service.settings import Settings, check_keys_file

    # --data-dir wins over PLURALIGN_DATA_DIR only: PLURALIGN_STORE_URI (replicas' shared store) still names the store
    # (an empty --data-dir is refused naming it: taken as no option, `remove` would revoke the tenant's keys in
    # PLURALIGN_DATA_DIR's folder)
    settings = Settings.load(data_dir=args.data_dir)
    folder = settings.data_path
    option = "--data-dir" if args.data_dir is not None else "PLURALIGN_DATA_DIR (setting data_dir)"
    if not folder.is_dir():  # run from the wrong directory: not "no users"
        raise ValueError(f"{option} {folder}: no such folder: give the service's data folder with --data-dir "
                         "(or PLURALIGN_DATA_DIR)")
    if args.action == "users":
        return _users(args, settings, folder)
    from pluralign.urls import redacted
    from service.auth import KeyRing
    from service.tenants import TenantUnseen, begin_removal, read_removal

    if args.action == "remove":
        check_keys_file(settings)  # the replicas' shared key file not there: not an empty one of its own
        keys = KeyRing(settings.keys_path)
        if not args.even_if_unseen and not _seen(settings, folder, keys, args.tenant):
            unseen = TenantUnseen(args.tenant, f"of it in the store ({redacted(settings.lancedb_uri)}) or the jobs folder")
            raise ValueError(f"{unseen}; --even-if-unseen begins it all the same (feedback of it only still in a service's log)")
        removal, _ = begin_removal(folder, keys, args.tenant)
    else:
        removal = read_removal(folder, args.tenant)
        if removal is None:
            raise ValueError(f"no removal of tenant {args.tenant} was begun in {folder}")
    print_json(removal)
    return 0


def _tables(settings) -> dict:
    """The store's tables a tenant's users are read from (`pluralign.store.tenants.TIME_COLUMNS`), by name; none
    for a store folder not made yet (and none is made here)."""
    from pluralign.store.location import connect, is_object_store
    from pluralign.store.tenants import TIME_COLUMNS

    uri = settings.lancedb_uri
    if not (is_object_store(uri) or Path(uri).is_dir()):
        return {}
    db = connect(uri, settings.storage_options)
    names = set(db.list_tables().tables)
    return {name: db.open_table(name) for name in TIME_COLUMNS if name in names}


def _tenant_users(settings, tenant: str, after: str | None, limit: int):
    """`pluralign.store.tenants.tenant_users` of the store `settings` name: one that cannot be read (an object store
    refusing the keys, down, without the bucket) is the StoreUnavailable saying so in the store's words, the access key
    id S3 repeats hidden (an OSError: the CLI's one line), not Lance's words as they come, with the key id and Rust
    source paths in them."""
    from pluralign.store.failures import reading
    from pluralign.store.tenants import tenant_users

    with reading(settings.lancedb_uri, "the store", settings.storage_options):
        return tenant_users(_tables(settings), tenant, after, limit)


def _seen(settings, folder: Path, keys, tenant: str) -> bool:
    """Whether `tenant` shows here: a key of its (no admin key: that one's tenant only labels it), a removal of it
    before, a job naming it (`jobs_hold_tenant`, as the route) or a row of its in the
    store. `remove` of a tenant that shows nowhere (a mistyped name) is refused (exit 2) unless `--even-if-unseen`:
    begun, it would answer exit 0, `keys_revoked: 0`, and the service would mark it done, which reads as the tenant
    removed."""
    from service.admin.paths import jobs_folder
    from service.tenants import jobs_hold_tenant, tenant_seen

    return tenant_seen(folder, keys, tenant, lambda: jobs_hold_tenant(jobs_folder(settings), tenant)
                       or bool(_tenant_users(settings, tenant, None, 1)[0]))


def _users(args: argparse.Namespace, settings, folder: Path) -> int:
    import msgspec

    users, more = _tenant_users(settings, args.tenant, args.after, args.limit)
    for user in users:
        print_json(msgspec.to_builtins(user))
    if not users and args.after is None and (unseen := _unseen(settings, folder, args.tenant)) is not None:
        # a mistyped name reads as a tenant without users: said, as the dashboard says it, the page still printed
        print(f"pluralign: warning: {unseen}", file=sys.stderr)
    print_json({"users": len(users), "next": users[-1].user if more else None})
    return 0


def _unseen(settings, folder: Path, tenant: str) -> str | None:
    """Why `tenant`, whose first page of users is empty (the store read already), shows nowhere here, as the dashboard
    says it: no key of its in the key file (none made here), no removal of it before, no job naming it (`tenant_seen`,
    as `remove` asks it); None when it shows. An admin key's tenant, which only labels it, is said to be that. A key file
    that cannot be read (damaged, unreadable) is said so: the page it never needed is printed all the same."""
    from service.admin.paths import jobs_folder
    from service.auth import KeyRing
    from service.tenants import jobs_hold_tenant, tenant_seen

    try:
        keys = KeyRing(settings.keys_path)  # no file: no keys (and none made)
    except OSError as exc:  # KeyFileError's words name the file and what is wrong
        return f"cannot tell whether tenant {tenant!r} shows here: {exc}"
    if tenant_seen(folder, keys, tenant, lambda: jobs_hold_tenant(jobs_folder(settings), tenant)):
        return None
    if any(k.tenant == tenant for k in keys.list()):
        return f"tenant {tenant!r} only labels admin keys (`keys create --tenant {tenant} --admin`), which reach no tenant's users"
    return (f"tenant {tenant!r} shows nowhere here: no key, no removal before and nothing of it in the store or the jobs "
            "folder (a typo? `pluralign keys list` names the tenants with keys)")
