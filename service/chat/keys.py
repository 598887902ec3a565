"""Chats sent with `Idempotency-Key`: a retry of a chat already answered gets that answer, not a second generation.

The openai client (and most HTTP clients) retries a request after a timeout or a lost connection; a chat whose
answer was generated and stored but lost on its way back was generated (and stored, a second interaction of the
user) again. A chat sent with `Idempotency-Key` is remembered per tenant, user and key (a chat naming no user: per
API key, `caller`) for `WINDOW_S`, in this process's memory, as Stripe's and the IETF httpapi Idempotency-Key draft's keys are: a copy
that comes while the first still runs is a 409 with Retry-After (`idempotency_key_in_use`), one that comes after
it was answered gets its answer (`Idempotent-Replayed: true`), and the same key with another body is the 422 of
`service.feedback.services.key_reused`. A chat that was not answered (an error, its client gone, the service
stopping) is forgotten: its retry generates. A user's DELETE and a tenant's removal forget what was remembered
of them (`ChatKeys.forget_user`, `forget_tenant`). Streams (their answer goes out as it is made) and chats sent with
`store: false` (nothing of them kept) are not remembered."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from cachetools import Cache, TTLCache
from litestar.exceptions import HTTPException

WINDOW_S = 24 * 3600  # how long an answered chat's key is remembered (Stripe's 24 hours)
PER_TENANT = 1000  # the most keys one tenant's chats hold at once (the oldest forgotten first)
PER_TENANT_CHARS = 16 << 20  # and the most characters of answers they hold (a key counts KEY_CHARS more): ~16-64 MB
KEY_CHARS = 1024
IN_USE_RETRY_AFTER = 1  # seconds: the 409's Retry-After while the first copy runs


@dataclass
class _Entry:
    digest: str  # the request's body, as `request_digest` draws it
    answer: object | None = None  # the first copy's answer (a ChatCompletion) once answered; None while it runs
    chars: int = KEY_CHARS  # what it holds, counted against PER_TENANT_CHARS
    # its user's DELETE came while it ran: its key stays in use until it ends, and nothing of it is kept then
    forgotten: bool = False


def _slot(user: str | None, caller: str, key: str) -> tuple[str, str, str]:
    """Where a chat's key is held in its tenant's cache: by its user, or by its caller when it names none."""
    return (user, "", key) if user else ("", caller, key)


def _chars(entry: _Entry) -> int:
    return entry.chars


def request_digest(body: msgspec.Struct) -> str:
    """The sha256 of a decoded chat request, re-encoded with every object's keys sorted (msgspec's `order="sorted"`): the
    same request sent with its keys in another order (its objects' too: `metadata`), other white space or escapes has
    the same digest."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


def in_use() -> HTTPException:
    problem = ("a chat sent with this key is still being answered: send it again in a moment for its answer "
               "(nothing of this copy was begun)")
    return HTTPException(status_code=409, detail=f"`Idempotency-Key`: {problem}", headers={"Retry-After": str(IN_USE_RETRY_AFTER)},
                         extra=[{"key": "Idempotency-Key", "message": problem, "code": "idempotency_key_in_use"}])


@dataclass
class ChatKeys:
    """The keys of chats answered or running, per tenant: (user, "", key), or ("", caller, key) for a chat naming no user,
    -> what the first copy sent and its answer. A chat naming no user is remembered per `caller` (the id of the API key
    that sent it, `service.auth.key_id`): in one key space for a tenant's anonymous chats,
    two clients of the tenant (each its own key) sending the same key with the same body would get each other's answers."""

    window_s: float = WINDOW_S
    per_tenant: int = PER_TENANT
    per_tenant_chars: int = PER_TENANT_CHARS
    _tenants: dict[str, TTLCache] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, tenant: str, user: str | None, key: str, digest: str, caller: str = "") -> object | None:
        """The first copy's answer when `key` was answered for this tenant and user with the same body; None when it
        is new (it is then recorded as running: `answered` or `failed` ends it). Raises the 409 of `in_use` while the
        first copy runs (one its user's DELETE forgot too, whatever the body: `forget_user`), and `key_reused`'s 422 for
        a body other than the first's."""
        from service.feedback.services import (
            key_reused,  # the 422 feedback and imports answer (it imports the Runtime, which holds this)
        )

        with self._lock:
            keys = self._tenants.get(tenant)
            if keys is None:
                # sized by characters held: at most `per_tenant` keys, and `per_tenant_chars` of their answers
                keys = self._tenants[tenant] = TTLCache(maxsize=self.per_tenant_chars, ttl=self.window_s, getsizeof=_chars)
            entry = keys.get(slot := _slot(user, caller, key))
            if entry is not None and entry.forgotten:
                raise in_use()
            if entry is None:
                while len(keys) >= self.per_tenant:
                    keys.popitem()  # the least recently used
                keys[slot] = _Entry(digest)
                return None
        if entry.digest != digest:
            raise key_reused("another chat of this user")
        if entry.answer is None:
            raise in_use()
        return entry.answer

    def answered(self, tenant: str, user: str | None, key: str, answer: object, chars: int, caller: str = "") -> None:
        """The running copy of `key` was answered: its retries get `answer` (holding `chars` characters of text). Nothing
        is kept when the key was forgotten meanwhile (the user's DELETE), nor an answer past `per_tenant_chars` alone."""
        with self._lock:
            keys = self._tenants.get(tenant)
            slot = _slot(user, caller, key)
            entry = None if keys is None else keys.get(slot)
            if entry is None or entry.answer is not None:
                return
            del keys[slot]
            if not entry.forgotten and KEY_CHARS + chars <= self.per_tenant_chars:
                entry.answer, entry.chars = answer, KEY_CHARS + chars
                keys[slot] = entry  # sized again: older keys of the tenant make room

    def failed(self, tenant: str, user: str | None, key: str, caller: str = "") -> None:
        """The running copy of `key` was not answered: the key is free, a retry generates."""
        with self._lock:
            keys = self._tenants.get(tenant)
            slot = _slot(user, caller, key)
            entry = None if keys is None else keys.get(slot)
            if entry is not None and entry.answer is None:
                del keys[slot]

    def forget_user(self, tenant: str, user: str) -> None:
        """The user's keys go (their DELETE): no answer of theirs is given again, and a chat of theirs running now
        keeps nothing; its key stays in use until it ends (a copy is the 409 meanwhile, then generated). Freed at
        once, its key would let a copy begin a second generation beside the first, and the first's
        answer (planned before the DELETE, nothing of it stored) be kept for the copy's retries."""
        self.forget_where(lambda t, u: (t, u) == (tenant, user))

    def forget_where(self, deleted: Callable[[str, str], bool]) -> None:
        """The keys of every user for whom `deleted(tenant, user_id)` holds go (another replica's DELETEs). `deleted` is
        asked once per user held, outside the lock: another replica's records name users by hash, so it hashes each
        (`pluralign.store.deletions.Forget.user`), and under the lock every chat sent with a key, any tenant's, would wait
        for all of them (16 tenants of 1,000 keys: ~0.2 s). A key a user of those gains meanwhile
        goes too."""
        with self._lock:  # copies of the caches' slots (their dicts' keys: TTLCache's own iteration reads a clock per key)
            slots = [(tenant, list(Cache.__iter__(keys))) for tenant, keys in self._tenants.items()]
        users = {(tenant, slot[0]) for tenant, held in slots for slot in held if slot[0]}
        gone = {pair for pair in users if deleted(*pair)}
        if not gone:
            return
        with self._lock:
            for tenant, keys in self._tenants.items():
                for held in [k for k in list(Cache.__iter__(keys)) if (tenant, k[0]) in gone]:
                    entry = keys.get(held)
                    if entry is not None and entry.answer is None:
                        entry.forgotten = True  # running: `answered` keeps nothing of it, `failed` frees its key
                    else:
                        keys.pop(held, None)

    def forget_tenant(self, tenant: str) -> None:
        with self._lock:
            self._tenants.pop(tenant, None)
