"""LanceDB tables of the service: preferences (with embeddings), interactions and users.

The names below load their modules at first use (PEP 562): `pluralign.store.failures`, which the
service's error handling and `pluralign serve-embeddings` / `pluralign keys` import, then costs no
import of lancedb (about 2.5 s of every process that never opens a table).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pluralign.store.schemas import PREFERENCE_KINDS, SCHEMA_VERSION
    from pluralign.store.tables import Interaction, Store, StoredPreference, StoreError, UserRecord

_HOMES = {
    "PREFERENCE_KINDS": "schemas", "SCHEMA_VERSION": "schemas",
    "Interaction": "tables", "Store": "tables", "StoredPreference": "tables", "StoreError": "tables", "UserRecord": "tables",
}

__all__ = ["PREFERENCE_KINDS", "SCHEMA_VERSION", "Interaction", "Store", "StoreError", "StoredPreference", "UserRecord"]


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:  # a submodule not imported yet, or a name that is not here: the import system decides
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
