"""What the JSON container cap costs the event loop, and what it lets through (wire43).

    OMP_NUM_THREADS=1 python -m benchmarks.json_containers [--repeat 15]

Prints, for bodies of about 1 MB (the default PLURALIGN_MAX_BODY_BYTES):
- the longest the event loop was held (its thread's CPU time) while one body's objects and arrays were counted (a task
  beside it taking a turn whenever it can, as another request would): the count in one call (`json_containers`, before wire43) against
  `containers_counted` (a turn every PIECE_BYTES);
- how many objects and arrays the densest chats under the limit open, against the cap (`containers_cap` of a 1 MB limit);
- the strict decode of a chat's body (`service.strict._decoder(ChatRequest)`), which runs on the event loop: legal chats,
  and bodies of junk arrays (in `audio`, which takes any object; its handler refuses it) just under the caps.
Medians and maxima over --repeat runs, in ms of the loop thread's CPU time (`time.thread_time`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from service.chat.schemas import ChatRequest
from service.strict import CONTAINER_BYTES, MAX_JSON_CONTAINERS, _decoder, containers_counted, json_containers

LIMIT = 1_000_000
CAP = max(MAX_JSON_CONTAINERS, LIMIT // CONTAINER_BYTES)


def _chat(messages: list) -> bytes:
    return json.dumps({"model": "pluralign", "messages": messages}, separators=(",", ":")).encode()


def _fill(make, limit: int = LIMIT) -> list:
    """As many items `make(i)` as a chat body under `limit` holds."""
    one = len(json.dumps(make(0), separators=(",", ":"))) + 1
    return [make(i) for i in range(limit // one - 4)]


BODIES = {  # ~1 MB each
    "code in strings": _chat(_fill(lambda i: {"role": "user", "content": 'f(a[1], {"k": [2]}) ' * 40})),
    "150k short strings": _chat(_fill(lambda i: {"role": "user", "content": [{"type": "text", "text": "[{"}]})),
    "escapes and brackets": _chat(_fill(lambda i: {"role": "user", "content": '[{"\\' * 40})),
    # reviewwi43: one run of 880 KB of escaped backslashes, then brackets enough to be counted (wire43 stretched the
    # first piece, a byte at a time, to the run's end)
    "a run of backslashes": _chat([{"role": "user", "content": "\\" * 440_000 + "[" * (CAP + 1)}]),
}
LEGAL = {  # the densest chats: containers opened under 1 MB
    "bare messages {role}": _chat(_fill(lambda i: {"role": "user"})),
    "text-part messages": _chat(_fill(lambda i: {"role": "user", "content": [{"type": "text", "text": ""}]})),
    "one message, text parts": _chat([{"role": "user", "content": _fill(lambda i: {"type": "text", "text": ""})}]),
}


def _junk(arrays: int) -> bytes:
    return json.dumps({"model": "pluralign", "messages": [{"role": "user", "content": "hi"}], "audio": {"tracks": [[]] * arrays}},
                      separators=(",", ":")).encode()


async def _longest_hold(count) -> float:
    """The longest the loop went without giving another task a turn while `count()` ran: the loop thread's CPU
    seconds (`time.thread_time`), so that other processes of a loaded machine taking the core are not counted."""
    done, gaps = False, []

    async def other() -> None:
        last = time.thread_time()
        while not done:
            await asyncio.sleep(0)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    beside = asyncio.create_task(other())
    await asyncio.sleep(0)
    await count()
    done = True
    await beside
    return max(gaps)


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:6.1f} ms, max {max(values) * 1e3:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    async def at_once(body: bytes) -> None:
        json_containers(body)

    print(f"event loop held while one body is counted ({args.repeat} runs):")
    for name, body in BODIES.items():
        for how, count in (("one call (before)", at_once), ("containers_counted", lambda b: containers_counted(b, CAP))):
            holds = [asyncio.run(_longest_hold(lambda c=count, b=body: c(b))) for _ in range(args.repeat)]
            print(f"  {name:22s} {len(body) / 1e6:.2f} MB {json_containers(body):7d} opened  {how:20s} {_ms(holds)}")
    print(f"densest chats under {LIMIT:,} bytes against the cap of {CAP:,} (10,000 before):")
    for name, body in LEGAL.items():
        print(f"  {name:26s} {len(body) / 1e6:.2f} MB {json_containers(body):7d} opened")
    decode = _decoder(ChatRequest).decode
    print("strict decode on the event loop:")
    for name, body in (("legal chat, text parts", LEGAL["text-part messages"]), ("legal chat, 3,400 messages", _chat(
            [{"role": "user", "content": [{"type": "text", "text": "hi"}]}] * 3_400)), (f"junk, {CAP - 10:,} arrays", _junk(CAP - 10)),
            (f"junk, {MAX_JSON_CONTAINERS - 10:,} arrays", _junk(MAX_JSON_CONTAINERS - 10))):
        times = []
        for _ in range(args.repeat):
            started = time.thread_time()
            decode(body)
            times.append(time.thread_time() - started)
        print(f"  {name:26s} {len(body) / 1e6:.2f} MB {json_containers(body):7d} opened  {_ms(times)}")


if __name__ == "__main__":
    main()
