"""The search for what in this process still holds a user's texts after their DELETE (a marker in them), which the
tests of each DELETE path share: every object the collector tracks, frozen ones included, each other thread's local
variables, and garbage not yet collected when asked.

Our own, not objgraph's or pympler's: those read `gc.get_objects()`, which leaves out the objects a running service
froze at its start (`service.heap`: torch, transformers, the models, and the module-level caches and workers' dicts
made then and mutated in place since), ~634,000 of the ~636,000 alive; the search reads them inside
`service.heap.thawed`. One search of a started test service reads ~636,000 objects: a pre-check of each chunk of them
in C calls (`_may_hold`) leaves most aside, ~4x cheaper than reading each object in Python; still seconds with the
collection before it, so a test searches once after its deletes, not once per delete."""

from __future__ import annotations

import gc
import sys
import threading
import types
from collections import Counter
from itertools import compress, repeat
from operator import and_, eq, not_

from service.heap import thawed
from tests.service.test_delete_journal import wait_until


def _refs(obj) -> list:
    """What `obj` refers to: gc's referents, and a dict's keys (gc does not visit a dict's str keys)."""
    return [*obj, *gc.get_referents(obj)] if issubclass(type(obj), dict) else gc.get_referents(obj)


class _Texts:
    """The texts searched for (and their UTF-8 bytes), and the test's own objects of them (its strs, the search's
    bytes), told apart by identity: another object equal to one (an answer held whole, a `Candidate`'s text, bytes of a
    text alone) is a holder's."""

    def __init__(self, texts: list[str]):
        self.texts, self.raw = texts, [t.encode() for t in texts]
        self.own = {id(t) for t in texts} | {id(b) for b in self.raw}

    def one(self, i: int) -> _Texts:
        """Only the `i`th text searched for, the test's own objects of all still aside."""
        one = _Texts([self.texts[i]])
        one.own = self.own
        return one


def _holds(obj, texts: _Texts, depth: int = 2) -> bool:
    """Whether `obj` is a text (str or bytes) holding one of `texts`, and not one of the test's own copies of them."""
    if issubclass(type(obj), str):  # type(): isinstance reads `__class__`, which some modules' objects warn at
        return id(obj) not in texts.own and any(t in obj for t in texts.texts)
    if issubclass(type(obj), (bytes, bytearray)):
        return id(obj) not in texts.own and any(b in obj for b in texts.raw)
    if depth and not gc.is_tracked(obj):  # an untracked container (a msgspec Struct of strings): read through it
        return any(_holds(r, texts, depth - 1) for r in _refs(obj))
    return False


def _reaches(value, ids: set[int], texts: _Texts, depth: int = 3) -> bool:
    if id(value) in ids or _holds(value, texts):
        return True
    return depth > 0 and not isinstance(value, type) and any(_reaches(r, ids, texts, depth - 1) for r in _refs(value))


# referents that are never a text nor an untracked container reading through to one: passed over without a call of
# `_holds` (a search makes ~5 million such checks: 8.6 -> 3.8 s of CPU for them, at load ~10)
_PASSED = frozenset({int, float, bool, type(None), list, set, type, types.FunctionType, types.CellType, types.ModuleType,
                     types.MethodType, types.BuiltinFunctionType, property, staticmethod, classmethod,
                     types.GetSetDescriptorType, types.MemberDescriptorType, types.MethodDescriptorType,
                     types.WrapperDescriptorType})


def _holder(obj, texts: _Texts) -> int | None:
    """Which of `texts` `obj` refers to a text holding (the first found; a marker a DELETE path tells which path left
    it), else None: `_holds` of each referent, plain strs checked inline. Named as it is read, not read again: work
    in flight may let go of it before the search ends."""
    for r in _refs(obj):
        kind = type(r)
        if kind is str:
            if id(r) not in texts.own:
                for t in texts.texts:
                    if t in r:
                        return texts.texts.index(t)
        elif kind not in _PASSED and _holds(r, texts):
            return next((i for i in range(len(texts.texts)) if _holds(r, texts.one(i))), 0)
    return None


_CHUNK = 2048  # objects a pre-check reads at once; a chunk it cannot clear is searched object by object
_STR, _TEXT, _OTHER, _PASS, _DICT = 1, 2, 4, 8, 16  # what a referent's type makes it for the search; _DICT: a dict too
_KINDS: dict[type, int] = {}


def _kinds(objects: list) -> list[int]:
    """Each object's `_STR`, `_TEXT` (a str's subclass, bytes), `_PASS` (`_PASSED`) or `_OTHER` (with `_DICT` for a
    dict), by its type."""
    kinds = list(map(type, objects))
    for kind in set(kinds).difference(_KINDS):
        _KINDS[kind] = (_STR if kind is str else _TEXT if issubclass(kind, (str, bytes, bytearray))
                        else _PASS if kind in _PASSED else _OTHER | _DICT if issubclass(kind, dict) else _OTHER)
    return list(map(_KINDS.__getitem__, kinds))


def _referents(objects: list, kinds: list[int]) -> list:
    """What `objects` refer to, as `_refs` reads them: gc's referents and the dicts' keys, as stored (a subclass's own
    `__iter__` is left for the search proper, which names what it reads: one that changes the dict as it is read
    would be read twice)."""
    found = gc.get_referents(*objects)
    for d in compress(objects, map(and_, kinds, repeat(_DICT))):
        found += dict.keys(d)  # one C loop over it: not cut by another thread changing the dict
    return found


def _may_hold(chunk: list, texts: _Texts) -> bool:
    """Whether any object of `chunk` may be a holder for `_holder`: every text it would read (each object's referents,
    read through untracked containers as `_holds` does, two deep) found with C calls alone (gc's, `map`, `compress`).
    Never False where `_holder` finds one (the test's own copies count here); most chunks hold nothing, and this reads
    one ~4x faster than `_holder` of each of its objects (a search of ~530,000 objects: ~1.4 s of CPU, not ~5 s)."""
    level, skip = _referents(chunk, _kinds(chunk)), _PASS  # `_holder` passes `_PASSED` over; `_holds` does not
    for depth in (2, 1, 0):
        kinds = _kinds(level)
        strs = list(compress(level, map(eq, kinds, repeat(_STR))))
        if any(any(map(str.__contains__, strs, repeat(t))) for t in texts.texts):
            return True
        if any(_holds(r, texts, 0) for r in compress(level, map(eq, kinds, repeat(_TEXT)))):
            return True
        if not depth:
            return False
        other = list(compress(level, map(and_, kinds, repeat(_OTHER | (_PASS & ~skip)))))
        inner = list(compress(other, map(not_, map(gc.is_tracked, other))))
        level, skip = _referents(inner, _kinds(inner)), 0
    return False


def _clients(obj) -> bool:
    """Whether `obj` is the test's HTTP client's (httpx's: its requests and responses, in cycles of their own), not
    the service's (`httpx2`, the remote generator's client, is not httpx)."""
    module = str(type(obj).__module__)
    return module == "httpx" or module.startswith("httpx.")


def _attributes(obj) -> dict | None:
    """`obj`'s `__dict__` (its attributes), None for an object with none."""
    try:
        found = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    return found if type(found) is dict else None


def _found(objects: list, searched: _Texts, collect: bool) -> list[tuple[object, int]]:
    """Each of `objects` referring to a text holding one of `searched`, with which (`_holder`), chunks the pre-check
    (`_may_hold`) clears passed over; without `collect`, the test's HTTP client's objects (`_clients`) and the dicts of
    their attributes left out."""
    # the client's objects' own attribute dicts too (`builtins.dict`s: a class whose instances stopped sharing keys)
    clients = set() if collect else {id(d) for o in objects if _clients(o) and (d := _attributes(o)) is not None}
    return [(o, i) for start in range(0, len(objects), _CHUNK) if _may_hold(chunk := objects[start:start + _CHUNK], searched)
            for o in chunk if (collect or not (_clients(o) or id(o) in clients)) and (i := _holder(o, searched)) is not None]


def holders_of(texts: list[str], collect: bool = True, among: list | None = None) -> list[str]:
    """What in this process still refers to a text holding one of `texts` (the test's own objects of them aside): the
    thread, function and variable of another thread's local (frames are not gc objects), else how many objects of
    each kind refer to one, and to which of `texts`. Texts are told from the test's own by identity: an answer held
    whole, a `Candidate`'s text, is equal to the test's copy. `collect`: garbage is collected first; without, a
    reference cycle awaiting the collector is a holder too (on a quiet service it may wait for good), the test's
    client's own (httpx's requests and responses, in cycles of their own, and the dicts of their attributes) aside.
    `among`: only these objects are searched, with no collection (the search's own tests: ms, not seconds)."""
    searched = _Texts(texts)
    if among is not None:
        objects = list(among)
    else:
        with thawed():
            if collect:
                gc.collect()
            objects = gc.get_objects()
    found = _found(objects, searched, collect)
    del objects
    ids = {id(o) for o, _ in found}
    names = {t.ident: t.name for t in threading.enumerate()}
    frames = sys._current_frames()
    del frames[threading.get_ident()]  # this search's own: held in a variable here, a cycle keeping `found` alive
    where = []
    for ident, frame in frames.items():
        while frame is not None:
            where += [f"{names.get(ident)}: {frame.f_code.co_qualname}.{name}" for name, value in frame.f_locals.items()
                      if _reaches(value, ids, searched)]
            frame = frame.f_back
    kinds = Counter((f"{type(o).__module__}.{type(o).__qualname__}", i) for o, i in found)
    # a text is named by its first 12 characters only: a report holding a whole one would be a holder of it itself
    return where or [f"{n} {kind} holding texts[{i}] ({texts[i][:12]}...)" for (kind, i), n in kinds.items()]


def assert_none_hold(texts: list[str], timeout: float = 20.0, collect: bool = True) -> None:
    """No holder of `texts` (`holders_of`) within `timeout` seconds (work in flight lets them go), else fails with
    what the last search found (not searched again for the message: a search is seconds)."""
    found: list[str] = []

    def none() -> bool:
        found.clear()  # (the last report's texts aside before the next search)
        found.extend(holders_of(texts, collect))
        return not found

    assert wait_until(none, timeout), found
