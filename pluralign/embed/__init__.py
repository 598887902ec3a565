"""Frozen encoders behind one interface, and an on-disk embedding cache."""

from pluralign.embed.base import Encoder
from pluralign.embed.cache import CachedEncoder, EmbeddingCache

__all__ = ["CachedEncoder", "EmbeddingCache", "Encoder"]
