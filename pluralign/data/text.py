"""What of a text a reader can see: the one test of "blank" for answers, prompts and edits.

`str.strip()` keeps Unicode format characters (category Cf: U+200B zero-width space, U+200C and
U+200D joiners, U+2060 word joiner, U+FEFF byte-order mark), so an answer made only of them passed
as non-blank and was stored and shown. Characters inside a text are left alone: a joiner between
two emoji is part of what is shown.
"""

from __future__ import annotations

import unicodedata


def _invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) == "Cf"


def visible(text: str) -> str:
    """`text` without the whitespace and format characters at either end; two texts with the same
    `visible` read the same. visible("\u200b Yes.\ufeff") == "Yes."."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def is_blank(text: str) -> bool:
    """Whether `text` has no visible character (only whitespace and format characters, or nothing)."""
    return not visible(text)
