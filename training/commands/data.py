"""`pluralign data stats|export|import`.

    pluralign data stats --source ukp_convarg1 --path ../shared/data/ukp_convarg1 --json
    pluralign data stats --source jsonl --path prefs.jsonl --json
    pluralign data export --source ukp_convarg1 --path ../shared/data/ukp_convarg1 --out ukp.jsonl
    pluralign data import --source jsonl --path alice.jsonl --url http://127.0.0.1:8000 --key pk-...

Files may be in any TRL preference form (standard or conversational, explicit or implicit prompt);
`export` writes each row back in the form it came in. `import` sends a file's comparisons to a
running pluralign (POST /v1/users/{user}/import, per user), e.g. a user's
`/v1/users/{user}/export?format=preferences` into another tenant or another pluralign.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from training.common import check_writable, print_json, read_preference_file


def _load(args):
    from pluralign.data.ukp import load_ukp

    if args.source == "ukp_convarg1":
        return load_ukp(args.path)
    if args.source in ("jsonl", "parquet", "file"):
        records = read_preference_file("--path", args.path, skip_bad=args.skip_bad, default_user=getattr(args, "user", None))
        return records, len(records)
    raise ValueError(f"unknown --source {args.source!r}: expected ukp_convarg1, jsonl or parquet")


def stats(args: argparse.Namespace) -> int:
    records, pairs = _load(args)
    users = {r.user_id for r in records}
    ties = sum(r.tie for r in records)
    report = {"source": args.source, "pairs": pairs, "judgments": len(records), "users": len(users), "ties": ties}
    if args.source == "ukp_convarg1":
        from collections import Counter

        per_user = Counter(r.user_id for r in records if not r.tie)
        report["users_ge_100_non_tie"] = sum(c >= 100 for c in per_user.values())
        report["users_50_to_99_non_tie"] = sum(50 <= c < 100 for c in per_user.values())
    if args.json:
        print_json(report)
    else:
        for key, value in report.items():
            print(f"{key:>24}  {value}")
    return 0


def export(args: argparse.Namespace) -> int:
    from pluralign.data.io import write_jsonl, write_parquet

    suffix = Path(args.out).suffix.lower()
    if suffix not in (".jsonl", ".json", ".ndjson", ".parquet"):  # before reading: the format follows the name
        raise ValueError(f"--out {args.out}: expected a .jsonl (or .json, .ndjson) or .parquet file name, got {suffix or 'no suffix'!r}")
    check_writable("--out", args.out)
    records, _ = _load(args)
    parquet = suffix == ".parquet"
    n = write_parquet(records, args.out) if parquet else write_jsonl(records, args.out)
    print_json({"out": args.out, "format": "parquet" if parquet else "jsonl", "records": n, "users": len({r.user_id for r in records})})
    return 0


IMPORT_CHUNK = 500  # rows per request at most
IMPORT_CHUNK_BYTES = 512_000  # body bytes per request at most: half the service's default limit (PLURALIGN_MAX_BODY_BYTES)


def import_chunks(lines: list[bytes], max_rows: int = IMPORT_CHUNK, max_bytes: int = IMPORT_CHUNK_BYTES) -> list[tuple[int, int]]:
    """(start, stop) ranges of `lines` (one encoded row each, newline included): consecutive rows,
    at most `max_rows` of them and `max_bytes` together (a longer row alone is a chunk)."""
    chunks, start, size = [], 0, 0
    for i, line in enumerate(lines):
        if i > start and (i - start >= max_rows or size + len(line) > max_bytes):
            chunks.append((start, i))
            start, size = i, 0
        size += len(line)
    if start < len(lines):
        chunks.append((start, len(lines)))
    return chunks


def import_(args: argparse.Namespace) -> int:
    """POST each user's rows to the service, in chunks; the summary counts what it stored. A service
    that cannot be reached, or that refuses a chunk, is an error naming the URL or the user, and
    saying what was stored before it (those rows stay stored). Each chunk carries an
    `Idempotency-Key` drawn from its place and content, so the same command run again (after the
    file is mended, or a request timed out) does not store a chunk the service already holds."""
    import hashlib
    import os
    from urllib.parse import quote

    import httpx

    from pluralign.data.io import preference_row

    key = args.key or os.environ.get("PLURALIGN_KEY")
    if not key:
        raise ValueError("--key (or PLURALIGN_KEY) is required: a tenant key of the receiving service")
    records, _ = _load(args)
    by_user: dict[str, list] = {}
    for record in records:
        by_user.setdefault(record.user_id, []).append(record)
    stored, users_done = 0, 0

    def so_far() -> str:
        return f"{stored} rows of {users_done} user{'s' * (users_done != 1)} were stored before it" if stored else "nothing was stored"

    base = args.url.rstrip("/").removesuffix("/v1")  # the openai client's base_url names the service too
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
            for user, rows in by_user.items():
                lines = [msgspec.json.encode(preference_row(r)) + b"\n" for r in rows]
                pending = import_chunks(lines)[::-1]  # a stack: a chunk the service finds too large is halved in place
                while pending:
                    start, stop = pending.pop()
                    body = b"".join(lines[start:stop])
                    idempotency_key = "import-" + hashlib.sha256(f"{start}\0".encode() + body).hexdigest()
                    # a user id is one path segment: `a?b` or `a/b` must not become another request
                    r = client.post(f"/v1/users/{quote(user, safe='')}/import", content=body,
                                    headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": idempotency_key})
                    if r.status_code == 413 and stop - start > 1:  # over the service's body limit: send it in two halves
                        middle = (start + stop) // 2
                        pending += [(middle, stop), (start, middle)]
                        continue
                    if r.status_code != 201:
                        too_large = " (one row over the service's body limit, PLURALIGN_MAX_BODY_BYTES)" if r.status_code == 413 else ""
                        raise ValueError(f"the service refused user {user!r} ({r.status_code}){too_large}: {r.text[:300]} ({so_far()}; "
                                         "the same command run again stores only what the service does not hold)")
                    try:
                        stored += len(msgspec.json.decode(r.content)["stored"])
                    except (msgspec.DecodeError, KeyError, TypeError):
                        raise ValueError(f"--url {args.url}: answered 201 without pluralign's `stored` list: is it a pluralign service? "
                                         f"({so_far()})") from None
                users_done += 1
    except (httpx.TransportError, httpx.InvalidURL) as exc:  # refused, unresolvable, no scheme, timed out
        raise ValueError(f"--url {args.url}: cannot reach the service ({exc or type(exc).__name__}; {so_far()}; "
                         "the same command run again stores only what the service does not hold)") from None
    print_json({"url": args.url, "users": len(by_user), "records": len(records), "stored": stored})
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect and export preference data, import it into a running service",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    helps = {"stats": "counts of a preference source", "export": "write a source as JSONL or Parquet (TRL forms kept)",
             "import": "send a source's comparisons to a running pluralign"}
    for name, func in (("stats", stats), ("export", export), ("import", import_)):
        p = data_sub.add_parser(name, help=helps[name])
        p.add_argument("--source", required=True, help="ukp_convarg1, jsonl or parquet")
        p.add_argument("--path", required=True)
        p.add_argument("--skip-bad", action="store_true", help="skip malformed rows and report how many")
        p.add_argument("--user", default=None, help="the user of rows without `user_id` (TRL datasets carry none)")
        if name == "stats":
            p.add_argument("--json", action="store_true")
        elif name == "export":
            p.add_argument("--out", required=True, help="a .jsonl or .parquet file")
        else:
            p.add_argument("--url", required=True, help="the receiving service, e.g. http://127.0.0.1:8000 (or its /v1 base URL)")
            p.add_argument("--key", default=None, help="a tenant key of that service (default: PLURALIGN_KEY)")
        p.set_defaults(func=func)
