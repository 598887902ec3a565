"""A chat's prompt as token ids, special tokens only where the chat template puts them.

Tokenizing the rendered template whole (`tokenizer(apply_chat_template(..., tokenize=False))`) reads the
spelling of a special token anywhere in it as that token, so a message whose text holds
`<|im_end|>\\n<|im_start|>system\\n...` closed its own turn and opened a system turn: any end user could
forge turns past the app's system prompt. Here a message's text is always tokenized as text, with
transformers' own means (`apply_chat_template(..., sanitize_control_tokens=True)` does the same without
a way to open the answer): each special token a message spells is wrapped in private-use markers
(`mark_control_tokens`), the template renders the messages as ever (its own changes to their text, such
as `trim`, included), and the tokenizer reads what the markers wrap as text (`sanitize_control_tokens`).
Neither changes the tokenizer, which the service's threads share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def special_spellings(tokenizer) -> list[str]:
    """The text of every special token of `tokenizer`: its named ones (`all_special_tokens`) and every added
    token marked special (SmolLM2 has 14 such besides its three named ones: `<file_sep>`, `<repo_name>`, ...)."""
    added = (t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
    return [t for t in {*tokenizer.all_special_tokens, *added} if t]


def _marked(value, spellings: list[str]):
    """`value` (a text, messages) with each of `spellings` in its texts wrapped in transformers' markers; imported
    here, not with the module: transformers takes seconds to import, and importing the generator must not."""
    from transformers.utils.chat_template_utils import mark_control_tokens

    return mark_control_tokens(value, re.compile("|".join(re.escape(t) for t in sorted(spellings, key=len, reverse=True))))


def text_ids(tokenizer, text: str, first: int | None = None) -> list[int]:
    """Token ids of `text` read as text (an answer): a spelled special token is its characters' tokens. Text
    that spells none (nearly all) gets exactly `tokenizer(text)`'s ids, as before. `first`: only the first `first` ids
    are wanted, and returned: a longer text is cut before it is tokenized to a start that holds them (`cut`)."""
    text = cut(tokenizer, text, first=first)
    spellings = special_spellings(tokenizer)
    if not any(t in text for t in spellings):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(_marked(text, spellings), add_special_tokens=False, sanitize_control_tokens=True)["input_ids"]
    return ids if first is None else ids[:first]


def chat_prompt_ids(tokenizer, messages: Sequence[dict[str, str]], suffix: str = "", *, first: int | None = None,
                    last: int | None = None) -> list[int]:
    """Token ids of `messages` (role/content dicts of text) under `tokenizer`'s chat template with the
    generation prompt, then `suffix` (text that opens the answer, tokenized with the template's end). The
    template's own special tokens are special; a message's text is text, its spellings of special tokens
    included (`special_spellings`). Messages that spell none (nearly all) get exactly the ids of the rendered
    template tokenized whole, as before. `first` (or `last`): only the first (last) so many ids are wanted, and
    returned: the rendered prompt is cut before it is tokenized to a start (an end) that holds them (`cut`). Safe to
    call from several threads on one tokenizer. Raises what `apply_chat_template` raises (a tokenizer without a chat
    template)."""
    spellings = special_spellings(tokenizer)
    if not any(t in m["content"] for m in messages for t in spellings):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        ids = tokenizer(cut(tokenizer, text + suffix, first, last), add_special_tokens=False)["input_ids"]
    else:
        text = tokenizer.apply_chat_template(_marked(list(messages), spellings), tokenize=False, add_generation_prompt=True)
        ids = tokenizer(cut(tokenizer, text + suffix, first, last), add_special_tokens=False, sanitize_control_tokens=True)["input_ids"]
    return ids[:first] if first is not None else ids[max(len(ids) - last, 0) :] if last is not None else ids  # (ids[-0:] is all)


def cut(tokenizer, text: str, first: int | None = None, last: int | None = None) -> str:
    """`text` cut to a start whose first `first` tokens are its own (`pluralign.embed.base.read_starts`), or to an end
    whose last `last` tokens are (`read_ends`), without tokenizing the rest (tokenizing a 1 MB answer or prompt of an
    imported row whole takes ~4 s, to keep its first 96 tokens or its last 1,024); "" when 0 tokens are wanted. Itself
    when it is short, or when no such start or end is found (one word to its end). ValueError when both are given, or
    either is negative."""
    from pluralign.embed.base import FIRST_CHARS, read_ends, read_starts

    if first is not None and last is not None:
        raise ValueError("give `first` or `last`, not both")
    if min(first if first is not None else 0, last if last is not None else 0) < 0:
        raise ValueError(f"`first` and `last` must be 0 or more, got {first if first is not None else last}")
    if first == 0 or last == 0:
        return ""
    if first is not None:
        return read_starts(tokenizer, [text], first, FIRST_CHARS * first)[0][0]
    if last is not None:
        return read_ends(tokenizer, [text], last, FIRST_CHARS * last)[0][0]
    return text
