"""Preferences a user states ("prefer short answers"), kept as versioned data beside the user model.

A stated preference names one of the user model's named features (`pluralign.user.features`) and a
direction, `more` or `less`. It enters the user model as a strong prior on that feature's weight
(mean +-`ResidualPrior.stated_weight`, sd `stated_scale`) instead of the wide default, so it changes
the next ranking at once and later feedback can still move it: enough contrary feedback outweighs
it (tests/service/test_elicitation.py).

Every change set that changes something is one new version (1, 2, ... dense), recorded with its
time. The user's row holds the current preferences and only the latest version's changes (format
2: bounded, however often a user changes their mind); every version's changes are rows of the
store's `stated_changes` table, paged by `history_page` and exported with the user. Format 1 rows
(an older release) held every change in the row; they are read as they are and moved into the
table on the user's next change.

A record's entity tag (`tag`, the service's `ETag`) is `<epoch>.<version>`: versions start at 1 again
after the user's DELETE, so the version alone would name two records over time, which RFC 9110 (8.8.3)
forbids (a client holding the first's tag would be told the second was not modified). The `epoch` is
drawn at random when a record is created (its first version) and kept by every later version, so a tag
is never given again for the same user id, whichever replica or process draws it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from pluralign.data.record import Persisted
from pluralign.user.features import FEATURE_NAMES

STATED_VERSION = 2  # of this record's format (1: `history` held every change)
Direction = Literal["more", "less"]
SIGN = {"more": 1, "less": -1}
_EPOCH = re.compile(r"[0-9a-z]{1,64}")  # an epoch as `new_epoch` draws it: fit for an entity tag as it is


def new_epoch() -> str:
    """A new record's epoch: 64 random bits in hex (16 characters), so no two records of a user share one."""
    return secrets.token_hex(8)


class StatedChange(Persisted, kw_only=True):
    """One change: `feature` set to `direction`, or cleared (direction null), at `version`."""

    version: int
    at: float  # unix seconds
    feature: str
    direction: Direction | None


class StatedPreferences(Persisted, kw_only=True):
    """A user's stated preferences now (`preferences`, after `version` change sets) and the changes
    of the latest version (`history`; format 1: of every version)."""

    format: int = STATED_VERSION
    version: int = 0  # bumped by each change set that changes something; 0 = never stated anything
    preferences: dict[str, Direction] = {}
    history: list[StatedChange] = []
    # drawn when the record is created (`new_epoch`) and kept by its later versions: with `version`, its entity tag
    # (`tag`); "" at version 0, and in a record an earlier release wrote (before entity tags)
    epoch: str = ""

    def tag(self) -> str:
        """The record's entity tag, without its quotes: `<epoch>.<version>` ("5f0c9e1a2b3c4d5e.3"), never the same for
        two records of a user (versions restart after a DELETE, epochs do not recur), and "0" at version 0 (nothing
        stated: every such record reads the same). A record an earlier release wrote has no epoch: its tag's epoch is
        a digest of the latest version's changes (their times included), so it differs from that release's `"3"` and
        from the record's before a DELETE (RFC 9110, 8.8.3)."""
        if self.version == 0:
            return "0"
        if _EPOCH.fullmatch(self.epoch):
            return f"{self.epoch}.{self.version}"
        latest = [c for c in self.history if c.version == self.version]
        return f"{hashlib.sha256(_CHANGES.encode(latest)).hexdigest()[:16]}.{self.version}"

    def signs(self) -> dict[str, int]:
        """feature -> +1 (more) or -1 (less), the form the user model's prior takes."""
        return {name: SIGN[d] for name, d in sorted(self.preferences.items())}

    def changed(self, changes: Mapping[str, Direction | None], at: float) -> StatedPreferences:
        """The record with `changes` applied (a direction sets, None clears) as one new version whose
        `history` is the changes that changed something; `self` itself when none does (clearing what
        is not set, setting what is already so). Raises ValueError naming an unknown feature or a
        direction other than "more", "less" or None."""
        unknown = [name for name in changes if name not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; known: {', '.join(FEATURE_NAMES)}")
        for name, direction in changes.items():
            if direction is not None and direction not in SIGN:
                raise ValueError(f"`{name}`: direction must be 'more', 'less' or None, got {direction!r}")
        effective = {name: d for name, d in changes.items() if self.preferences.get(name) != d}
        if not effective:
            return self
        version = self.version + 1
        preferences = dict(self.preferences)
        for name, direction in effective.items():
            if direction is None:
                preferences.pop(name)
            else:
                preferences[name] = direction
        history = [StatedChange(version=version, at=at, feature=name, direction=d) for name, d in effective.items()]
        # a record's first version draws its epoch (after a DELETE too); an earlier release's record gets one now
        epoch = self.epoch if self.version and _EPOCH.fullmatch(self.epoch) else new_epoch()
        return StatedPreferences(version=version, preferences=preferences, history=history, epoch=epoch)

    def latest(self) -> StatedPreferences:
        """The same record with only the latest version's changes in `history` (a format 1 record
        read from an older row holds all of them)."""
        return msgspec.structs.replace(self, format=STATED_VERSION, history=[c for c in self.history if c.version == self.version])

    def encode(self) -> bytes:
        return _ENCODER.encode(self)

    @staticmethod
    def decode(raw: bytes | None) -> StatedPreferences:
        """The record stored in the users table (None: nothing stated). Raises msgspec errors on a malformed one."""
        return StatedPreferences() if raw is None else _DECODER.decode(raw)


def merged_history(stored: Sequence[StatedChange], record: StatedPreferences) -> list[StatedChange]:
    """Every change in `stored` (rows of the changes table) and those the user's row holds of
    versions the table lacks (the latest version when the service stopped between writing the row
    and the table, or a format 1 row's whole history), in version order."""
    have = {c.version for c in stored}
    return sorted([*stored, *(c for c in record.history if c.version not in have)], key=lambda c: c.version)


_ENCODER = msgspec.msgpack.Encoder()
_CHANGES = msgspec.msgpack.Encoder(order="deterministic")
_DECODER = msgspec.msgpack.Decoder(StatedPreferences)
