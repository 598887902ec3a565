"""A stand-in for `pluralign.policy.process._serve` that loads no model: it speaks the child's side of the pipe as
`FAKE_GENERATION_CHILD` (read as it starts) says, and dies where a real child is killed (the OOM killer), so the parent's
handling of a child gone during a call or while loading runs in well under a second instead of seconds of torch's
imports per child. Imported by the spawned child by name: keep it free of heavy imports; it reads requests with the
library's objects stubbed (`_recv`), as `conn.recv()` would import them, and torch with them."""

from __future__ import annotations

import io
import os
import pickle


class _Stub:
    """What a request's objects of the library (a `Sampling`) are read as here: unpickled as they are, they imported
    torch and transformers into this child, ~2.4 CPU-s a child (reaped into the test that started it)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


class _Light(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return _Stub if module.split(".")[0] in ("pluralign", "torch", "transformers") else super().find_class(module, name)


def _recv(conn):
    """A request read as `conn.recv()` reads it, but for the library's objects in it (`_Stub`)."""
    return _Light(io.BytesIO(conn.recv_bytes())).load()


def serve(conn, folder: str, model_id: str | None) -> None:
    """"dies-loading": exits before its "ready"; "dies-after-a-piece": ready, then the first call's "began" and one
    piece of text, then it exits (code 9, as killed) with the call in progress; "holds-adapters": `_hold_adapters`."""
    mode = os.environ.get("FAKE_GENERATION_CHILD", "")
    if mode == "dies-loading":
        os._exit(9)
    conn.send(("ready", (2048, True)))
    if mode == "holds-adapters":
        return _hold_adapters(conn)
    _op, _args, call, _lane, _cancelled = _recv(conn)
    conn.send(("began", None, call))
    conn.send(("piece", "Hel", call))
    os._exit(9)


def _hold_adapters(conn) -> None:
    """Serves calls one after the other until the pipe closes: "load_adapter" and "drop_adapter" keep the set of
    adapter names this child holds, and "generate" answers with that set, sorted (what a new child was given)."""
    held: set[str] = set()
    while True:
        try:
            op, args, call, _lane, _cancelled = _recv(conn)
        except (EOFError, OSError):
            return
        conn.send(("began", None, call))
        if op == "load_adapter":
            held.add(args[0])
        elif op == "drop_adapter":
            held.discard(args[0])
        conn.send(("ok", sorted(held) if op == "generate" else None, call))
