"""User identity as data: a table from user id to K mixture logits, beside (never inside) the model.

Each row carries a version that increases on every change, so a writer can tell a stale row from a
fresh one. The population prior (the mean of the training users' centred logits) stands in for a
user the table does not know, and is the centre that few-shot fitting shrinks towards.

The file is msgspec JSON with a schema version and K; loading refuses any other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import torch

from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, other_schema, write_atomic
from pluralign.reward.inputs import as_numbers, first_bad_row

USER_WEIGHTS_SCHEMA = 1


class UserRow(Persisted):
    logits: list[float]
    version: int = 1


def _user_id(user_id) -> str:
    """`user_id` when it is a str; TypeError otherwise (the table's ids are str: JSON keys)."""
    if not isinstance(user_id, str):
        raise TypeError(f"`user_id` must be a str, got {type(user_id).__name__}")
    return user_id


class UserWeightsFile(Persisted):
    schema_version: int
    k: int
    prior: list[float]
    users: dict[str, UserRow]


class _Header(msgspec.Struct):
    """A user-weights file's schema version and K, read without its rows (`UserWeights.check_header`)."""

    schema_version: object = None
    k: object = None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(UserWeightsFile)
_HEADER = msgspec.json.Decoder(_Header)


class UserWeights:
    """user_id -> (K logits, version), plus the population prior. Logits come back as float32 (K,)."""

    def __init__(self, k: int, prior: torch.Tensor | None = None):
        """An empty table for K logits per user; raises ValueError when `k` is not a whole number >= 1."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a whole number >= 1 (the model's K), got {k!r}")
        self.k = k
        self._prior = torch.zeros(k) if prior is None else self._check(prior)
        self._rows: dict[str, UserRow] = {}

    def _check(self, logits: torch.Tensor, label: str = "`prior`") -> torch.Tensor:
        """`logits` (tensor or numpy, any real dtype, K values) as float32 (K,) on the CPU; ValueError
        naming them (`label`) when they are not K finite numbers."""
        try:
            logits = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits)
            logits = logits.detach().cpu().to(torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{label} is not {self.k} numbers") from None
        if logits.dim() == 2 and logits.shape[0] == 1:  # one row of K: one user's logits
            logits = logits[0]
        if logits.dim() != 1:  # a (U, K) table flattened would be read as one user's U * K logits
            raise ValueError(f"{label} has shape {tuple(logits.shape)}, expected ({self.k},): one user's K logits")
        if logits.shape[0] != self.k:
            raise ValueError(f"{label} has {logits.shape[0]} values, expected {self.k} logits (the table's K)")
        if not torch.isfinite(logits).all():
            raise ValueError(f"{label} is not finite (NaN or inf): {logits.tolist()}")
        return logits

    @classmethod
    def from_logits(cls, users: list[str], logits: torch.Tensor) -> UserWeights:
        """A table for trained users: row i of logits (U, K) (a tensor or numpy array of any real dtype)
        belongs to users[i]; prior = their centred mean. Raises ValueError when `logits` is not (U, K)
        finite numbers (the first row that is not is named with its user), `users` names a user twice
        or has another count than `logits` has rows, and TypeError (`set`) for a user id not a str."""
        logits = as_numbers("logits", logits, "(U, K) logits").detach().float().cpu()
        if logits.dim() != 2 or logits.shape[1] < 1:
            raise ValueError(f"`logits` has shape {tuple(logits.shape)}; one row of K logits per user is (U, K) = ({len(users)}, K)")
        if len(users) != len(logits):
            raise ValueError(f"`users` has {len(users)} ids, `logits` {len(logits)} rows: one row per user")
        twice = next((u for u, n in Counter(users).items() if n > 1), None)
        if twice is not None:
            raise ValueError(f"`users` names {twice!r} twice: each user has one row")
        row = first_bad_row(logits) if len(logits) else None
        if row is not None:
            raise ValueError(f"`logits` row {row} (user {users[row]!r}) is not finite (NaN or inf): {logits[row].tolist()}")
        centred = logits - logits.mean(-1, keepdim=True)
        table = cls(logits.shape[1], centred.mean(0) if len(users) else None)
        for user, row in zip(users, logits, strict=True):
            table.set(user, row)
        return table

    def prior(self) -> torch.Tensor:
        """The population prior logits (K,)."""
        return self._prior.clone()

    def set_prior(self, logits: torch.Tensor) -> None:
        self._prior = self._check(logits)

    def get(self, user_id: str) -> torch.Tensor | None:
        """The user's logits (K,), or None for an unknown user. TypeError when `user_id` is not a str (as
        `set`, which stores only str ids: `get(5)` said "unknown" of a user set as "5")."""
        row = self._rows.get(_user_id(user_id))
        return torch.tensor(row.logits, dtype=torch.float32) if row is not None else None

    def lookup(self, user_id: str) -> tuple[torch.Tensor, bool]:
        """(logits, is_prior): the user's logits, or the population prior when the user is unknown.
        TypeError when `user_id` is not a str (`lookup(5)` gave the prior for a user set as "5")."""
        logits = self.get(user_id)
        return (self.prior(), True) if logits is None else (logits, False)

    def version(self, user_id: str) -> int:
        """The row's version; 0 for an unknown user. TypeError when `user_id` is not a str."""
        row = self._rows.get(_user_id(user_id))
        return row.version if row is not None else 0

    def set(self, user_id: str, logits: torch.Tensor) -> int:
        """Store a user's logits (K,) (tensor or numpy, any real dtype); returns the row's new version.
        Raises ValueError naming the user when they are not K finite numbers ((K,), or one row (1, K)),
        TypeError when `user_id` is not a str (saved as JSON, another type would come back as text)."""
        version = self.version(user_id) + 1
        self._rows[user_id] = UserRow(logits=self._check(logits, f"`logits` of {user_id!r}").tolist(), version=version)
        return version

    def remove(self, user_id: str) -> bool:
        """Drop the user's row; whether there was one. TypeError when `user_id` is not a str."""
        return self._rows.pop(_user_id(user_id), None) is not None

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        for user_id, row in self._rows.items():
            yield user_id, torch.tensor(row.logits, dtype=torch.float32)

    def users(self) -> list[str]:
        return list(self._rows)

    def stack(self, users: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for many users (U, K), the prior where unknown, and a mask (U,) of who fell back.
        TypeError when `users` is one string (not a list of user ids: each letter would be a user) or
        holds an id that is not a str (`get`)."""
        if isinstance(users, str | bytes):
            raise TypeError(f"`users` must be a list of user ids, not one {type(users).__name__}: stack([{users!r}])")
        found = [self.lookup(u) for u in users]
        if not found:
            return torch.zeros(0, self.k), torch.zeros(0, dtype=torch.bool)
        return torch.stack([f[0] for f in found]), torch.tensor([f[1] for f in found])

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, user_id: str) -> bool:
        """Whether the user has a row. TypeError when `user_id` is not a str, as `get` (`5 in weights` said
        False of a user set as "5", beside `lookup(5)`'s TypeError)."""
        return _user_id(user_id) in self._rows

    def save(self, path: str | Path) -> None:
        """Write the table whole (temp file and rename): a crash leaves the old file or the new one."""
        file = UserWeightsFile(schema_version=USER_WEIGHTS_SCHEMA, k=self.k, prior=self._prior.tolist(), users=self._rows)
        write_atomic(path, _ENCODER.encode(file))

    @staticmethod
    def check_header(path: str | Path, k: int | None = None) -> None:
        """Check the table's schema version (and its K against `k`) without building its rows: a start reads a
        100,000-user file's header in ms. Raises FileNotFoundError, and ValueError naming the file as `load` does for
        a file that is not JSON, of another schema version or of another K."""
        try:
            header = _HEADER.decode(Path(path).read_bytes())
        except DECODE_ERRORS as exc:
            raise ValueError(f"{path}: not a user-weights file: {exc}") from None
        if header.schema_version != USER_WEIGHTS_SCHEMA:
            raise ValueError(f"{path}: {other_schema('user-weights', header.schema_version, USER_WEIGHTS_SCHEMA)}")
        if k is not None and header.k != k:
            raise ValueError(f"{path}: user weights have K={header.k}, the model has K={k}")

    @classmethod
    def load(cls, path: str | Path, k: int | None = None) -> UserWeights:
        """Read a table; ValueError naming the file for another schema version, another K when `k` is
        given, a K or prior that does not fit, or a user's logits of another length than K or not finite in float32."""
        try:
            file = _DECODER.decode(Path(path).read_bytes())
        except DECODE_ERRORS as exc:  # not JSON, or not this schema's fields
            raise ValueError(f"{path}: not a user-weights file: {exc}") from None
        if file.schema_version != USER_WEIGHTS_SCHEMA:
            raise ValueError(f"{path}: {other_schema('user-weights', file.schema_version, USER_WEIGHTS_SCHEMA)}")
        if k is not None and file.k != k:
            raise ValueError(f"{path}: user weights have K={file.k}, the model has K={k}")
        try:
            table = cls(file.k, torch.tensor(file.prior, dtype=torch.float32))
        except ValueError as exc:  # K < 1, or a prior of another length than K
            raise ValueError(f"{path}: its {str(exc).replace('`prior`', 'prior')}") from None
        for user_id, row in file.users.items():
            if len(row.logits) != file.k:
                raise ValueError(f"{path}: user {user_id!r} has {len(row.logits)} logits, expected K={file.k}")
            table._rows[user_id] = row
        if file.users:  # read as float32, as `get` reads them: 1e300 is inf there (one array: a 100,000-user table is ms)
            with np.errstate(over="ignore"):
                finite = np.isfinite(np.array([row.logits for row in file.users.values()], dtype=np.float32)).all(axis=1)
            if not finite.all():
                user_id = list(file.users)[int(np.flatnonzero(~finite)[0])]
                raise ValueError(f"{path}: user {user_id!r} has logits that are not finite float32 numbers: {file.users[user_id].logits}")
        return table
