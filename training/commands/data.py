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
import re
import sys
from pathlib import Path

import msgspec

from pluralign.files import DECODE_ERRORS
from training.common import check_writable_file, print_json, read_preference_rows, reading, user_id


def _load(args):
    records, pairs, _ = _load_located(args)
    return records, pairs


def _load_located(args):
    """(records, pairs, where): `where[i]` says where `records[i]` is in --path, for an error
    about it: "line 1203" (a JSON line), "row 1203" (a Parquet row) or "pair <id>" (UKPConvArg1)."""
    from pluralign.data.ukp import load_ukp

    if args.source == "ukp_convarg1":
        for option, given in (("--user", getattr(args, "user", None)), ("--skip-bad", args.skip_bad)):
            if given:  # it would be ignored: UKP's rows name their worker, and a bad pair is always an error
                raise ValueError(f"{option}: read only for a preference file (--source jsonl or parquet), not --source ukp_convarg1")
        with reading("--path", args.path):
            records, pairs = load_ukp(args.path)
        return records, pairs, [f"pair {r.attributes.get('pair_id', '?')}" for r in records]
    # jsonl, parquet or file (argparse's choices): a preference file, which the reader tells by its bytes
    records, places = read_preference_rows("--path", args.path, skip_bad=args.skip_bad, default_user=getattr(args, "user", None),
                                           user_option="--user")
    return records, len(records), places


def _same_answer(records: list) -> list[int]:
    """Indexes of `records` whose chosen and rejected are one answer (`pluralign.data.text.look_key`): UKPConvArg1
    pairs 15 of its arguments with the same text (75 judgments, 70 of them ties). A preference file may not hold
    such a row (the reader refuses it: a comparison needs two different answers), nor does the service take one."""
    from pluralign.data.text import look_key

    return [i for i, r in enumerate(records) if look_key(r.chosen) == look_key(r.rejected)]


def _comparisons_only(args: argparse.Namespace, records: list, where: list[str]) -> tuple[list, list[str], int]:
    """(records, where, how many were left out): `records` without those of `_same_answer`, said on stderr with
    their pairs (only UKP's importer makes them: a preference file's reader refuses each)."""
    same = _same_answer(records)
    if not same:
        return records, where, 0
    pairs = sorted({records[i].attributes.get("pair_id", where[i]) for i in same})
    shown = ", ".join(pairs[:5]) + (f", ... ({len(pairs) - 5} more)" if len(pairs) > 5 else "")
    print(f"--path {args.path}: left out {len(same)} judgments of {len(pairs)} pair{'s' * (len(pairs) != 1)} ({shown}) whose "
          "two answers are the same answer (one text, or texts a person cannot tell apart: docs/api.md \"The same answer\"): a "
          "comparison needs two different answers (a preference file may not hold one)",
          file=sys.stderr)
    left = set(same)
    kept = [i for i in range(len(records)) if i not in left]
    return [records[i] for i in kept], [where[i] for i in kept], len(same)


def stats(args: argparse.Namespace) -> int:
    records, pairs = _load(args)
    users = {r.user_id for r in records}
    ties = sum(r.tie for r in records)
    report = {"source": args.source, "pairs": pairs, "judgments": len(records), "users": len(users), "ties": ties}
    if args.source == "ukp_convarg1":
        from collections import Counter

        report["same_answer_judgments"] = len(_same_answer(records))  # counted above; export and import leave them out
        per_user = Counter(r.user_id for r in records if not r.tie)
        report["users_ge_100_non_tie"] = sum(c >= 100 for c in per_user.values())
        report["users_50_to_99_non_tie"] = sum(50 <= c < 100 for c in per_user.values())
    if not args.json:  # the table, then the JSON line every command ends with (eval's and audit's way)
        for key, value in report.items():
            print(f"{key:>24}  {value}")
    print_json(report)
    return 0


def export(args: argparse.Namespace) -> int:
    from pluralign.data.io import write_jsonl, write_parquet

    suffix = Path(args.out).suffix.lower()
    if suffix not in (".jsonl", ".json", ".ndjson", ".parquet"):  # before reading: the format follows the name
        raise ValueError(f"--out {args.out}: expected a .jsonl (or .json, .ndjson) or .parquet file name, got {suffix or 'no suffix'!r}")
    check_writable_file("--out", args.out, "the exported file")
    _check_nothing_dropped_in_place(args)
    records, _, where = _load_located(args)
    records, where, left_out = _comparisons_only(args, records, where)
    parquet = suffix == ".parquet"
    try:  # the records named by their place in --path: a row skipped (--skip-bad) or left out is not counted there
        n = write_parquet(records, args.out, [f"{w} of --path" for w in where]) if parquet else write_jsonl(records, args.out)
    except ValueError as exc:  # the records' values no one Parquet column holds: said of the file being written
        raise ValueError(f"--out {args.out}: {exc}") from None
    print_json({"out": args.out, "format": "parquet" if parquet else "jsonl", "records": n, "users": len({r.user_id for r in records}),
                "left_out_same_answer": left_out})
    return 0


def _check_nothing_dropped_in_place(args: argparse.Namespace) -> None:
    """An export over its own --path rewrites the file in place (pluralign's form, each row's TRL form kept), but with
    --skip-bad the rows it skips would be gone from it for good: a ValueError naming both options, before reading."""
    from training.common import same_file

    if args.skip_bad and same_file(args.out, args.path):
        raise ValueError(f"--out {args.out}: is the file --path reads ({args.path}), and --skip-bad would leave its bad rows "
                         "out of it for good: give another file name, or mend the rows and export without --skip-bad")


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


def _indexes_by_user(args: argparse.Namespace, records: list, where: list[str]) -> dict[str, list[int]]:
    """Each user's records, as indexes into `records` (and `where`), in the file's order. Raises
    ValueError naming the line of a user id, or of an attribute name, the service does not take (a control character,
    a line separator, a bidi override: `pluralign.data.text.name_control_problem`, as its import checks them), before
    anything is sent: the service would refuse it after earlier users were stored."""
    from pluralign.data.record import USER_ID, USER_ID_RULE
    from pluralign.data.text import name_control_problem

    by_user: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if not USER_ID.fullmatch(record.user_id):
            raise ValueError(f"--path {args.path}: {where[i]}, field `user_id`: {record.user_id!r}: {USER_ID_RULE} (nothing was sent)")
        if (problem := next(filter(None, map(name_control_problem, record.attributes)), None)) is not None:
            raise ValueError(f"--path {args.path}: {where[i]}, field `attributes`: an attribute name {problem}: name it in "
                             "visible characters (nothing was sent)")
        by_user.setdefault(record.user_id, []).append(i)
    return by_user


def _refusal(args: argparse.Namespace, r, user: str, sent: list[str], so_far: str, again: str) -> ValueError:
    """The error for a chunk the service did not store (`r` not a 201): of --key for a 401 or 403
    (the key, not the rows, whichever user was being sent); of --url for a 404 or 405 (no import route at that URL:
    `--url $URL/admin` is not the service refusing the user); else naming the refused row's
    line in --path when the service's message names it, or the lines `sent`."""
    if r.status_code in (401, 403):
        why = ("not a key of this service (`pluralign keys create --tenant NAME` where it runs issues one)"
               if r.status_code == 401 else "an admin key reaches only /admin routes: give a tenant key")
        return ValueError(f"--key: {args.url} refused it ({r.status_code}: {_message(r)}): {why} ({so_far})")
    if r.status_code in (404, 405):  # the import route has neither (an unknown user is created): no such route at --url
        from urllib.parse import urlsplit

        root = urlsplit(args.url)
        return ValueError(f"--url {args.url}: no pluralign import route there ({r.status_code}: {_message(r)}): give the "
                          f"service's own URL, as `pluralign serve` prints it ({root.scheme}://{root.netloc}?), or its /v1 "
                          f"base URL ({so_far})")
    row = _refused_row(r, sent)
    if row is not None:
        return ValueError(f"--path {args.path}: {row} (user {user!r}; the service refused it with {r.status_code}; "
                          f"{so_far}; {again})")
    rows = sent[0] if len(sent) == 1 else f"{sent[0]} to {sent[-1]}"
    from pluralign.data.text import shorten

    return ValueError(f"the service refused user {user!r} ({r.status_code}) for --path {args.path} {rows}: "
                      f"{shorten(r.text, 300)} ({so_far}; {again})")


def _stored_count(args: argparse.Namespace, r, so_far: str) -> tuple[int, int]:
    """(rows a 201 says this request stored, rows it says the service held already): those in `already_stored` (held
    under their ids), and every row of a replayed receipt (`Idempotent-Replayed: true`: the chunk's key stored them
    before, its `stored` is the first attempt's). Summed with `stored` alone, the same command run again would say it
    stored every row once more (replayed), and a file of rows held under their ids would say 0.
    ValueError naming --url when it is not pluralign's answer."""
    try:
        receipt = msgspec.json.decode(r.content)
        stored, held = len(receipt["stored"]), len(receipt.get("already_stored") or ())
    except (*DECODE_ERRORS, KeyError, TypeError, AttributeError):
        raise ValueError(f"--url {args.url}: answered 201 without pluralign's `stored` list: is it a pluralign service? "
                         f"({so_far})") from None
    if r.headers.get("Idempotent-Replayed", "").lower() == "true":
        return 0, stored + held
    return stored, held


def import_(args: argparse.Namespace) -> int:
    """POST each user's rows to the service, in chunks; the summary counts what it stored. A row
    the service cannot take is an error naming its line in --path (and the field), found before
    anything is sent where it can be (a user id the service does not take), else from the
    service's refusal (which names the row's line within the request). A service that cannot be
    reached, or that refuses a chunk, is an error naming the URL or the row, and saying what was
    stored before it (those rows stay stored). Each chunk carries an `Idempotency-Key` drawn from
    its place and content, so the same command run again (after the file is mended, or a request
    timed out) does not store a chunk the service already holds; a chunk answered 429 or 503 with
    a short `Retry-After` is sent again after it (up to IMPORT_RETRIES times; a 503 `feedback_backlog`, the
    tenant's rows waiting to be stored at their bound, for up to IMPORT_BACKLOG_WAIT_S), and one answered 413 (too
    large) or 408 (too slow to arrive in time: a slow link) in two halves."""
    import hashlib
    import os
    from urllib.parse import quote

    import httpx

    from pluralign.data.io import preference_row

    key = args.key or os.environ.get("PLURALIGN_KEY")
    if not key:
        raise ValueError("--key (or PLURALIGN_KEY) is required: a tenant key of the receiving service")
    if not (key.isascii() and key.isprintable()) or " " in key:  # an HTTP header's value; before: httpx's "'ascii' codec can't encode"
        raise ValueError(f"{'--key' if args.key else 'PLURALIGN_KEY'}: not an API key (not shown): a key is printable ASCII "
                         "without spaces, as `pluralign keys create` prints it (pk-...)")
    _check_service_url(args.url)
    records, _, where = _load_located(args)
    records, where, left_out = _comparisons_only(args, records, where)
    by_user = _indexes_by_user(args, records, where)
    stored, users_stored, already_stored = 0, 0, 0

    def so_far() -> str:
        return f"{stored} rows of {users_stored} user{'s' * (users_stored != 1)} were stored before it" if stored else "nothing was stored"

    again = "the same command run again stores only what the service does not hold"
    # the openai client's base_url names the service too; a fragment (`/v1#top`) is no part of a request, as httpx has it
    base = args.url.partition("#")[0].rstrip("/").removesuffix("/v1")
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
            for user, indexes in by_user.items():
                lines = [msgspec.json.encode(preference_row(records[i])) + b"\n" for i in indexes]
                pending = import_chunks(lines)[::-1]  # a stack: a chunk the service finds too large is halved in place
                user_stored = 0
                while pending:
                    start, stop = pending.pop()
                    body = b"".join(lines[start:stop])
                    idempotency_key = "import-" + hashlib.sha256(f"{start}\0".encode() + body).hexdigest()
                    # a user id is one path segment: `a?b` or `a/b` must not become another request
                    # X-Pluralign-User: what a load balancer in front of replicas routes the user's requests by
                    # (deploy/README.md); without it every import would go where "" hashes to
                    r = _post_retrying(client, f"/v1/users/{quote(user, safe='')}/import", body,
                                       {"Content-Type": "application/x-ndjson", "Idempotency-Key": idempotency_key,
                                        "X-Pluralign-User": user})
                    # over the service's body limit (413), or too slow to arrive whole within its read deadline (408,
                    # PLURALIGN_REQUEST_READ_TIMEOUT_S: a slow link; nothing of it stored): send it in two halves
                    if r.status_code in (408, 413) and stop - start > 1:
                        middle = (start + stop) // 2
                        pending += [(middle, stop), (start, middle)]
                        continue
                    if r.status_code != 201:
                        raise _refusal(args, r, user, [where[i] for i in indexes[start:stop]], so_far(), again)
                    count, held = _stored_count(args, r, so_far())
                    if count and not user_stored:
                        users_stored += 1
                    stored, user_stored, already_stored = stored + count, user_stored + count, already_stored + held
    except (httpx.TransportError, httpx.InvalidURL) as exc:  # refused, unresolvable, no scheme, timed out
        raise ValueError(f"--url {args.url}: cannot reach the service ({exc or type(exc).__name__}; {so_far()}; {again})") from None
    print_json({"url": args.url, "users": len(by_user), "records": len(records), "stored": stored,
                "already_stored": already_stored, "left_out_same_answer": left_out})
    return 0


def _check_service_url(url: str) -> None:
    """ValueError naming --url unless it is an http:// or https:// URL naming a host, with a port that is a number and no
    spaces around it (`pluralign.urls.base_url_problem`, the library's check of a server's base URL), said before
    anything is read or sent: `--url localhost:8000` (no scheme), a port that is no number or past 65535, or a URL
    pasted with a space before it would otherwise be 'cannot reach the service (Request URL has an unsupported
    protocol ...)' with advice to run the same command again."""
    from pluralign.urls import base_url_problem

    problem = base_url_problem(url)
    if problem is None:
        _check_url_adds_nothing(url)
        return
    if url and "://" not in url and not url.startswith("/") and ":/" not in url:  # `localhost:8000`: its "scheme" is no news
        problem, hint = "", f" (did you mean http://{url}?)"
    else:
        problem, hint = f" ({problem})", ""
    raise ValueError(f"--url {url}: not an http:// or https:// URL of the service{problem}, as http://127.0.0.1:8000 "
                     f"(`pluralign serve`'s){hint}; nothing was sent")


def _check_url_adds_nothing(url: str) -> None:
    """ValueError naming --url when it carries what would change the requests it roots: a user name or password
    (httpx sends them as `Authorization: Basic`, in place of the key's Bearer: the service then refused "the key"), or a
    query (pasted into every route's path: `/v1?x=1/v1/users/u/import`, no such route). Said with the URL's
    credentials hidden (`pluralign.urls.redacted`)."""
    from urllib.parse import urlsplit

    from pluralign.urls import redacted

    parts = urlsplit(url)
    if parts.password is not None:
        what = "a user name and password (`user:***@`), which would be sent as Basic authentication in place of the key"
    elif parts.username is not None:
        what = "a user name (`...@` before the host), which would be sent as Basic authentication in place of the key"
    elif parts.query or "?" in url.partition("#")[0]:  # `/v1?`: urllib reads no query, httpx a path `/v1?/v1/users/...`
        what = f"a query (`?{parts.query.partition('=')[0]}{'=...' * bool(parts.query)}`), which no import route takes"
    else:
        return
    raise ValueError(f"--url {redacted(url)}: holds {what}; give the "
                     "service's URL alone (http://127.0.0.1:8000, or its /v1 base URL) and the key as --key or "
                     "PLURALIGN_KEY; nothing was sent")


IMPORT_RETRIES = 5  # a chunk answered 429 or 503 with a Retry-After is sent again this many times at most
IMPORT_MAX_WAIT_S = 60.0  # a longer Retry-After is not waited for: the error says so, and the same command resumes


# a chunk refused because the tenant's feedback waiting to be stored is at its bound (503 `feedback_backlog`: the
# service's worker has yet to embed it, docs/operations.md "One tenant's feedback backlog") is sent again after each
# Retry-After for this long, not IMPORT_RETRIES times: a file larger than the bound goes in at the worker's pace
IMPORT_BACKLOG_WAIT_S = 600.0


def _post_retrying(client, url: str, body: bytes, headers: dict[str, str]):
    """POST `body`; a 429 or 503 with a short `Retry-After` (`_retry_after`) is waited out and the
    same request sent again, up to IMPORT_RETRIES times (its Idempotency-Key stores it once); a 503
    `feedback_backlog` for up to IMPORT_BACKLOG_WAIT_S seconds instead (IMPORT_RETRIES, ~25 s, is too
    short: a tenant's backlog of 50,000 rows takes minutes to embed). Returns the last response."""
    import time

    tries, backlog_until = 0, None
    while True:
        r = client.post(url, content=body, headers=headers)
        wait = _retry_after(r)
        if wait is None:
            return r
        if r.status_code == 503 and _code(r) == "feedback_backlog":
            if backlog_until is None:  # said once a chunk: minutes of silence would look like a hang
                print(f"pluralign: the service is still storing this tenant's earlier feedback ({_message(r)}); waiting "
                      f"for it, up to {IMPORT_BACKLOG_WAIT_S:g} s", file=sys.stderr)
                backlog_until = time.monotonic() + IMPORT_BACKLOG_WAIT_S
            if time.monotonic() + wait > backlog_until:
                return r
        elif (tries := tries + 1) > IMPORT_RETRIES:
            return r
        time.sleep(wait)


def _retry_after(response) -> float | None:
    """Seconds to wait before sending a chunk again: a 429 (the tenant's rate limit) or 503 (the
    service busy) with a `Retry-After` of at most IMPORT_MAX_WAIT_S seconds; None otherwise."""
    if response.status_code not in (429, 503):
        return None
    try:
        wait = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return wait if 0 <= wait <= IMPORT_MAX_WAIT_S else None


def _code(response) -> str | None:
    """The `error.code` of a pluralign (OpenAI-shaped) error body; None for another body."""
    try:
        return msgspec.json.decode(response.content)["error"]["code"]
    except (*DECODE_ERRORS, KeyError, TypeError):
        return None


def _message(response) -> str:
    """The `error.message` of a pluralign (OpenAI-shaped) error body, else the body's start."""
    try:
        return str(msgspec.json.decode(response.content)["error"]["message"])
    except (*DECODE_ERRORS, KeyError, TypeError):
        from pluralign.data.text import shorten

        return shorten(response.text, 200)


_ROW_PARAM = re.compile(r"line (\d+)(?:\.(.+))?")  # the import route's `param` for a bad row: its line in the body, then the field


def _refused_row(response, sent: list[str]) -> str | None:
    """The import route's refusal of one row of a chunk, said of the row's place in the file
    (`sent[i]` is where the chunk's line i + 1 came from): "line 1203, field `source`: 200
    characters; at most 128". None when the refusal is not about one row."""
    if response.status_code == 413 and len(sent) == 1:
        return f"{sent[0]}: one row over the service's body limit (PLURALIGN_MAX_BODY_BYTES)"
    try:
        error = msgspec.json.decode(response.content)["error"]
        param, message = error["param"], error["message"]
    except (*DECODE_ERRORS, KeyError, TypeError):
        return None
    found = _ROW_PARAM.fullmatch(param) if isinstance(param, str) else None
    if found is None or not 1 <= int(found[1]) <= len(sent) or not isinstance(message, str):
        return None
    field = f", field `{found[2]}`" if found[2] else ""
    return f"{sent[int(found[1]) - 1]}{field}: {message.removeprefix(f'`{param}`: ')}"


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect and export preference data, import it into a running service",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    helps = {"stats": "counts of a preference source", "export": "write a source as JSONL or Parquet (TRL forms kept)",
             "import": "send a source's comparisons to a running pluralign"}
    for name, func in (("stats", stats), ("export", export), ("import", import_)):
        p = data_sub.add_parser(name, help=helps[name], description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        # a choice, so a misspelt one (`json`) is argparse's usage error naming the closest (training/cli.py); `file`:
        # any preference file, as `jsonl` and `parquet` are (the reader tells them by their bytes)
        p.add_argument("--source", required=True, choices=("ukp_convarg1", "jsonl", "parquet", "file"),
                       help="ukp_convarg1, or a preference file: jsonl or parquet (either reads both)")
        p.add_argument("--path", required=True, help="the source: a .jsonl or .parquet file, a folder `datasets` save_to_disk wrote (or one of its .arrow files), or the ukp_convarg1 folder")
        p.add_argument("--skip-bad", action="store_true", help="skip malformed rows and report how many")
        p.add_argument("--user", default=None, type=user_id, help="the user of rows without `user_id` or with a null one (TRL datasets carry none)")
        if name == "stats":
            p.add_argument("--json", action="store_true", help="print only the counts as one JSON object (without it: a table, then that JSON line)")
        elif name == "export":
            p.add_argument("--out", required=True, help="a .jsonl or .parquet file")
        else:
            p.add_argument("--url", required=True, help="the receiving service, e.g. http://127.0.0.1:8000 (or its /v1 base URL)")
            p.add_argument("--key", default=None, help="a tenant key of that service (default: PLURALIGN_KEY)")
        p.set_defaults(func=func)
