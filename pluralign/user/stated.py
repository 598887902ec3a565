"""Preferences a user states ("prefer short answers"), kept as versioned data beside the user model.

A stated preference names one of the user model's named features (`pluralign.user.features`) and a
direction, `more` or `less`. It enters the user model as a strong prior on that feature's weight
(mean +-`ResidualPrior.stated_weight`, sd `stated_scale`) instead of the wide default, so it changes
the next ranking at once and later feedback can still move it: enough contrary comparisons outweigh
it (tests/unit/test_stated.py). Every change is recorded with a version number and a time, and the
whole record is stored in the users table (msgpack) and exported with the user (JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

from pluralign.data.record import Base
from pluralign.user.features import FEATURE_NAMES

STATED_VERSION = 1  # of this record's format
Direction = Literal["more", "less"]
SIGN = {"more": 1, "less": -1}


class StatedChange(Base, kw_only=True):
    """One change: `feature` set to `direction`, or cleared (direction null), at `version`."""

    version: int
    at: float  # unix seconds
    feature: str
    direction: Direction | None


class StatedPreferences(Base, kw_only=True):
    """A user's stated preferences now (`preferences`) and every change that led there (`history`)."""

    format: int = STATED_VERSION
    version: int = 0  # bumped by each change set; 0 = never stated anything
    preferences: dict[str, Direction] = {}
    history: list[StatedChange] = []

    def signs(self) -> dict[str, int]:
        """feature -> +1 (more) or -1 (less), the form the user model's prior takes."""
        return {name: SIGN[d] for name, d in sorted(self.preferences.items())}

    def changed(self, changes: Mapping[str, Direction | None], at: float) -> StatedPreferences:
        """A new record with `changes` applied (a direction sets, None clears) as one new version.
        Raises ValueError naming an unknown feature."""
        unknown = [name for name in changes if name not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; known: {', '.join(FEATURE_NAMES)}")
        version = self.version + 1
        preferences = dict(self.preferences)
        history = list(self.history)
        for name, direction in changes.items():
            if direction is None:
                preferences.pop(name, None)
            else:
                preferences[name] = direction
            history.append(StatedChange(version=version, at=at, feature=name, direction=direction))
        return StatedPreferences(version=version, preferences=preferences, history=history)

    def encode(self) -> bytes:
        return _ENCODER.encode(self)

    @staticmethod
    def decode(raw: bytes | None) -> StatedPreferences:
        """The record stored in the users table (None: nothing stated). Raises msgspec errors on a malformed one."""
        return StatedPreferences() if raw is None else _DECODER.decode(raw)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(StatedPreferences)
