"""The encoders by name, and what each name's vectors are, known without loading anything.

An encoder's identity (its `encoder_id`, width and the word pieces it reads of a text) is what the
embedding cache keys vectors by and what artifacts record, so a command can look up cached vectors
and check an artifact before, or without, loading the weights (MiniLM: 4-6 s on two cores).
`LazyEncoder` loads them at its first `encode` call. No torch and no model library is imported here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pluralign.embed.base import Encoder, text_list
from pluralign.embed.models import MINILM_ID, SMOLLM2_ID

INT8_SUFFIX = "@onnx-int8"  # encoder_id of MiniLM's int8-quantized vectors (pluralign.embed.onnx)


@dataclass(frozen=True)
class EncoderIdentity:
    """What a named encoder's vectors are: checked against the loaded encoder when it loads."""

    encoder_id: str  # the model, as artifacts and the embedding cache record it
    dim: int  # width of its vectors
    max_length: int  # word pieces read of a text; the rest is cut (the cache keys by it too)


_MINILM = EncoderIdentity(MINILM_ID, 384, 256)
_SMOLLM2 = EncoderIdentity(SMOLLM2_ID, 576, 256)
IDENTITIES: dict[str, EncoderIdentity] = {
    "minilm": _MINILM, MINILM_ID: _MINILM,
    "minilm-onnx": _MINILM,  # the same vectors on ONNX Runtime
    "minilm-onnx-int8": EncoderIdentity(MINILM_ID + INT8_SUFFIX, 384, 256),
    "smollm2": _SMOLLM2, SMOLLM2_ID: _SMOLLM2,
}


def encoder_identity(name: str) -> EncoderIdentity:
    """The identity of the encoder `make_encoder(name)` loads; ValueError for a name it does not know."""
    try:
        return IDENTITIES[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}: expected `minilm`, `minilm-onnx`, `minilm-onnx-int8` or `smollm2`") from None


class LazyEncoder:
    """`make_encoder(name)`, loaded at the first `encode` call (once, whichever thread calls first): a
    command whose texts are all in the embedding cache never loads the weights. `encoder_id`, `dim` and
    `max_length` are the name's (`encoder_identity`), known at once; the encoder that loads must have
    the same, else a ValueError naming both (vectors cached or artifacts made under one would be taken
    for the other's). ValueError at once for a name `make_encoder` does not know.

        encoder = CachedEncoder(LazyEncoder("minilm"), EmbeddingCache(default_cache_path()))
        encoder.encode(texts)  # loads MiniLM only if a text is not cached yet
    """

    def __init__(self, name: str, load: Callable[[], Encoder] | None = None):
        identity = encoder_identity(name)
        self.name = name
        self.encoder_id, self.dim, self.max_length = identity.encoder_id, identity.dim, identity.max_length
        self._load = load or (lambda: _make_encoder(name))
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def truncated(self) -> int:
        """Texts embedded so far that were longer than `max_length` (none before it loads)."""
        return getattr(self._encoder, "truncated", 0)

    def encoder(self) -> Encoder:
        """The loaded encoder (loading it the first time)."""
        with self._lock:
            if self._encoder is None:
                encoder = self._load()
                got = (encoder.encoder_id, int(encoder.dim), getattr(encoder, "max_length", None))
                want = (self.encoder_id, self.dim, self.max_length)
                if got != want:
                    raise ValueError(f"encoder {self.name!r} loaded as (encoder_id, dim, max_length) {got}, not the {want} "
                                     f"its name stands for (pluralign.embed.named.IDENTITIES)")
                self._encoder = encoder
            return self._encoder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, as the loaded encoder's; TypeError for one str before anything loads (`text_list`)."""
        return self.encoder().encode(text_list(texts))


def _make_encoder(name: str) -> Encoder:
    from pluralign.embed.encoders import make_encoder

    return make_encoder(name)
