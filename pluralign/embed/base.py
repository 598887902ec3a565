"""The encoder interface: texts in, an (N, dim) float32 array out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from pluralign.data.text import surrogate_problem


@runtime_checkable
class Encoder(Protocol):
    """A frozen text encoder. `encoder_id` names the model; artifacts record it and check it."""

    encoder_id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (N, dim) float32
        ...


def word_pieces(counter, texts: list[str]) -> list[int]:
    """Word pieces (special tokens included) of each text, none cut (here, with no torch import, for
    `pluralign serve-embeddings`' usage too). `counter`: an encoder's own copy of its
    tokenizer, only ever called so: its truncation and padding settings stay off, so threads may share it."""
    return [len(ids) for ids in counter(texts, add_special_tokens=True, truncation=False)["input_ids"]]


def checked_vectors(encoder: Encoder, vectors, n_texts: int) -> np.ndarray:
    """What `encoder.encode` returned for `n_texts` texts, as float32 (n_texts, encoder.dim); raises
    ValueError naming the encoder when it is another shape or holds NaN or inf, so nothing built
    on it (a cache row, a PairBatch, a stored row) is kept."""
    vectors = np.asarray(vectors, np.float32)
    want = (n_texts, encoder.dim)
    if vectors.shape != want:
        raise ValueError(f"encoder {encoder.encoder_id!r} returned shape {vectors.shape} for {n_texts} texts, expected {want}")
    bad = ~np.isfinite(vectors).all(-1)
    if bad.any():
        raise ValueError(f"encoder {encoder.encoder_id!r} returned a vector that is not finite (NaN or inf) for text "
                         f"{int(np.flatnonzero(bad)[0])}")
    return vectors


def text_list(texts) -> list[str]:
    """The texts an `encode` call was given, as a list; TypeError naming `texts` when it is one
    string (which would otherwise be embedded character by character, one vector per character)
    or holds something that is not a str, ValueError naming `texts[i]` when it holds a lone UTF-16
    surrogate (`pluralign.data.text.surrogate_problem`, rather than the tokenizer's
    "TextEncodeInput must be Union[...]", or the cache's UnicodeEncodeError, naming no text)."""
    if isinstance(texts, str | bytes):
        raise TypeError(f"`texts` must be a sequence of strings, not one {type(texts).__name__}: encode([text])")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`texts[{i}]` is {type(text).__name__}, not str")
        problem = surrogate_problem(text)
        if problem:
            raise ValueError(f"`texts[{i}]` {problem}")
    return texts


SLICE_TOKENS = 1024  # padded word pieces an encoder runs in one turn: 4 of MiniLM's longest texts, 64 short ones


def slices(order: Sequence[int], tokens: Sequence[int], budget: int = SLICE_TOKENS, most: int = 64) -> list[list[int]]:
    """`order` (indices into `tokens`, the word pieces each text is run with) cut into consecutive
    slices of at most `most` texts whose padded size (texts x the slice's longest) is at most
    `budget` word pieces; a text longer than `budget` is a slice of its own. An encoder runs one
    slice per turn (`pluralign.turns.Turns`), so another caller waits at most one slice, not a whole call."""
    out: list[list[int]] = []
    longest = 0
    for i in order:
        longest_with = max(longest, tokens[i])
        if out and len(out[-1]) < most and longest_with * (len(out[-1]) + 1) <= budget:
            out[-1].append(i)
            longest = longest_with
        else:
            out.append([i])
            longest = tokens[i]
    return out
