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
    return [len(ids) for ids in counter(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]


FIRST_CHARS = 8  # characters of a text first read per word piece of the window (MiniLM: 8 x 256 = 2,048)


def window_texts(counter, texts: list[str], max_length: int) -> tuple[list[str], list[int]]:
    """Each of `texts` cut to a start that `counter`'s tokenizer, cutting at `max_length` word pieces (`truncation=True`),
    reads exactly as it reads the text (the same ids, so the same vector), without reading the rest (a 1 MB text was
    read whole, ~4 s on one core, to keep its first 256 pieces); and its word pieces, special tokens included: a text's
    whole count, or a cut one's count of its start, which is more than `max_length` as the text's is. A text of at most
    FIRST_CHARS x `max_length` characters, or for which no shorter start is found to be so, is itself. `counter`: as
    `word_pieces`' (its settings are not changed).

    Starts of FIRST_CHARS x `max_length` characters, then 4 times as many each try, are read (no truncation, no special
    tokens, the texts still open in one call) until one holds more word pieces than the window (`max_length` less the
    special tokens) and the window's last piece is of a word two or more words before the start's last word (the fast
    tokenizer's `word_ids`: its pre-tokenizer's words). A start that ends with the beginning of an added token's text
    ("[SE" of "[SEP]", "<|im_e" of "<|im_end|>") is read without it: the text may hold the whole token, one id read before
    words are split (in the start, "[SE" is two words, and the whitespace before "<|im_e" a word of its own). A word two
    words before a start's last is a word of the text, whole: the tokenizers' normalizers (BERT's: lower case, accents,
    CJK set apart) work a character (a base and its combining marks) at a time, and their pre-tokenizers split where at
    most the next three characters show a word ends (BERT's whitespace and punctuation; byte-level BPE's GPT-2
    expression, whose contractions "'re", "'ve", "'ll" are three: a start ending "they'r" reads "'" then "r"); each word's
    pieces are its own (WordPiece, which reads a word over 100 characters as [UNK]; BPE). So the window's pieces, all in
    whole words, are the text's first ones. A text that is one word to its end (1 MB of letters without a space) is read
    whole, as before; so is every text for a tokenizer without `word_ids` (a slow one), with an added token matched in
    normalized text (its characters in the text are not known here) or that cuts a text's start (`truncation_side`
    "left": it reads the end). tests/unit/test_longtext56_window.py checks the ids on texts of many scripts, and with
    added tokens and contractions across the start's end, with both default encoders' tokenizers."""
    read, counts = window_starts(counter, texts, max_length)
    whole = [i for i, n in enumerate(counts) if n < 0]
    if whole:  # (the tokenizer refuses an empty batch)
        for i, n in zip(whole, word_pieces(counter, [texts[i] for i in whole]), strict=True):
            counts[i] = n
    return read, counts


def window_starts(counter, texts: list[str], max_length: int) -> tuple[list[str], list[int]]:
    """`window_texts` without counting the texts it keeps whole: each of `texts` cut to the start that `counter` reads
    as it reads the text, with the start's word pieces (special tokens included), or -1 for a text kept whole, which is
    not tokenized here (for a caller that tokenizes the texts itself, or sends them on: the ONNX and remote encoders)."""
    specials = counter.num_special_tokens_to_add(pair=False)
    keeps_start = getattr(counter, "truncation_side", "right") == "right"  # "left" keeps a text's end: no start to cut
    window = max_length - specials if keeps_start else 0
    read, counts = read_starts(counter, texts, window, FIRST_CHARS * max_length)
    return read, [n + specials if n >= 0 else -1 for n in counts]


def read_starts(counter, texts: list[str], window: int, size: int) -> tuple[list[str], list[int]]:
    """Each of `texts` cut to a start whose first `window` tokens (no special tokens added) are the text's own, read
    without reading the rest; with the start's token count (more than `window`), or -1 for a text kept whole (not cut:
    it is at most `size` characters, or no shorter start is found to be so). How and why: `window_texts`, which reads
    starts from `size` characters on (then 4 times as many each try); tokenizers whose texts are not cut are named
    there (a slow one, one matching an added token in normalized text). `counter` is only called so (no truncation, no
    special tokens): its settings are not changed. A window of 0 or less cuts nothing."""
    prefixes = added_prefixes(counter)
    return _read_parts(counter, texts, window, size, None if prefixes is None else lambda t: without_added_start(t, prefixes),
                       lambda text, n: text[:n], _start_holds)


def read_ends(counter, texts: list[str], window: int, size: int) -> tuple[list[str], list[int]]:
    """`read_starts` for a caller that keeps a text's last `window` tokens (a prompt cut on the left): each of `texts` cut
    to an end whose last `window` tokens are the text's own, with its token count, or -1 for a text kept whole. Ends of
    `size` characters, then 4 times as many each try, are read until one holds more tokens than `window` and the
    window's first token is of a word two or more words after the end's first word. An end that begins with the rest
    of an added token's text ("m_end|>" of "<|im_end|>") is read without it. Past the end's first word, its words are
    the text's: the pre-tokenizers split where a run of letters, digits, whitespace or other characters ends (BERT's at
    whitespace and punctuation; byte-level BPE's GPT-2 expression matches from the left, each match ending where its run
    ends wherever in the run it began, so the end's first match ends where the text's does, and from there the matches
    are the same), a prefix space (SentencePiece's "first" scheme) changes the first word only, and the normalizers work
    a character at a time (a combining mark the end begins with is in its first word). The ids of the words after it
    are the text's: a word's pieces are its own. tests/unit/test_longtext57_policy_cut.py checks the ids."""
    suffixes = added_suffixes(counter)
    return _read_parts(counter, texts, window, size, None if suffixes is None else lambda t: without_added_end(t, suffixes),
                       lambda text, n: text[-n:], _end_holds)


def _start_holds(words: list, window: int) -> bool:
    return len(words) > window and len(set(words[window:]) - {words[window - 1]}) >= 2


def _end_holds(words: list, window: int) -> bool:
    first = len(words) - window  # the window's first token
    return first > 0 and len(set(words[:first]) - {words[first]}) >= 2


def _read_parts(counter, texts: list[str], window: int, size: int, clean, part, holds) -> tuple[list[str], list[int]]:
    """`read_starts` and `read_ends`: `part(text, n)` a text's n characters kept, `clean` it less a piece of an added
    token (None: nothing is cut), `holds(word_ids, window)` whether the part's window is the text's."""
    read, counts = list(texts), [-1] * len(texts)
    open_ = [i for i, text in enumerate(texts) if len(text) > size] if window > 0 and clean is not None else []
    while open_:
        cuts = [clean(part(texts[i], size)) for i in open_]
        parts = counter(cuts, add_special_tokens=False, truncation=False, verbose=False)
        for j, i in enumerate(open_):
            try:
                words = parts.word_ids(j)
            except ValueError:  # a slow tokenizer: no words known
                open_ = []
                break
            if holds(words, window):
                read[i], counts[i] = cuts[j], len(words)
        size *= 4
        open_ = [i for i in open_ if counts[i] < 0 and len(texts[i]) > size]
    return read, counts


def added_prefixes(counter) -> set[str] | None:
    """The starts, shorter than the whole, of the texts of `counter`'s added tokens ("[", "[S", ... "[SEP", "[M", ... for
    BERT's): a text's start that ends with one may end in an added token's text, read as one id in the whole text.
    None when an added token is matched in the normalized text while the tokenizer normalizes (its characters in the
    text are then not known: `window_texts` reads every text whole)."""
    added = list(getattr(counter, "added_tokens_decoder", {}).values())
    backend = getattr(counter, "backend_tokenizer", None)
    if backend is not None and backend.normalizer is not None and any(token.normalized for token in added):
        return None
    return {token.content[:n] for token in added for n in range(1, len(token.content))}


def added_suffixes(counter) -> set[str] | None:
    """The ends, shorter than the whole, of the texts of `counter`'s added tokens ("]", "P]", ... "SEP]" for BERT's
    "[SEP]"): `added_prefixes`' mirror, None where it is None."""
    if added_prefixes(counter) is None:
        return None
    return {token.content[-n:] for token in getattr(counter, "added_tokens_decoder", {}).values() for n in range(1, len(token.content))}


def without_added_end(end: str, suffixes: set[str]) -> str:
    """`end` less its longest start that is in `suffixes` (`added_suffixes`): "m_end|> b" -> " b", "a b" -> "a b". One is
    enough: an end that begins inside an added token's text begins with that text's rest, which the longest start in
    `suffixes` holds, and after the token the whole text's matching starts afresh as the end's does."""
    for n in range(min(len(end), max(map(len, suffixes), default=0)), 0, -1):
        if end[:n] in suffixes:
            return end[n:]
    return end


def without_added_start(start: str, prefixes: set[str]) -> str:
    """`start` less its longest end that is in `prefixes` (`added_prefixes`): "a b [SE" -> "a b ", "a b" -> "a b"."""
    for n in range(min(len(start), max(map(len, prefixes), default=0)), 0, -1):
        if start[-n:] in prefixes:
            return start[:-n]
    return start


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
