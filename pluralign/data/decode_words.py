"""msgspec's validation messages in the words of every other error of ours: the problem said of the field, the
field named by its dotted path (`messages[0].role`), never msgspec's `$[...]` path nor its type names.

msgspec says `Expected `int | null`, got `str` - at `$.max_tokens``, `Expected `int` >= 1`, `Number out of range`,
`Object missing required field `user``: a reader meets backquoted Python type names and a JSONPath where our own
messages say "`max_tokens`: must be an integer or null, not text". msgspec has no hook to word its errors, and its
messages are a small fixed set (its `_core.c`), so they are read here and worded again, in one place for the
service's bodies, an import's lines and a job's params alike. A message of another form is kept as it is.

    >>> in_our_words("Expected `int | null`, got `str`")
    'must be an integer or null, not text'
    >>> in_our_words("Expected `array` of length <= 64")
    'must hold at most 64 items'
    >>> validation_problem("Expected `str`, got `int` - at `$[0].user`")
    ('[0].user', 'must be text, not an integer')
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pluralign.data.text import closest_name, shorten

MAX_VALUE = 67  # characters of a refused value repeated (msgspec's message holds it whole: a MB string, a MB message)

_TYPES = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false", "null": "null",
          "array": "a list", "object": "an object", "bytes": "base64 text", "datetime": "an RFC 3339 date and time",
          "date": "an RFC 3339 date", "time": "an RFC 3339 time", "uuid": "a UUID", "decimal": "a decimal number"}
# msgspec's `float` sent: `1.5`, `1.0`, `1e3` (an integer is a number too: "not a number" would say it is none)
_GOT = {**_TYPES, "bool": "a boolean", "float": "a number with a fraction or exponent"}
_BOUND = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}
_COUNTED = {"str": "characters long", "bytes": "bytes long"}  # of length N: else items (array) or keys (object)

_WRONG_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`(?P<rest>.*)", re.S)
_OUT_OF_BOUNDS = re.compile(r"Expected `(?P<want>[^`]+)` (?P<op>>=|<=|>|<) (?P<bound>\S+)")
_LENGTH = re.compile(r"Expected `(?P<want>[^`]+)` of length (?P<op>>=|<=|>|<) (?P<bound>\d+)")
_MULTIPLE = re.compile(r"Expected `(?P<want>[^`]+)` that's a multiple of (?P<bound>\S+)")
_PATTERN = re.compile(r"Expected `str` matching regex .*", re.S)
_INVALID = re.compile(r"Invalid (?:enum )?value (?P<value>.+)", re.S)
_MISSING = re.compile(r"Object missing required field `[^`]*`")
_UNKNOWN = re.compile(r"Object contains unknown field `[^`]*`")
_AT = re.compile(r"^(?P<problem>.*?) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.S)


def _kinds(spelt: str, words: dict[str, str]) -> str:
    """`int | null` -> "an integer or null", `bool | null` -> "true, false or null"; a type msgspec names that we do
    not (a Struct's) -> "a `Name`"."""
    said = [word for kind in spelt.split(" | ") for word in words.get(kind, f"a `{kind}`").split(" or ")]
    return " or ".join(said) if len(said) <= 2 else f"{', '.join(said[:-1])} or {said[-1]}"


def in_our_words(problem: str) -> str:
    """msgspec's problem (its message without ` - at `$...``) in our words, said of the field (`must be ...`); one of
    another form as it is."""
    if found := _WRONG_TYPE.fullmatch(problem):
        return f"must be {_kinds(found['want'], _TYPES)}, not {_kinds(found['got'], _GOT)}{found['rest']}"
    if found := _LENGTH.fullmatch(problem):
        kind = found["want"]
        counted = _COUNTED.get(kind, "keys" if kind == "object" else "items")
        if found["bound"] == "1":  # one character, item or key
            counted = counted.replace("characters", "character").replace("bytes", "byte").rstrip("s") if kind in _COUNTED else counted[:-1]
        verb = "be" if kind in _COUNTED else "hold"
        return f"must {verb} {_BOUND[found['op']]} {found['bound']} {counted}"
    if found := _OUT_OF_BOUNDS.fullmatch(problem):
        return f"must be {_BOUND[found['op']]} {found['bound']}"
    if found := _MULTIPLE.fullmatch(problem):
        return f"must be a multiple of {found['bound']}"
    if _PATTERN.fullmatch(problem):
        return "does not have the form this field takes (docs/api.md)"
    if found := _INVALID.fullmatch(problem):
        return f"{shorten(found['value'], MAX_VALUE, '...')} is not one of the values this field takes"
    if _MISSING.fullmatch(problem):
        return "missing required field"
    if _UNKNOWN.fullmatch(problem):
        return "unknown field"
    if problem == "Number out of range":
        return "a number out of range: no 64-bit integer or float holds it"
    return problem


def validation_problem(message: str) -> tuple[str, str]:
    """(the field's dotted path, the problem in our words) of a msgspec ValidationError's message: `$.messages[0].role`
    is `messages[0].role`, `$[0].user` `[0].user`; a missing or unknown field is named itself (`user`, not the object
    holding it); a bad key of a dict is said to be a key. The path is '' where msgspec names none (the whole value)."""
    found = _AT.match(message)
    problem, path = (found["problem"], found["path"].lstrip(".")) if found else (message, "")
    named = re.search(r"(?:missing required|unknown) field `([^`]*)`", problem)
    if named:
        path = f"{path}.{named[1]}" if path else named[1]
    worded = in_our_words(problem)
    return path, f"a key: {worded}" if found and found["key"] else worded


def said(message: str) -> str:
    """A msgspec ValidationError's message as one of ours: "`shots`: must be an integer, not text", the problem alone
    where msgspec names no field (`validation_problem`)."""
    path, problem = validation_problem(message)
    return f"`{path}`: {problem}" if path else problem


def one_of(choices: tuple[str, ...], value: object, shown_as: str = "") -> str:
    """`must be one of `a`, `b`; got 'c'`: a `value` outside a field's choices, said with them (a string as its repr, cut
    between graphemes), and the closest of them to a misspelt one (`got 'populaton' (did you mean `population`?)`),
    as an unknown field is. `value` None: one `service.strict.refused_value` could not read, shown as msgspec said it
    (`shown_as`). A body's field (`service.strict`) and a job's parameter (`training.jobs.params`) alike."""
    if value is None:
        return f"must be one of {', '.join(f'`{c}`' for c in choices)}; got {shorten(shown_as, 67, '...')}"
    hint = did_you_mean(value, choices)
    got = repr(shorten(value, 66, "...")) if isinstance(value, str) else shorten(str(value), 67, "...")
    return f"must be one of {', '.join(f'`{c}`' for c in choices)}; got {got}{hint}"


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """` (did you mean `x`?)` for the one of `choices` the text `value` most likely means
    (`pluralign.data.text.closest_name`: `USER`, `populaton`), else '' (a value far from every choice, or no text)."""
    close = closest_name(value, choices) if isinstance(value, str) else None
    return f" (did you mean `{close}`?)" if close else ""
