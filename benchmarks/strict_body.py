"""What `service.strict.strict_json_body` costs a large JSON body, part by part: the typed strict decode into
the route's body type, and the repeated-key check (`pluralign.data.json_keys.repeated_key`), whose first step
decodes the body a second time, untyped, to count the keys its objects kept (`_as_many_keys`).

    OMP_NUM_THREADS=1 python benchmarks/strict_body.py                 # 100 KB and 1 MB chat bodies
    OMP_NUM_THREADS=1 python benchmarks/strict_body.py --sizes 1000000 --repeats 31

Body: a ChatRequest of short messages (the most objects a MB can hold), with no colon in its texts (so the
count decides and Python's exact check does not run) and with one in each (so it runs). Also timed: the
count the second decode would be replaced by, drawn from the typed value instead (every field given other
than its default, a required one, a dict's keys: fewer, never more, than the body holds), in Python.
Prints the best ms of `--repeats` for each.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.data.json_keys import _as_many_keys, repeated_key  # noqa: E402
from service.chat.schemas import ChatRequest  # noqa: E402
from service.strict import _decoder  # noqa: E402


def chat_body(limit: int, colon: bool) -> bytes:
    messages, size = [], 40
    while size < limit:
        text = f"Message number {len(messages)}{':' if colon else ','} tell me more about tea and coffee."
        messages.append({"role": "user" if len(messages) % 2 == 0 else "assistant", "content": text})
        size += len(json.dumps(messages[-1])) + 2
    return json.dumps({"model": "pluralign", "messages": messages}).encode()


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, bool, object], ...]:
    return tuple((f.name, f.required, f.default) for f in msgspec.structs.fields(cls))


def typed_keys(value: object) -> int:
    """The keys surely given in the body `value` was decoded from, from the typed value alone (see the docstring)."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, msgspec.Struct):
            for name, required, default in _fields(type(item)):
                got = getattr(item, name)
                if required or (default is not msgspec.NODEFAULT and got is not default and got != default):
                    count += 1
                if isinstance(got, msgspec.Struct | dict | list):
                    stack.append(got)
        elif isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def best_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="body bytes")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    decoder = _decoder(ChatRequest)
    print(f"best ms of {args.repeats}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for size in (int(s) for s in args.sizes.split(",")):
        for colon in (False, True):
            body = chat_body(size, colon)
            typed = decoder.decode(body)
            assert repeated_key(body) is None
            row = {"typed decode": best_ms(lambda: decoder.decode(body), args.repeats),  # noqa: B023
                   "second decode + count": best_ms(lambda: _as_many_keys(body, None), args.repeats),  # noqa: B023
                   "repeated_key": best_ms(lambda: repeated_key(body), args.repeats),  # noqa: B023
                   "count from typed": best_ms(lambda: typed_keys(typed), args.repeats)}  # noqa: B023
            print(f"{len(body):9,} B {'colons in texts' if colon else 'no colon      '}  "
                  + "  ".join(f"{name} {ms:6.2f}" for name, ms in row.items()), flush=True)


if __name__ == "__main__":
    main()
