"""MiniLM on ONNX Runtime: the fp32 export gives today's vectors; the int8 one is close and named apart."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.embed.encoders import make_encoder
from pluralign.embed.models import MINILM_ID
from pluralign.embed.named import LazyEncoder

TEXTS = [
    "Suggest a weekend plan", "A quiet hike in the hills.", "A loud party with a lot of people.",
    "Explain the difference between a list and a tuple in Python, briefly.", "",
]


@pytest.fixture(scope="module")
def reference(minilm):
    return minilm.encode(TEXTS)


def test_fp32_export_gives_the_same_vectors(reference):
    encoder = make_encoder("minilm-onnx")
    assert (encoder.encoder_id, encoder.dim) == (MINILM_ID, 384)
    assert LazyEncoder("minilm-onnx", load=lambda: encoder).encoder() is encoder  # what the name stands for
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert (vectors * reference).sum(1).min() > 0.9999
    assert encoder.encode([]).shape == (0, 384)


def test_int8_is_close_but_has_its_own_id(reference):
    encoder = make_encoder("minilm-onnx-int8")
    assert encoder.encoder_id != MINILM_ID and encoder.encoder_id.startswith(MINILM_ID)
    assert LazyEncoder("minilm-onnx-int8", load=lambda: encoder).encoder() is encoder  # what the name stands for
    cosine = (encoder.encode(TEXTS) * reference).sum(1)
    assert 0.95 < cosine.min() and cosine.max() < 1.0 - 1e-6  # close, and not the same
