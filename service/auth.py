"""API keys: stored as sha256 hashes in <data_dir>/api_keys.json, each tied to one tenant.

A tenant key reaches only its tenant's users (user ids are namespaced by tenant in every table);
an admin key reaches only /admin routes. Requests send `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import secrets
import threading
import time
from pathlib import Path

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from pluralign import turns
from pluralign.data.record import Base
from pluralign.files import DECODE_ERRORS, write_atomic

KEY_PREFIX = "pk-"
METRICS_PATH = "^/metrics$"
PUBLIC_PATHS = ["^/health$", METRICS_PATH, "^/schema", "^/admin/login$", "^/admin/logout$"]  # regexes of paths that need no key
SESSION_COOKIE = "pluralign_admin"  # the dashboard's session (service/admin/session.py)
SAFE_METHODS = ("GET", "HEAD")


class KeyFileError(OSError):
    """The key file cannot be used (damaged): the server's problem, not the client's (a 500 whose
    detail is logged, as for any exception not raised as `bad_request`)."""


class ApiKey(Base):
    sha256: str
    tenant: str
    admin: bool = False
    name: str = ""
    created_at: float = 0.0


class Principal(Base, frozen=True):
    """Who is calling: a tenant (tenant keys) or an administrator (admin keys)."""

    tenant: str
    admin: bool = False


# who the request being handled is from, for the request threads' turns (`service.scheduler.TenantThreads`) and
# the text encoder's (`pluralign.turns`: the library's variable, so one tenant's texts wait their turn): set once
# its key is known; "" before that and for requests without a key (the public routes: one lane of the request threads'
# turns, shared by them all; in the encoder's, each thread a lane of its own, `pluralign.turns.caller`)
CALLER = turns.CALLER


def public_paths(metrics_admin_only: bool = False) -> list[str]:
    """The regexes of the paths that need no key: PUBLIC_PATHS, without /metrics when it needs an admin key (the setting
    `metrics_admin_only`: the handler then refuses a tenant key, `service.system.controllers.metrics`)."""
    return [p for p in PUBLIC_PATHS if not (metrics_admin_only and p == METRICS_PATH)]


def caller_lane() -> str:
    """The caller of the request being handled: `tenant:<name>` for a tenant key, `admin` for any admin
    key or session (one lane: the operators), "" before the key is known or without one."""
    return CALLER.get()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_KEY_LIKE = re.compile(re.escape(KEY_PREFIX) + r"([A-Za-z0-9_-]{0,4})[A-Za-z0-9_-]*")  # a key's characters (token_urlsafe)


def _shown_argument(text: str) -> str:
    """`text` (what `KeyRing.revoke` was given) as its errors show it: quoted, each key in it, wherever it stands (` pk-...`
    with a space copied, `Bearer pk-...` from a header), cut to its first 4 characters after `pk-`."""
    hidden = _KEY_LIKE.sub(lambda m: f"{KEY_PREFIX}{m[1]}...", text)
    return f"{hidden!r} (a key, not shown whole)" if hidden != text else repr(text)


_AT = re.compile(r"(?P<problem>.*) - at `\$\[(?P<index>\d+)\](?:\.(?P<field>\w+))?`")
_JSON_KINDS = {dict: "an object", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


def read_key_file(path: Path) -> list[ApiKey]:
    """The keys in the key file at `path`. Raises KeyFileError naming the file and what is wrong:
    "<path>: not a list of API keys (" then: it is empty, not JSON, a JSON object (or other value),
    or which key (from 1) and field is not a key's."""
    raw = path.read_bytes()

    def damaged(problem: str) -> KeyFileError:
        return KeyFileError(f"{path}: not a list of API keys ({problem})")

    if not raw.strip():
        raise damaged("it is empty; a key file with no keys holds `[]`")
    try:
        value = msgspec.json.decode(raw)
    except DECODE_ERRORS as exc:
        raise damaged(f"it is not JSON: {exc}") from None
    if not isinstance(value, list):
        raise damaged(f"it holds {_JSON_KINDS.get(type(value), 'another value')}, not a JSON list")
    try:
        return msgspec.convert(value, list[ApiKey])
    except msgspec.ValidationError as exc:
        found = _AT.fullmatch(str(exc))
        if found is None:
            raise damaged(str(exc)) from None
        field = f", field `{found['field']}`" if found["field"] else ""
        raise damaged(f"key {int(found['index']) + 1}{field}: {found['problem'][:1].lower()}{found['problem'][1:]}") from None


class KeyRing:
    """The hashed keys of one data folder; the plain key is shown once, when issued.

    Several processes share the file (the service, `pluralign keys`): every change is a
    read-modify-write under an exclusive lock on `<file>.lock`, written atomically, and every
    lookup first checks (one stat) whether the file changed, so a key revoked by the CLI stops
    working at the running service's very next request."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.keys: dict[str, ApiKey] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) of the file loaded
        self.reload()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextlib.contextmanager
    def _exclusive(self):
        """The file's lock across processes (and this process's threads) for a read-modify-write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> None:
        """The file's keys. A damaged file is never written over: it is a KeyFileError naming it (the
        CLI prints it; a request meanwhile is a 500 whose message, with the path, stays in the log)."""
        stamp = self._stamp()
        keys = read_key_file(self.path) if stamp else []
        self.keys, self._seen = {k.sha256: k for k in keys}, stamp

    def _write(self) -> None:
        write_atomic(self.path, msgspec.json.encode(list(self.keys.values())))
        self._seen = self._stamp()

    def issue(self, tenant: str, admin: bool = False, name: str = "") -> str:
        """A new key reaching `tenant` (printed once; only its hash is stored). Raises ValueError
        naming the tenant when it is not a tenant name (`service.ids.tenant_problem`): tenant names
        name folders. Keys issued before that rule keep working."""
        from pluralign.data.text import shown
        from service.ids import tenant_problem

        problem = tenant_problem(tenant)
        if problem:
            raise ValueError(f"tenant {shown(tenant)}: {problem}")
        with self._exclusive():
            return self._add(tenant, admin, name)

    def issue_first(self, tenant: str, name: str = "") -> str | None:
        """A key reaching `tenant` when the file holds no key (a first start's development key), else None: the look
        and the write are one turn under `<file>.lock`, so of replicas starting together on one empty shared key file
        one issues it (a look before the lock would find it empty in each, and each would issue and print one)."""
        with self._exclusive():
            return None if self.keys else self._add(tenant, False, name)

    def _add(self, tenant: str, admin: bool, name: str) -> str:
        """Issue a key (under `_exclusive`)."""
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        entry = ApiKey(sha256=hash_key(key), tenant=tenant, admin=admin, name=name, created_at=time.time())
        self.keys[entry.sha256] = entry
        self._write()
        return key

    def revoke(self, key_id: str) -> list[ApiKey]:
        """Remove the keys whose id (`key_id(entry)`, a prefix of the hash of at least 8 hex digits)
        or name is `key_id`; returns them. Raises ValueError when none matches, and for a blank
        `key_id`: keys issued without a name have the name "", so an empty argument (an unset
        variable in a script) would revoke every one of them, in every tenant. Raises ValueError
        listing their ids, and revokes none, when `key_id` matches more than one key (a name two
        keys share, as a rotation that names the new key as the old gives, or a name that is also
        another key's id): revoking all would revoke the key a client just moved to.

        `key_id` may also be the key itself (`pk-...`, as a leaked key is known: its holder has no id), matched by its
        hash. An argument that looks like a key is never repeated whole in an error (a terminal's scrollback, a CI log)."""
        if not key_id.strip():
            raise ValueError("no key id or name given: an id is 8+ hex digits of the key's hash (`pluralign keys list`), a name is the one given at create")
        given = _shown_argument(key_id)
        bare = key_id.strip()  # a key holds no space: one pasted with a space or a newline is the key
        with self._exclusive():
            digest = hash_key(bare) if bare.isascii() else None  # argv's bytes not UTF-8 (surrogates) are no key
            gone = [k for k in self.keys.values()
                    if k.name == key_id or k.sha256 == digest or (len(key_id) >= 8 and k.sha256.startswith(key_id))]
            if not gone:
                raise ValueError(f"no key with id or name {given}, nor that is this key")
            if len(gone) > 1:
                # k.sha256[:12]: module-level key_id(k), which the argument shadows
                ids = ", ".join(f"{k.sha256[:12]} (tenant {k.tenant}, name {k.name!r})" for k in sorted(gone, key=lambda k: k.created_at))
                raise ValueError(f"{given} names {len(gone)} keys: {ids}; none revoked: revoke one by its id (`pluralign keys list`)")
            for entry in gone:
                del self.keys[entry.sha256]
            self._write()
        return gone

    def revoke_tenant(self, tenant: str) -> list[ApiKey]:
        """Remove every key of `tenant` that is no admin key (an admin key's tenant only labels it: it is the
        operator's); returns them, none when it has none. For a tenant's removal (`service.tenants`). Raises OSError
        when the file cannot be rewritten: then every key stays, here as in the file."""
        with self._exclusive():
            gone = [k for k in self.keys.values() if k.tenant == tenant and not k.admin]
            if gone:
                held, self.keys = self.keys, {h: k for h, k in self.keys.items() if k not in gone}
                try:
                    self._write()
                except OSError:
                    self.keys = held
                    raise
        return gone

    def reload(self) -> None:
        with self._lock:
            self._load()

    def lookup(self, key: str) -> ApiKey | None:
        """The key's entry, as the file says now (a key issued or revoked by another process since
        the last request included)."""
        if self._stamp() != self._seen:
            self.reload()
        return self.keys.get(hash_key(key))

    def is_admin(self, sha256: str) -> bool:
        """Whether the key of hash `sha256` is an admin key, as the file says now (revoked: False)."""
        if self._stamp() != self._seen:
            self.reload()
        entry = self.keys.get(sha256)
        return entry is not None and entry.admin

    def list(self) -> list[ApiKey]:
        if self._stamp() != self._seen:
            self.reload()
        return sorted(self.keys.values(), key=lambda k: k.created_at)

    def __len__(self) -> int:
        return len(self.keys)


def key_id(entry: ApiKey) -> str:
    """A key's public id: the first 12 hex digits of its hash (the key itself is never stored)."""
    return entry.sha256[:12]


# every 401 says how to authenticate (RFC 9110 15.5.2), as RFC 6750 3 words it for bearer tokens
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pluralign"'}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer realm="pluralign", error="invalid_token"'}


# HTTP authentication schemes (IANA's registry and common custom ones): only these are named back. Any
# other first word of the header may be the key itself (`Authorization: <key> extra words`), and a
# secret never appears in an answer or a log.
KNOWN_SCHEMES = {s.lower(): s for s in ("Basic", "Digest", "DPoP", "GNAP", "HOBA", "Mutual", "Negotiate", "NTLM", "OAuth",
                                        "PrivateToken", "SCRAM-SHA-1", "SCRAM-SHA-256", "vapid", "AWS4-HMAC-SHA256",
                                        "Token", "ApiKey", "Api-Key", "Key", "JWT")}


def _shown_scheme(scheme: str) -> str:
    """What a 401 says of a header's first word: `got `Basic`` for a known scheme, else nothing of it."""
    known = KNOWN_SCHEMES.get(scheme.lower())
    if known is not None:
        return f"got `{known}`"
    return "got a first word that is no authentication scheme (not shown: it may be the key; send `Bearer <API key>`)"


# RFC 9110 11.4: `credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`, the scheme case-insensitive. The
# header split at its first space or tab: (scheme, that character, the rest)
_CREDENTIALS = re.compile(r"(?P<scheme>[^ \t]*)(?P<separator>[ \t]?)(?P<rest>.*)", re.S)


def split_credentials(header: str) -> tuple[str, str, str]:
    """(scheme, the character after it: " ", "\\t" or "", the rest) of an `Authorization` value."""
    found = _CREDENTIALS.fullmatch(header)
    return found["scheme"], found["separator"], found["rest"]


def header_refusal(header: str) -> str | None:
    """Why an `Authorization` value sent is no `Bearer <key>`, saying what it holds (never the key: a first word that
    is no known scheme may be it); None when it is one. A tab after the scheme is no separator (RFC 9110: one or more
    spaces)."""
    scheme, separator, rest = split_credentials(header)
    bearer, send = scheme.lower() == "bearer", "`Authorization: Bearer <API key>`"
    if not rest.strip():  # a bare key: never echoed (it is the secret)
        return f"`{scheme}` without a key: send {send}" if bearer else f"a key without its scheme: send {send}"
    if not bearer:  # a key sent as `Basic ...` is not missing
        return f"the scheme must be `Bearer` (an API key), {_shown_scheme(scheme)}"
    if separator == "\t":
        return f"a tab between `{scheme}` and the key: separate them with a space, {send}"
    return None


def bearer_key(header: str) -> str | None:
    """The API key of an `Authorization` value that is `Bearer <key>` (`header_refusal` None), else None: the one
    reading of a key, for authentication and the rate limiter alike."""
    if not header.strip() or header_refusal(header) is not None:
        return None
    return split_credentials(header)[2].strip()


def session_tokens(connection: ASGIConnection) -> list[str]:
    """Every `pluralign_admin` value the request carries, in the order sent, over all its `Cookie` lines: a browser
    holding two such cookies of different paths sends both, the more specific path's first (RFC 6265, 5.4), and
    HTTP/2 may split cookies over several lines (RFC 9113, 8.2.3). Were only the last value of the
    first line read, a live session sent beside a stale cookie would be a 401 that signing in again does not mend."""
    tokens = []
    for line in connection.headers.getall("cookie", []):
        for pair in line.split(";"):
            name, eq, value = pair.partition("=")
            if eq and name.strip() == SESSION_COOKIE and value.strip():
                tokens.append(value.strip())
    return tokens


# headers other APIs' clients send their key in, which this service does not read: Azure OpenAI's (`openai.AzureOpenAI`,
# litellm's `azure/` models) and Anthropic's (`x-api-key`)
KEY_HEADERS = {"api-key": "Azure OpenAI's", "x-api-key": "Anthropic's"}


def key_header_hint(connection: ASGIConnection) -> str:
    """What a 401 for a missing `Authorization` adds when the request carries its key in a header of another API
    (KEY_HEADERS): that the header is not read, and to send the key as `Authorization: Bearer` (never the key); "" for
    none, so a request of the Azure OpenAI client does not read as one sent with no key at all.

    The key is not taken from such a header: this service is OpenAI-compatible (OpenAI, vLLM and their clients send
    `Authorization: Bearer`), and an Azure client's requests name paths of Azure's (`/openai/deployments/{model}/...`,
    `?api-version=`) that it does not serve, so the key alone would not make that client work; a second place for keys
    would also be one more for the rate limiter, the logs and CORS to know of."""
    sent = next((name for name in KEY_HEADERS if connection.headers.get(name, "").strip()), None)
    if sent is None:
        return ""
    return (f"; an `{sent}` header ({KEY_HEADERS[sent]} way to send a key) is not read: send the same key as "
            "`Authorization: Bearer <API key>` (the openai library's `OpenAI(base_url=..., api_key=...)` does, not `AzureOpenAI`)")


class BearerAuth(AbstractAuthenticationMiddleware):
    """Resolves `Authorization: Bearer KEY` to a Principal (401 with `WWW-Authenticate` when missing,
    of another scheme, or unknown).

    Without the header, a GET of an /admin page may present the dashboard's session cookie instead."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        sent = connection.headers.getall("authorization", [])
        if len(sent) > 1:  # not a list header (RFC 9110, 11.6.2): which one counts would be each reader's guess
            from service.errors import bad_request

            raise bad_request("Authorization", f"{len(sent)} `Authorization` headers: send one, `Authorization: Bearer <API key>`")
        header = sent[0] if sent else ""
        tokens = session_tokens(connection) if not header and connection.scope["path"].startswith("/admin/") else []
        if tokens:
            sessions = connection.app.state.get("admin_sessions")
            if connection.scope["method"] not in SAFE_METHODS:
                raise PermissionDeniedException("an admin session only reads pages; changes need `Authorization: Bearer <admin key>`")
            found = (sessions.lookup(token) for token in tokens) if sessions is not None else iter(())
            principal = next((p for p in found if p is not None), None)
            if principal is None:
                raise NotAuthorizedException("the admin session expired or was closed: sign in again at /admin/login", headers=CHALLENGE)
            CALLER.set("admin")
            return AuthenticationResult(user=principal, auth=None)
        if not header.strip():
            raise NotAuthorizedException(f"missing `Authorization: Bearer <API key>` header{key_header_hint(connection)}",
                                         headers=CHALLENGE)
        refusal = header_refusal(header)
        if refusal is not None:
            raise NotAuthorizedException(f"`Authorization`: {refusal}", headers=CHALLENGE)
        keys: KeyRing = connection.app.state.runtime.keys
        entry = keys.lookup(bearer_key(header))
        if entry is None:
            raise NotAuthorizedException("unknown API key", headers=INVALID_TOKEN)
        CALLER.set("admin" if entry.admin else f"tenant:{entry.tenant}")  # this request's task and what it runs in threads
        # when it arrived as the key's holder (`key_checked_at`): its body and a thread for its route may come later, after
        # a removal of its tenant began on another replica (the calibration pool's PUT keeps nothing then)
        connection.state.key_checked_at = time.time()
        return AuthenticationResult(user=Principal(tenant=entry.tenant, admin=entry.admin), auth=entry)


def _preflight(connection: ASGIConnection) -> bool:
    """OPTIONS (the allowed methods, a CORS preflight) carries no key: browsers send none. The
    authentication middleware lets it through, so there is no user to check and nothing to guard."""
    return connection.scope.get("method") == "OPTIONS"


# Guards are coroutines: Litestar runs a plain-function guard in a worker thread, one hand-off per request.
async def tenant_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if _preflight(connection):
        return
    if connection.user.admin:
        raise PermissionDeniedException("admin keys cannot use tenant routes; use a tenant key")


async def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if _preflight(connection):
        return
    if not connection.user.admin:
        raise PermissionDeniedException("this route needs an admin key")
