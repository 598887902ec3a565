"""A stand-in for `pluralign.policy.process._serve` that loads no model: it speaks the child's side of the pipe as
`FAKE_GENERATION_CHILD` (read as it starts) says, and dies where a real child is killed (the OOM killer), so the parent's
handling of a child gone during a call or while loading runs in well under a second instead of seconds of torch's
imports per child. Imported by the spawned child by name: keep it free of heavy imports."""

from __future__ import annotations

import os


def serve(conn, folder: str, model_id: str | None) -> None:
    """"dies-loading": exits before its "ready"; "dies-after-a-piece": ready, then the first call's "began" and one
    piece of text, then it exits (code 9, as killed) with the call in progress; "holds-adapters": `_hold_adapters`."""
    mode = os.environ.get("FAKE_GENERATION_CHILD", "")
    if mode == "dies-loading":
        os._exit(9)
    conn.send(("ready", (2048, True)))
    if mode == "holds-adapters":
        return _hold_adapters(conn)
    _op, _args, call, _lane, _cancelled = conn.recv()
    conn.send(("began", None, call))
    conn.send(("piece", "Hel", call))
    os._exit(9)


def _hold_adapters(conn) -> None:
    """Serves calls one after the other until the pipe closes: "load_adapter" and "drop_adapter" keep the set of
    adapter names this child holds, and "generate" answers with that set, sorted (what a new child was given)."""
    held: set[str] = set()
    while True:
        try:
            op, args, call, _lane, _cancelled = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(("began", None, call))
        if op == "load_adapter":
            held.add(args[0])
        elif op == "drop_adapter":
            held.discard(args[0])
        conn.send(("ok", sorted(held) if op == "generate" else None, call))
