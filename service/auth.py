"""API keys: stored as sha256 hashes in <data_dir>/api_keys.json, each tied to one tenant.

A tenant key reaches only its tenant's users (user ids are namespaced by tenant in every table);
an admin key reaches only /admin routes. Requests send `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from pathlib import Path

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from pluralign.data.record import Base
from pluralign.files import write_atomic

KEY_PREFIX = "pk-"
PUBLIC_PATHS = ["^/health$", "^/metrics$", "^/schema"]  # regexes of paths that need no key


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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The hashed keys of one data folder; the plain key is shown once, when issued."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.keys: dict[str, ApiKey] = {}
        if self.path.exists():
            for item in msgspec.json.decode(self.path.read_bytes(), type=list[ApiKey]):
                self.keys[item.sha256] = item

    def issue(self, tenant: str, admin: bool = False, name: str = "") -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        entry = ApiKey(sha256=hash_key(key), tenant=tenant, admin=admin, name=name, created_at=time.time())
        with self._lock:
            self.keys[entry.sha256] = entry
            write_atomic(self.path, msgspec.json.encode(list(self.keys.values())))
        return key

    def reload(self) -> None:
        if self.path.exists():
            with self._lock:
                self.keys = {k.sha256: k for k in msgspec.json.decode(self.path.read_bytes(), type=list[ApiKey])}

    def lookup(self, key: str) -> ApiKey | None:
        found = self.keys.get(hash_key(key))
        if found is None:  # a key issued by another process (`pluralign serve` or a CLI) since start
            self.reload()
            found = self.keys.get(hash_key(key))
        return found

    def __len__(self) -> int:
        return len(self.keys)


class BearerAuth(AbstractAuthenticationMiddleware):
    """Resolves `Authorization: Bearer KEY` to a Principal (401 when missing or unknown)."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise NotAuthorizedException("missing `Authorization: Bearer <API key>` header")
        keys: KeyRing = connection.app.state.runtime.keys
        entry = keys.lookup(key.strip())
        if entry is None:
            raise NotAuthorizedException("unknown API key")
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
