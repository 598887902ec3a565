"""A key given twice in one object of a JSON text: msgspec, like most decoders, keeps its last value,
while others (a gateway, a log reader, jq's first-wins tools) may keep the first, so such a text means
one thing to us and another to them. The service refuses it in a JSON body, the readers of JSON lines
in a line (an import's body, a preference file)."""

from __future__ import annotations

import json

import msgspec


class _Repeated(Exception):
    pass


def _refuse_repeats(items: list[tuple[str, object]]) -> dict:
    found = dict(items)
    if len(found) != len(items):
        raise _Repeated
    return found


def keys_kept(value: object) -> int:
    """How many keys the objects of a decoded JSON value hold (a key given twice counts once); a walk with
    its own stack, so no depth a decoder read is too deep for it."""
    count, stack = 0, [value]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            count += len(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def _as_many_keys(raw: bytes, kept: int | None) -> bool:
    """Whether no key of the JSON `raw` can be given twice in one object: the keys its objects kept once
    decoded (a repeated one once; `kept` when the caller decoded it already, at most as many as it holds)
    are as many as the colons written (each key is followed by one; a text holding colons has more, and is
    left to the exact check). False when that is not known (malformed, nested too deeply to count, colons
    in texts): the exact check runs."""
    if kept is not None:
        return kept == raw.count(b":")
    try:
        return keys_kept(msgspec.json.decode(raw)) == raw.count(b":")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in order, repeated keys kept."""


def repeated_key(text: bytes | str, kept: int | None = None) -> str | None:
    """The dotted path (`messages[0].role`, `chosen[1].content`) of the first key given twice in one
    object of the JSON `text`, compared as decoded (`"us\\u0065r"` is `user`; keys that differ only by
    Unicode normalisation are two keys); None when there is none, or when Python's decoder does not
    read `text` (malformed, or nested deeper than it goes: left to the caller's own decoding). Python's
    decoder is the one that shows repeated keys (`object_pairs_hook`), ~30 ms a MB: it runs only when the
    text holds more colons than msgspec's decoding kept keys (`_as_many_keys`, ~8 ms a MB), and the
    walk for the path only when one is found. `kept`: the keys the caller's own decoding of `text` kept
    (`keys_kept`, or fewer: never more than its objects hold), which spares decoding it again."""
    if _as_many_keys(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"), kept):
        return None
    try:
        json.loads(text, object_pairs_hook=_refuse_repeats)
        return None
    except _Repeated:
        pass
    except (ValueError, RecursionError):
        return None
    try:
        pairs = json.loads(text, object_pairs_hook=_Pairs)  # malformed after the repeat (not seen by the first reading): None
    except (ValueError, RecursionError):
        return None
    return _repeated_path(pairs, "")


def _repeated_path(value: object, path: str) -> str | None:
    """The first repeated key's path, an object's own keys before its values' (a walk with its own stack:
    a text Python's decoder read is never too deep for it)."""
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Pairs):
            seen: set[str] = set()
            for key, _ in value:
                if key in seen:
                    return f"{path}.{key}" if path else key
                seen.add(key)
            stack.extend(reversed([(item, f"{path}.{key}" if path else key) for key, item in value]))
        elif isinstance(value, list):
            stack.extend(reversed([(item, f"{path}[{i}]") for i, item in enumerate(value)]))
    return None
