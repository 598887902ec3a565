"""The encoder interface: texts in, an (N, dim) float32 array out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """A frozen text encoder. `encoder_id` names the model; artifacts record it and check it."""

    encoder_id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (N, dim) float32
        ...
