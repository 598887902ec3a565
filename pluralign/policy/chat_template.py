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


def chat_prompt_ids(tokenizer, messages: Sequence[dict[str, str]], suffix: str = "") -> list[int]:
    """Token ids of `messages` (role/content dicts of text) under `tokenizer`'s chat template with the
    generation prompt, then `suffix` (text that opens the answer, tokenized with the template's end). The
    template's own special tokens are special; a message's text is text, its spellings of special tokens
    included. Messages that spell none (nearly all) get exactly the ids of the rendered template tokenized
    whole, as before. Raises what `apply_chat_template` raises (a tokenizer without a chat template)."""
    spelled = [t for t in tokenizer.all_special_tokens if t]
    if not any(t in m["content"] for m in messages for t in spelled):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return tokenizer(text + suffix, add_special_tokens=False)["input_ids"]
    holes = [dict(m, content=_HOLE.format(i)) for i, m in enumerate(messages)]
    text = tokenizer.apply_chat_template(holes, tokenize=False, add_generation_prompt=True) + suffix
    ids: list[int] = []
    at = 0
    for hole in _HOLES.finditer(text):
        ids += tokenizer(text[at:hole.start()], add_special_tokens=False)["input_ids"]  # the template's text: its tokens
        content = messages[int(hole.group(1))]["content"]
        ids += tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        at = hole.end()
    return ids + tokenizer(text[at:], add_special_tokens=False)["input_ids"]
