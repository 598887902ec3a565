"""`pluralign keys`: issue, list and revoke API keys in the service's data folder.

    pluralign keys create --tenant acme --name "acme web app"
    pluralign keys create --tenant ops --admin --name "on-call"
    pluralign keys list
    pluralign keys revoke 3f9a1c2b7d4e

The folder is PLURALIGN_DATA_DIR (default ./data) unless --data-dir is given; the key file is its
api_keys.json unless PLURALIGN_KEYS_FILE (or keys_file in PLURALIGN_CONFIG) names the one replicas share. Keys are stored
hashed; `create` prints the key once. Each prints JSON lines (`list`: one per key, then a count). A running service sees a change at its next request, so a
revoked key is refused at once. Rotation: create a new key, move the client to it, revoke the old.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.common import print_json, tenant_name

MAX_LABEL = 128  # characters of a key's --name


def key_label(text: str) -> str:
    """An argparse `type=` for `keys create --name`: at most MAX_LABEL characters, none a control or format
    character (Unicode Cc/Cf: a newline, an escape, a bidi override), which `keys list` and `revoke` would
    show a terminal raw or another reader misread, nor blank (`--name "$NAME"` with NAME unset: leave --name out for a
    key without a name, rather than a nameless key, exit 0); argparse's usage error naming the option
    (exit 2)."""
    import unicodedata

    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is blank: give a label, or leave --name out for a key without one")
    if len(text) > MAX_LABEL:
        raise argparse.ArgumentTypeError(f"{len(text)} characters; at most {MAX_LABEL}")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"holds the control character U+{ord(bad):04X} at {text.index(bad) + 1}: give a plain label")
    return text


def register(subparsers) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="the service's data folder (default PLURALIGN_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="issue a key (printed once)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    create.add_argument("--tenant", required=True, type=tenant_name, help="the tenant the key reaches (admin keys: a label)")
    create.add_argument("--admin", action="store_true", help="an admin key: /admin routes only, over every tenant's data (--tenant only labels it)")
    create.add_argument("--name", default=None, type=key_label, help=f"a label to find it by (not blank, at most {MAX_LABEL} characters, no control characters)")
    listing = sub.add_parser("list", help="keys: id, tenant, admin, name, created_at (never the key)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    revoke = sub.add_parser("revoke", help="remove a key by id (from `list`), name or the key itself; effective at once", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    revoke.add_argument("key", help="the key's id (8+ hex digits of its hash), its name, or the key itself (pk-...)")
    for command in (create, listing, revoke):  # after the subcommand too, where every other command takes it
        command.add_argument("--data-dir", default=argparse.SUPPRESS, help="the service's data folder (as `keys --data-dir`)")
    parser.set_defaults(func=run, settings_data_dir=True)  # its --data-dir is the setting data_dir (training.cli._run)


def run(args: argparse.Namespace) -> int:
    from service.auth import KeyRing, key_id
    from service.settings import Settings, check_keys_file

    # --data-dir wins over PLURALIGN_DATA_DIR only: keys_file (PLURALIGN_KEYS_FILE or PLURALIGN_CONFIG's, the file
    # replicas share) names the key file still, wherever the data folder is (or keys would go into a file no replica
    # reads). An empty --data-dir ("$DATA", DATA unset) is refused naming it, as `serve`'s, not taken as no option (./data)
    settings = Settings.load(data_dir=args.data_dir)
    folder = settings.data_path  # absolute
    given = Path(settings.data_dir)  # as the user wrote it, for the messages
    option = "--data-dir" if args.data_dir is not None else "PLURALIGN_DATA_DIR (setting data_dir)"
    if settings.keys_file:  # the data folder holds no keys: the file's folder is to be there (a start checks the same)
        check_keys_file(settings)
    elif folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {given}: a file, not a folder")
    elif args.action != "create" and not folder.exists():  # run from the wrong directory: not "no keys"
        raise ValueError(f"{option} {given}: no such folder ({folder.absolute()}), so no keys there: give the "
                         "service's data folder with --data-dir (or PLURALIGN_DATA_DIR; `pluralign serve` creates it)")
    keys = KeyRing(settings.keys_path)
    describe = lambda k: {"id": key_id(k), "tenant": k.tenant, "admin": k.admin, "name": k.name, "created_at": k.created_at}
    if args.action == "create":
        key = keys.issue(args.tenant, admin=args.admin, name=args.name or "")  # None: no --name (argparse would check a default "")
        entry = keys.lookup(key)
        try:
            print_json({**describe(entry), "key": key})
        except OSError as exc:  # shown nowhere (`> /dev/full`, a closed pipe): a working key no one has seen is not kept
            keys.revoke(key_id(entry))
            raise ValueError(f"{exc.filename or 'stdout'}: {exc.strerror or exc}: the key (id {key_id(entry)}, tenant "
                             f"{entry.tenant}) could not be printed, so the key was not kept: run the command again with "
                             "its output going where it can be written (a terminal, a file)") from None
    elif args.action == "list":
        listed = [describe(k) for k in keys.list()]
        for item in listed:
            print_json(item)
        print_json({"keys": len(listed)})
    else:
        gone = keys.revoke(args.key)
        print_json({"revoked": [describe(k) for k in gone]})
    return 0
