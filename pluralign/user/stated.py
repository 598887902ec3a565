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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from pluralign.data.record import Persisted
from pluralign.user.features import FEATURE_NAMES

STATED_VERSION = 2  # of this record's format (1: `history` held every change)
Direction = Literal["more", "less"]
SIGN = {"more": 1, "less": -1}


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
        return StatedPreferences(version=version, preferences=preferences, history=history)

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
_DECODER = msgspec.msgpack.Decoder(StatedPreferences)
