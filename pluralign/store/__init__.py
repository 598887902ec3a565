"""LanceDB tables of the service: preferences (with embeddings), interactions and users."""

from pluralign.store.schemas import PREFERENCE_KINDS, SCHEMA_VERSION
from pluralign.store.tables import Interaction, Store, StoredPreference, StoreError, UserRecord

__all__ = ["PREFERENCE_KINDS", "SCHEMA_VERSION", "Interaction", "Store", "StoreError", "StoredPreference", "UserRecord"]
