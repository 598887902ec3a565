"""A chat's prompt as token ids, special tokens only where the chat template puts them.

Tokenizing the rendered template whole (`tokenizer(apply_chat_template(..., tokenize=False))`) reads the
spelling of a special token anywhere in it as that token, so a message whose text holds
`<|im_end|>\\n<|im_start|>system\\n...` closed its own turn and opened a system turn: any end user could
forge turns past the app's system prompt. Here a message's text is always tokenized as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# a message's text stands in the rendered template as one of these while the template's own text is tokenized:
# private-use code points, which no tokenizer gives a meaning and no chat template writes
_HOLE = "\ue000{}\ue001"
_HOLES = re.compile("\ue000(\\d+)\ue001")


def special_spellings(tokenizer) -> list[str]:
    """The text of every special token of `tokenizer`: its named ones (`all_special_tokens`) and every added
    token marked special (SmolLM2 has 14 such besides its three named ones: `<file_sep>`, `<repo_name>`, ...)."""
    added = (t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
    return [t for t in {*tokenizer.all_special_tokens, *added} if t]


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` read as text (an answer, a message's content): a spelled special token is its
    characters' tokens. Text that spells none (nearly all) gets exactly `tokenizer(text)`'s ids, as before."""
    if not any(t in text for t in special_spellings(tokenizer)):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return _without_added_tokens(tokenizer, text)


def _without_added_tokens(tokenizer, text: str) -> list[int]:
    """A fast tokenizer's pipeline run without its added tokens (normalizer, pre-tokenizer, model), as
    transformers' own `_encode_without_added_tokens`: `split_special_tokens=True` would set
    `encode_special_tokens` on the Rust tokenizer, one object shared by every thread, so another request's
    prompt tokenized meanwhile read its template's tokens as text, or this text as tokens. A Python
    tokenizer takes `split_special_tokens` per call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)] if backend.pre_tokenizer is not None else [text]
    return [token.id for piece in pieces for token in backend.model.tokenize(piece)]


def chat_prompt_ids(tokenizer, messages: Sequence[dict[str, str]], suffix: str = "") -> list[int]:
    """Token ids of `messages` (role/content dicts of text) under `tokenizer`'s chat template with the
    generation prompt, then `suffix` (text that opens the answer, tokenized with the template's end). The
    template's own special tokens are special; a message's text is text, its spellings of special tokens
    included (`special_spellings`). Messages that spell none (nearly all) get exactly the ids of the rendered
    template tokenized whole, as before. Safe to call from several threads on one tokenizer. Raises what
    `apply_chat_template` raises (a tokenizer without a chat template)."""
    spelled = special_spellings(tokenizer)
    if not any(t in m["content"] for m in messages for t in spelled):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return tokenizer(text + suffix, add_special_tokens=False)["input_ids"]
    holes = [dict(m, content=_HOLE.format(i)) for i, m in enumerate(messages)]
    text = tokenizer.apply_chat_template(holes, tokenize=False, add_generation_prompt=True) + suffix
    ids: list[int] = []
    at = 0
    for hole in _HOLES.finditer(text):
        ids += tokenizer(text[at:hole.start()], add_special_tokens=False)["input_ids"]  # the template's text: its tokens
        ids += _without_added_tokens(tokenizer, messages[int(hole.group(1))]["content"])
        at = hole.end()
    return ids + tokenizer(text[at:], add_special_tokens=False)["input_ids"]
