"""Stored data that cannot be read or written: a full disk, a read-only mount, a damaged file, an
object store that cannot be reached, refuses the credentials, has no such bucket, or is in another region.

Lance reports these as `RuntimeError("lance error: LanceError(IO): File too large (os error 27), <its
Rust source line>")` (a truncated data file: "failed to fill whole buffer", no file named), plain
file writes as OSError; an object store's failures come in object_store's words inside Lance's
("Generic S3 error: ... HTTP error: error sending request", "403 Forbidden: ...InvalidAccessKeyId...",
"NoSuchBucket"). All become `StoreUnavailable`, which names what could not be read or written
(a table, the feedback log) and why, so that a caller can say so (the service: 507 or 503) instead
of an "internal error", and an operator reads which table in the log. `Problems` remembers the
recent ones for a health check.
"""

from __future__ import annotations

import contextlib
import errno
import re
import threading
import time
from urllib.parse import urlsplit

from pluralign.urls import without_secrets

FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no room: disk, quota, file size limit
READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
UNREADABLE = frozenset({errno.EIO, errno.ESTALE, errno.ENOTCONN})  # a disk error; a network or FUSE mount gone


class TenantBacklog(Exception):
    """A feedback record of `tenant` refused, nothing of it written: the tenant's rows pending in the feedback log (and
    queued for its writer) are `rows`, and `adding` more would pass its bound `limit`, or their size (`sizes`: bytes
    waiting, the record's, the bound on them) would pass the bound on that (`tenant_rows`, `tenant_bytes` of
    `pluralign.store.feedback_log.FeedbackLog`; defined here, which imports no table, for the service's error handling).
    The tenant's feedback is taken again once the worker has moved enough of its backlog into the table, other tenants'
    meanwhile as ever: what a loop posting one tenant's feedback or imports meets, instead of every tenant's feedback
    waiting behind its backlog and the process's memory holding all of it."""

    def __init__(self, tenant: str, rows: int, adding: int, limit: int, drain_rate: float | None = None,
                 sizes: tuple[int, int, int] | None = None):
        self.tenant, self.rows, self.adding, self.limit = tenant, rows, adding, limit
        self.bytes, self.adding_bytes, self.byte_limit = sizes or (0, 0, 0)
        self.by_size = sizes is not None and rows + adding <= limit  # refused for the rows' size, not their count
        said = (f"{rows} feedback rows ({self.bytes} bytes) waiting to be stored (at most {self.byte_limit} bytes); this one "
                f"adds {self.adding_bytes} bytes" if self.by_size else
                f"{rows} feedback rows waiting to be stored (at most {limit}); this one adds {adding}")
        super().__init__(f"tenant {tenant!r} has {said}")
        self.drain_rate = drain_rate  # rows/s the tenant's rows left the log at lately; None: not measured (`DrainRates`)

    def wait_s(self) -> float | None:
        """Seconds until enough of the tenant's rows have left the log for this record to fit, at `drain_rate`:
        `rows + adding - limit` rows to go (refused for their size: the share of `rows` that holds the bytes over the
        bound), or all `rows` where fewer (a tenant with none waiting may append a record larger than its bound); None
        when the rate is not measured."""
        if not self.drain_rate:
            return None
        if self.by_size:
            over = self.bytes + self.adding_bytes - self.byte_limit
            return min(self.rows, self.rows * over / max(self.bytes, 1)) / self.drain_rate
        return min(self.rows, self.rows + self.adding - self.limit) / self.drain_rate


PROBLEMS = {  # kind -> words for it
    "full": "no space left (the disk is full, or a quota or file size limit is reached)",
    "read-only": "the folder is read-only or not permitted",
    "unreadable": "a file of it is damaged or unreadable",
    "missing": "its folder was removed",
    # an object store (`s3://`): what an operator checks is the endpoint, the keys, or the bucket
    "unreachable": "the object store did not answer in time or answered with a server error (down, unreachable, slow or throttling)",
    "denied": "the object store refused the credentials (a wrong or expired key, or no permission)",
    "no-bucket": "its bucket does not exist",
    "wrong-region": "the object store refused the request as malformed or redirected it (most often a wrong region)",
    "no-credentials": "no credentials for the object store were found (no key set, none in AWS_* variables, no instance role)",
    # `s3+ddb://`: Lance's DynamoDB commit store, which the AWS SDK reaches (not object_store)
    "commit-store": "its DynamoDB commit store refused or failed the request (its table missing, DynamoDB not reached, or the "
                    "keys refused)",
    # Lance's removal of old versions counts the files it could not delete and raises nothing (`store.versions`)
    "not-removed": "files of its old versions, which may hold deleted rows, could not be deleted (the store refused or failed "
                   "the deletes: no permission to delete, a retention rule, or a server error)",
}
# a rewrite of stored files without a deleted user's records (the feedback log's segments): noted apart from
# the plain writes of the same thing, whose later success does not mean the deleted user's text is gone
REWRITTEN = "rewritten without a deleted user"
# a table's old versions removed after a purge (`Store._drop_old_versions`): noted apart from its plain writes, whose
# later success does not mean the old versions' files (the deleted rows' text) are gone
OLD_VERSIONS = "cleared of its old versions"
OBJECT_STORE_PROBLEMS = frozenset({"unreachable", "denied", "no-bucket", "wrong-region", "no-credentials", "commit-store"})  # shown until the same action succeeds, reads too
WRITES = frozenset({"written", REWRITTEN, OLD_VERSIONS})  # actions whose failure shows until that same action succeeds
READ_PROBLEM_S = 600.0  # how long a failed read is reported (`Problems.recent`) after it was last seen
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
# Lance's words for a file it cannot read (lancedb 0.40): a data file cut short or emptied ("LanceError(IO):
# ... failed to fill whole buffer", "Invalid range 0..1835 for object of size 0 bytes"), one removed ("Not
# found: <path>"), a deletion file damaged ("LanceError(Arrow): Parser error: Arrow file does not contain
# correct footer", "LanceError(Arrow): Io error: invalid seek ..."); a data file whose header is overwritten
# makes its reader panic ("task 355 panicked with message ...")
_PANIC = re.compile(r"task \d+ panicked with message")
_UNREADABLE = re.compile(r"LanceError\(IO\)|LanceError\(Arrow\): (?:Io|Parser|Ipc) error|Not found: |corrupt|" + _PANIC.pattern,
                         re.IGNORECASE)
# object_store's words (inside Lance's) for a request that never got an answer (refused, reset, timed out:
# "HTTP error: error sending request", hyper's "tcp connect error", "dispatch failure"), or got S3's 5xx
# ("Server returned non-2xx status code: 503 Service Unavailable: ...SlowDown...", "status: 503")
_UNREACHABLE = re.compile(r"error sending request|dispatch failure|tcp connect error|Connection ?refused|connection reset|"
                          r"operation timed out|non-2xx status code: 5\d\d|status: 5\d\d|<Code>SlowDown<", re.IGNORECASE)
_DENIED = re.compile(r"lacked the necessary privileges|non-2xx status code: 403|status: 403|<Code>(?:InvalidAccessKeyId|"
                     r"SignatureDoesNotMatch|ExpiredToken|InvalidToken|AccessDenied)<", re.IGNORECASE)
_NO_BUCKET = re.compile(r"NoSuchBucket")
# a request signed for another region: S3 answers 400 AuthorizationHeaderMalformed, or 301 PermanentRedirect
# (object_store: "Received redirect without LOCATION, this normally indicates an incorrectly configured region")
_WRONG_REGION = re.compile(r"non-2xx status code: 400|status: 400\b|Received redirect|BareRedirect|status: 301\b|"
                           r"<Code>(?:AuthorizationHeaderMalformed|PermanentRedirect|IllegalLocationConstraintException)<")
_OBJECT_STORE = re.compile(r"\bS3\b|object.?store|Error performing (?:GET|PUT|POST|DELETE|HEAD)", re.IGNORECASE)
# what S3's error bodies repeat of a request (real S3 names the access key id of a 403 and the string it
# signed, and an ExpiredToken or InvalidToken 400 the session token itself, `<Token-0>`): hidden before the
# words reach a log line or an error
_ECHOED = re.compile(r"<(AWSAccessKeyId|SignatureProvided|StringToSign|StringToSignBytes|CanonicalRequest|CanonicalRequestBytes|"
                     r"Token-\d+)>.*?</\1>", re.DOTALL)
# where in Lance's source (`, /root/.cargo/.../lance-io-13.0.0/src/object_store.rs:512:23`): no use to an operator,
# and no object store's word either (a local disk's error raised in Lance's object_store.rs is a local disk's)
_RUST_SOURCE = re.compile(r",\s*[^\s,]+\.rs:\d+:\d+|,\s*location: Location \{[^}]*\}(?:,\s*backtrace: \w+)?")
# Lance's credential chain (aws-config) found no credentials at all: no key set, no AWS_* variables, no profile
# or instance role ("Failed to get AWS credentials: CredentialsNotLoaded(... no providers in chain ...)")
# the AWS SDK's error, which in Lance only its DynamoDB commit store (`s3+ddb://`) raises: S3 is reached by object_store
_COMMIT_STORE = re.compile(r"WrappedSdkError")
# DynamoDB's body, {"__type":"...#Name","message":"..."}, as the SDK prints it (its quotes escaped, `\"`): AWS's and DynamoDB
# Local's JSON compact, moto's spaced, AWS's AccessDeniedException's `Message` capitalized
_SDK_ERROR_NAME = re.compile(r'__type\\?"\s*:\s*\\?"[^"\\#]*#(\w+)')
_SDK_ERROR_MESSAGE = re.compile(r'\\?"[Mm]essage\\?"\s*:\s*\\?"(.*?)\\?"\s*[,}]')
# Lance's words for a commit it could not read back (a commit store, DynamoDB, failing meanwhile: its table gone, not
# reached): the AWS SDK's error is only in Lance's own log, and only the store's URI tells which store it was
_COMMIT_UNKNOWN = re.compile(r"Commit result for version \d+ is unknown")
_NO_CREDENTIALS = re.compile(r"Failed to get AWS credentials|CredentialsNotLoaded|no providers in chain provided credentials")


class StoreUnavailable(OSError):
    """`name` (`table preferences`, `the feedback log`) at `where` (a folder or URI) cannot be
    `action` (read, written) because of `problem` (a key of PROBLEMS); `detail`: the cause's own
    words. Its message names the folder: for logs, not for clients (use `public`)."""

    def __init__(self, name: str, where: str, action: str, problem: str, detail: str, code: int | None = None):
        super().__init__(code or errno.EIO, f"{name} at {where} cannot be {action}: {PROBLEMS[problem]} ({detail})")
        self.name, self.where, self.action, self.problem, self.detail = name, where, action, problem, detail

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # pickled whole (a job's error on Ray, a child process): OSError's own takes (errno, strerror)
        return type(self), (self.name, self.where, self.action, self.problem, self.detail, self.errno)

    @property
    def public(self) -> str:
        """The message without the folder and the cause's words (which may name files)."""
        return f"{self.name} cannot be {self.action}: {PROBLEMS[self.problem]}"


class OldVersionsLeft(OSError):
    """Files of a table's old versions that Lance's removal could not delete (`store.versions`)."""


def storage_problem(exc: BaseException) -> tuple[str, int | None] | None:
    """(kind, errno) when `exc` says stored data cannot be read or written (a key of PROBLEMS), else
    None: a bad argument, a commit conflict, a timeout and the like are not."""
    if isinstance(exc, StoreUnavailable):
        return exc.problem, exc.errno
    if isinstance(exc, OldVersionsLeft):
        return "not-removed", None
    code = exc.errno if isinstance(exc, OSError) else None
    text = _RUST_SOURCE.sub("", str(exc))
    if code is None and isinstance(exc, (OSError, RuntimeError, ValueError)):
        found = _OS_ERROR.search(text) if "lance" in text.lower() else None
        if found:
            code = int(found.group(1))
        remote = object_store_problem(text) if code not in FULL | READ_ONLY else None
        if remote is not None:
            return remote, None
        if not found and _UNREADABLE.search(text) and ("lance" in text.lower() or _PANIC.match(text)):
            return "unreadable", None
    if code in FULL:
        return "full", code
    if code in READ_ONLY:
        return "read-only", code
    if code in UNREADABLE:
        return "unreadable", code
    return None


def object_store_problem(text: str) -> str | None:
    """"no-credentials", "no-bucket", "denied", "unreachable" or "wrong-region" when `text` (Lance's or object_store's words)
    says an object store has no such bucket, refused the credentials, did not answer (or answered 5xx), or
    refused the request as malformed or redirected it (400, 301: a wrong region); "commit-store" when it is the AWS SDK's
    error of an `s3+ddb://` store's DynamoDB commit store (any: its table missing, DynamoDB not reached); else None."""
    text = _RUST_SOURCE.sub("", text)
    if _NO_CREDENTIALS.search(text):
        return "no-credentials"
    if _COMMIT_STORE.search(text):
        return "commit-store"
    if not _OBJECT_STORE.search(text):  # a local disk's "(os error 110)" is no object store's
        return None
    if _NO_BUCKET.search(text):
        return "no-bucket"
    if _DENIED.search(text):
        return "denied"
    if _UNREACHABLE.search(text):
        return "unreachable"
    if _WRONG_REGION.search(text):
        return "wrong-region"
    return None


def secrets_of(storage_options) -> tuple[str, ...]:
    """The credentials among Lance `storage_options`, for `scrub`: the keys, secrets and tokens, and the
    password of a URL (an endpoint `http://user:password@host`, which object_store's words repeat whole)."""
    found = []
    for name, value in (storage_options or {}).items():
        if "key" in name or "secret" in name or "token" in name:
            found.append(value)
        elif "://" in str(value):
            with contextlib.suppress(ValueError):  # not a URL after all
                found.append(urlsplit(value).password)
    return tuple(v for v in found if v)


def scrub(text: str, secrets=()) -> str:
    """`text` without what an S3 error body repeats of the request (the access key id, the signed string)
    and without any of `secrets` (the store's credentials), for a log line or an error."""
    return without_secrets(_ECHOED.sub(lambda m: f"<{m.group(1)}>(hidden)</{m.group(1)}>", text), secrets, "(hidden)")


def unavailable(exc: BaseException, name: str, where: str, action: str, secrets=()) -> StoreUnavailable | None:
    """`exc` as a StoreUnavailable naming `name`, or None when it is no storage problem (re-raise it).
    `secrets` (the store's credentials) are left out of its words."""
    if isinstance(exc, StoreUnavailable):
        return exc
    found = storage_problem(exc)
    if found is None and _COMMIT_UNKNOWN.search(str(exc)) and "://" in where and not where.startswith(("memory://", "file://")):
        found = ("commit-store" if where.startswith("s3+ddb://") else "unreachable", None)
    if found is None:
        return None
    detail = scrub(_RUST_SOURCE.sub("", getattr(exc, "strerror", None) or str(exc)).strip(), secrets)
    if found[0] == "commit-store":
        detail = commit_store_detail(detail)
    if isinstance(exc, OSError) and exc.filename:
        detail = f"{detail}: {exc.filename}"
    return StoreUnavailable(name, where, action, found[0], detail, found[1])


@contextlib.contextmanager
def reading(uri: str, name: str, storage_options):
    """Around a read of `name` at `uri`: a store that cannot be read (a full or damaged disk, an object store
    down, refusing the keys, without the bucket) is a StoreUnavailable saying so, without the credentials
    (what S3's error bodies repeat of them too), not object_store's words as they came. For a process that reads a
    store another one serves (an audit, `pluralign tenants users`)."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as exc:
        found = unavailable(exc, name, uri, "read", secrets_of(storage_options))
        if found is None or found is exc:
            raise
        raise found from None


def commit_store_detail(text: str) -> str:
    """The AWS SDK's error of a DynamoDB commit store (`_COMMIT_STORE`) in a few words: the error DynamoDB answered and
    its message ("DynamoDB answered ResourceNotFoundException: Requested resource not found: Table: T not found"), or
    that it did not answer; the SDK's text holds every header of the answer (a kilobyte) before them."""
    name, message = _SDK_ERROR_NAME.search(text), _SDK_ERROR_MESSAGE.search(text)
    if name:
        return f"DynamoDB answered {name.group(1)}" + (f": {message.group(1)}" if message else "")
    if "no service error" in text:
        return ("DynamoDB did not answer (no connection, or no credentials for it: its endpoint, AWS's for the region or "
                "DYNAMODB_ENDPOINT, the network, the keys)")
    return text[:300]


class Problems:
    """The storage failures seen lately, by what failed and how (`failed`), for a health check: a
    write that failed is shown until a later write of the same thing succeeds (room again), and so is
    a read of an object store that did not answer or refused it (it answers again); a read,
    or a write whose successes nobody reports, for READ_PROBLEM_S after it was last seen (a damaged
    file stays damaged until an operator restores it; reads of other rows may succeed meanwhile)."""

    def __init__(self, read_problem_s: float = READ_PROBLEM_S):
        self.read_problem_s = read_problem_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], dict] = {}  # (name, action) -> problem, failures, first and last seen
        self._ages: set[tuple[str, str]] = set()  # those shown only READ_PROBLEM_S after they were last seen
        self._answered = 0.0  # when a write of the store last succeeded (`written`; `object_store_down`)

    def failed(self, exc: StoreUnavailable, watched: bool = True) -> None:
        """`watched`: a later success of the same write is reported (`succeeded`); False for writes
        nobody reports, whose failures are shown as long as a read's."""
        now = time.time()
        with self._lock:
            seen = self._seen.setdefault((exc.name, exc.action), {"failures": 0, "since": now})
            seen.update(problem=exc.problem, last=now, failures=seen["failures"] + 1)
            if not watched or (exc.action not in WRITES and exc.problem not in OBJECT_STORE_PROBLEMS):
                self._ages.add((exc.name, exc.action))

    def written(self) -> None:
        """A write of the store (any table) succeeded: it answers. Not a read, which Lance may answer from
        what it holds in memory without asking the store."""
        self._answered = time.time()

    def succeeded(self, name: str, action: str) -> None:
        if (name, action) in self._seen:
            with self._lock:
                if (name, action) not in self._ages:
                    self._seen.pop((name, action), None)

    def object_store_down(self, within_s: float) -> dict | None:
        """The latest object-store failure (`OBJECT_STORE_PROBLEMS`: no answer, the keys refused, no
        bucket) seen in the last `within_s` seconds and followed neither by a success of the same read or
        write nor by any successful write (`written`: the store answers again), else None."""
        now = time.time()
        with self._lock:
            found = [{"what": name, "action": action, **seen} for (name, action), seen in self._seen.items()
                     if seen["problem"] in OBJECT_STORE_PROBLEMS and now - seen["last"] < within_s and seen["last"] > self._answered]
        return max(found, key=lambda p: p["last"]) if found else None

    def forget(self, name: str, action: str) -> None:
        """Drop what was noted of `name` and `action` (a step that failed was done again, and passed)."""
        with self._lock:
            self._seen.pop((name, action), None)
            self._ages.discard((name, action))

    def recent(self) -> list[dict]:
        """[{what, action, problem, failures, since, last}] (unix seconds), oldest first."""
        now = time.time()
        with self._lock:
            for key in [k for k, s in self._seen.items() if k in self._ages and now - s["last"] > self.read_problem_s]:
                del self._seen[key]
                self._ages.discard(key)
            return [{"what": name, "action": action, **seen} for (name, action), seen in sorted(self._seen.items(), key=lambda i: i[1]["since"])]
