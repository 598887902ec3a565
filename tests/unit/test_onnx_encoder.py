"""MiniLM on ONNX Runtime: the fp32 export gives today's vectors; the int8 one is close and named apart."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.embed.encoders import make_encoder
from pluralign.embed.models import MINILM_ID
from pluralign.embed.named import LazyEncoder
from tests.unit.test_reviewlongtext57_cut_only import Reading

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
    encoder.counter = Reading(encoder.counter)  # the tokenizer that cuts long texts: none here
    vectors = encoder.encode(TEXTS)
    assert encoder.counter.texts == []  # review longtext57: before, every text was tokenized to count its pieces, unused
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert (vectors * reference).sum(1).min() > 0.9999
    assert encoder.encode([]).shape == (0, 384)


def test_int8_is_close_but_has_its_own_id(reference):
    encoder = make_encoder("minilm-onnx-int8")
    assert encoder.encoder_id != MINILM_ID and encoder.encoder_id.startswith(MINILM_ID)
    assert LazyEncoder("minilm-onnx-int8", load=lambda: encoder).encoder() is encoder  # what the name stands for
    cosine = (encoder.encode(TEXTS) * reference).sum(1)
    assert 0.95 < cosine.min() and cosine.max() < 1.0 - 1e-6  # close, and not the same


@pytest.mark.slow  # a fresh export in a process of its own: ~15 s
def test_the_first_export_writes_nothing_on_stderr(tmp_path):
    """Session 38: a fresh clone's first `make serve` printed three of torch's tracer warnings while it
    exported MiniLM (`TracerWarning: Converting a tensor to a Python boolean ...`, `Exporting aten::index
    operator ...`): noise a new user reads as a fault. The export (what the service's first start runs)
    now writes nothing on stderr."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PLURALIGN_MODEL_CACHE": str(tmp_path), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", "from pluralign.embed.onnx import minilm_onnx; print(minilm_onnx())"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("model.onnx") and done.stderr == "", done.stderr[-3000:]
