"""Preference records, importers and splits."""

from pluralign.data.record import Preference, PreferenceError

__all__ = ["Preference", "PreferenceError"]
