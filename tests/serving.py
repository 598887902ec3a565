"""Serving in this process: an ASGI app served by uvicorn behind the connection-level protocol `pluralign serve`
runs (`training.commands.serve.timed_http_protocol`), on a loopback port of its own, on either of uvicorn's parsers;
requests sent on a raw socket before the client's half-close; a running service's generation held back, so that a stream stays silent for as long as a test needs;
`pluralign serve` and `serve-embeddings` run by `training.cli.main` in a test's process, which leave it as they found it."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def timed_server(app, timeout_s: float, max_connections: int | None = None, cors=None, connections=None) -> Iterator[int]:
    """`app` behind `timed_http_protocol(timeout_s, max_connections, connections, cors=cors)` (read deadline `timeout_s`
    seconds, at most `max_connections` connections, None: any; CORS config `cors`; `connections`, a ConnectionCounts,
    counts them), without its lifespan; yields its port once uvicorn has started (30 s at most), and stops it after
    (10 s at most)."""
    import uvicorn

    from training.commands.serve import timed_http_protocol

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    http = timed_http_protocol(timeout_s, max_connections, connections, cors=cors)
    server = uvicorn.Server(uvicorn.Config(app, http=http, lifespan="off", log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def on_parser(monkeypatch, http: str) -> None:
    """`timed_http_protocol` (and so `timed_server`) built on uvicorn's `http` parser, "h11" or "httptools", for the
    test `monkeypatch` belongs to."""
    from uvicorn.protocols.http import auto, h11_impl, httptools_impl

    monkeypatch.setattr(auto, "AutoHTTPProtocol", {"h11": h11_impl.H11Protocol, "httptools": httptools_impl.HttpToolsProtocol}[http])


def sent_then_half_closed(app, data: bytes, client_timeout_s: float) -> bytes:
    """`data` sent at once on a raw socket to `app` behind `timed_server` (read deadline 30 s), then the client's
    sending side shut (`shutdown(SHUT_WR)`, as `nc -N` and some proxies do); what the client read until the server
    closed the connection. Raises TimeoutError when nothing came for `client_timeout_s` seconds and the connection
    was still open."""
    with timed_server(app, timeout_s=30) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=client_timeout_s) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(4096):  # to the server's close
            answer += chunk
    return answer


@contextlib.contextmanager
def generation_held(rt, keepalive_s: float = 0.05, at_most_s: float = 10.0) -> Iterator[Callable[[], None]]:
    """The generation of the service whose Runtime is `rt` held (a turn of its generator's model taken, as a chat ahead
    of it takes one, and not handed over), with `sse_keepalive_s` set to `keepalive_s`. Yields `release()`, which lets the generation go on (a
    second call does nothing); a timer calls it after `at_most_s` seconds, so that a wait that never sees what should
    release it ends. After: released, the timer stopped, the settings as they were."""
    import msgspec

    settings, turns = rt.settings, rt.generator._turns
    released = threading.Lock()

    def release() -> None:
        if released.acquire(blocking=False):
            turns._give()

    rt.settings = msgspec.structs.replace(settings, sse_keepalive_s=keepalive_s)
    turns._take("held by the test")
    timer = threading.Timer(at_most_s, release)
    timer.start()
    try:
        yield release
    finally:
        release()
        timer.cancel()
        rt.settings = settings


@contextlib.contextmanager
def adapter_generation_held(rt, adapter: str, at_most_s: float = 60.0) -> Iterator[tuple[threading.Event, threading.Event]]:
    """A chat of the service whose Runtime is `rt` generating with `adapter` held inside its generation (the adapter in
    use, as a long answer of a real model holds it; the tiny model's answers end at once). Yields (generating,
    proceed): `generating` is set once such a chat is inside, and it goes on once the test sets `proceed` (set after
    `at_most_s` seconds at the latest, failing the chat's thread). After: proceed set, the generator's own
    `generation` back. Other adapters' generations are not held."""
    use = rt.generator._use
    generation, generating, proceed = use.generation, threading.Event(), threading.Event()
    own = "generation" in vars(use)

    @contextlib.contextmanager
    def held(name):
        with generation(name):
            if name == adapter:
                generating.set()
                assert proceed.wait(at_most_s), "the test never let the chat end"
            yield

    use.generation = held
    try:
        yield generating, proceed
    finally:
        proceed.set()
        if own:
            use.generation = generation
        else:
            del use.generation


@contextlib.contextmanager
def refit_held(tenant: str, user_id: str, at_most_s: float = 60.0) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The refits of user `user_id` of `tenant` held inside (`service.users.services._refit`, which a stated-preferences
    change, a profile read and a background refit call holding the user's lock), as a slow refit holds that lock. Yields
    (refitting, proceed): `refitting` is set once such a refit is inside, and it goes on once the test sets `proceed`
    (set after `at_most_s` seconds at the latest, failing the refit's thread). After: proceed set, `_refit` back. Other
    users' refits are not held."""
    from service.users import services

    refit, refitting, proceed = services._refit, threading.Event(), threading.Event()

    def held(rt, tenant_of: str, user_of: str, *args, **kwargs):
        if (tenant_of, user_of) == (tenant, user_id):
            refitting.set()
            assert proceed.wait(at_most_s), "the test never let the refit end"
        return refit(rt, tenant_of, user_of, *args, **kwargs)

    services._refit = held
    try:
        yield refitting, proceed
    finally:
        proceed.set()
        services._refit = refit


LIBRARY_THREADS = frozenset({"LanceDBBackgroundEventLoop", "tqdm_monitor"})  # one a process, begun at a library's first use


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]


@contextlib.contextmanager
def left_as_found() -> Iterator[None]:
    """Around `training.cli.main(["serve" or "serve-embeddings", ...])` in a test's process. What a real process sets
    for its whole life is put back after: the umask, the data folder's lock (`serve._HELD`), and the logging set up
    (`setup_logging`, `configure_logging`'s formatter and filter on the root's handlers, uvicorn's config, and the
    app's Litestar `LoggingConfig`, which replaces the root's handlers with a queue handler whose thread writes to
    the stderr of the moment: a test's `capsys` stream, closed once that test ended, so that a later test's INFO line
    printed `--- Logging error ---`); its queue thread is stopped. What the serve undoes itself is checked: its
    signal handlers put back, and no thread it began still running (but a library's, begun at its first use)."""
    from training.commands import serve

    loggers = {x: (x.handlers[:], x.level, x.propagate, x.disabled, x.filters[:]) for x in _loggers()}
    handlers = {h: (h.formatter, h.filters[:], h.level) for x in loggers for h in x.handlers}
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    threads = set(threading.enumerate())
    umask, held = os.umask(0o022), len(serve._HELD)
    try:
        yield
    finally:
        os.umask(umask)
        for fd in serve._HELD[held:]:  # the data folder's lock, held for the life of a real process
            os.close(fd)
        del serve._HELD[held:]
        added = {h for x in _loggers() for h in x.handlers} - handlers.keys()
        for x in _loggers():
            x.handlers[:], level, x.propagate, x.disabled, x.filters[:] = loggers.get(x, ([], logging.NOTSET, True, False, []))
            x.setLevel(level)  # (and the loggers' cached levels dropped)
        for h, (formatter, filters, level) in handlers.items():
            h.formatter, h.filters[:] = formatter, filters
            h.setLevel(level)
        for h in added:
            if listener := getattr(h, "listener", None):  # Litestar's `QueueListenerHandler`: its thread, stopped at exit
                listener.stop()
                atexit.unregister(listener.stop)
            h.close()
    assert {s: signal.getsignal(s) for s in signals} == signals
    begun = [t for t in threading.enumerate() if t not in threads and t.name not in LIBRARY_THREADS]
    for thread in begun:  # one told to end (the refit thread, once idle) may not have yet
        thread.join(timeout=10)
    assert [t.name for t in begun if t.is_alive()] == []


def server_not_run(monkeypatch) -> dict:
    """`training.commands.serve.serve_until_stopped`'s uvicorn server, for the test `monkeypatch` belongs to, built and
    not run (no port, no signal handlers of its own, no model served): the dict returned gets the `uvicorn.Config` it
    was given as "config", for a test of the wiring (the protocol class and its settings, host and port)."""
    from training.commands import serve

    built: dict = {}

    class NotRun:
        started = True

        def __init__(self, config, **_):
            built["config"] = config

        def handle_exit(self, sig, frame) -> None:
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr(serve, "stopping_server", lambda: NotRun)
    return built
