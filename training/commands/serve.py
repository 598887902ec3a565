"""`pluralign serve`: the HTTP service on embedded defaults.

    pluralign serve --host 127.0.0.1 --port 8000
    pluralign serve --data-dir /srv/pluralign --port 8000
    PORT=9000 pluralign serve --host 0.0.0.0      # without --port: $PORT when set, else 8000

Settings come from PLURALIGN_* variables (PLURALIGN_DATA_DIR, default ./data; --data-dir wins over it,
as for `pluralign keys`) or a TOML file named by PLURALIGN_CONFIG. At first start, once the data
folder has been read and the models loaded, a development API key is issued for tenant `default`,
printed once, and stored hashed in the data folder; a data folder the service cannot use is an
error first, and no key is issued. A start that fails (a bad setting, a damaged file, Ctrl-C or SIGTERM
while the models load: exit 130 or 143) prints one line `pluralign: error: ...` naming the setting or file
(or the signal), and removes what it had created in the data folder. Once it serves, SIGTERM or Ctrl-C
stops it gracefully: exit 0, or 4 when its graceful wait cut requests off. GET /health answers once the models are loaded.

Our own code where the library has none: uvicorn (0.54) has no deadline for a request to arrive
(its `timeout_keep_alive` covers only a connection idle between requests; the request-start and
request-complete timeouts of uvicorn issue #157 were never built, and ASGI middleware runs only once a
request is parsed), so `timed_http_protocol` subclasses the protocol uvicorn picks to add one
(PLURALIGN_REQUEST_READ_TIMEOUT_S). Measured before it: a connection sending a byte now and then stayed
open 200 s and more, until the client gave up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import struct
import sys
import termios
from collections import Counter
from collections.abc import Iterable
from functools import partial

from training.common import add_listen_args, check_listen, fit_open_files, host_port, listen_port


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP service (uvicorn)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_listen_args(parser, default_port=8000, port_variable="PORT")
    parser.add_argument("--data-dir", default=None, help="the service's data folder (default PLURALIGN_DATA_DIR or ./data)")
    parser.set_defaults(func=run, settings_data_dir=True)  # its --data-dir is the setting data_dir (training.cli._run)


def run(args: argparse.Namespace) -> int:
    args.port, port_named = listen_port(args.port, "PORT", 8000)  # PORT: what the image's liveness probes read
    check_listen(args.host, args.port, port_named)  # before a data folder, a key, a model or the service's imports (seconds)
    from service.settings import Settings, check_keys_file
    from training.common import check_writable, setup_logging

    setup_logging()
    os.umask(0o077)  # users' data, keys and jobs: readable by this account only (files 0600, folders 0700)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)  # no progress bar per request
    # the settings, the data folder and the models' names, before the service's imports (torch, lancedb:
    # seconds), a model loads (a minute) or a key is issued: a bad value, a file or a place this account
    # cannot write as data folder is one line naming the option or setting; a damaged file in it names the file
    settings = Settings.load(data_dir=args.data_dir)
    max_connections = fit_open_files(settings.max_connections)  # the limit in force (unset: fits the open-files limit)
    option = "--data-dir" if args.data_dir is not None else "PLURALIGN_DATA_DIR (setting data_dir)"
    check_writable(option, str(settings.data_path))
    check_keys_file(settings)  # before anything is made: an unmounted shared volume is not a fresh key file
    from pluralign.files import group_shared

    # an fsGroup volume: the group's other accounts (vLLM, a backup) read it. A data folder not made yet is
    # made in the folder above it, whose setgid it inherits: that folder decides
    folder = settings.data_path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if group_shared(folder):
        os.umask(0o027)  # files 0640, folders 0750
    settings.check_models()  # an unknown encoder or generator: refused before litestar, torch and lancedb load
    from service.requestid import configure_logging

    configure_logging(settings.log_format)  # PLURALIGN_LOG_FORMAT; each request's lines carry its X-Request-Id
    check_runs_here(settings)
    from pluralign.store.failures import OBJECT_STORE_PROBLEMS, StoreUnavailable
    from pluralign.store.location import is_object_store, reach

    try:  # an object store reached before the data folder is made and the models load (tens of seconds): a wrong
        reach(settings.lancedb_uri, settings.storage_options)  # bucket, endpoint or key is told in a second or two
    except StoreUnavailable as exc:
        print(f"pluralign: error: {store_problem(settings, exc)}", file=sys.stderr, flush=True)
        return 3
    # a start that fails part way (a damaged checkpoint once the tables are open, a model that will
    # not load, Ctrl-C) removes what it created: the folder is left as it was found
    # not a store other replicas share (`replicas` > 1): what appeared there meanwhile may be theirs
    local_store = [] if is_object_store(settings.lancedb_uri) or settings.replicas > 1 else [settings.lancedb_uri]
    made = hold_data_folder(settings.data_path, option)  # before anything in it is read, put back or removed
    try:
        app = start(settings, local_store)
    except StoreUnavailable as exc:  # the object store down, refusing the keys, without the bucket: not a bad setting's 2
        remove_if_empty(settings.data_path, made)
        if exc.problem not in OBJECT_STORE_PROBLEMS:
            raise  # a local table damaged, a full or read-only disk: main's one line naming the table, exit 2 (docs/operations.md)
        print(f"pluralign: error: {store_problem(settings, exc)}", file=sys.stderr, flush=True)
        return 3
    except BaseException:
        remove_if_empty(settings.data_path, made)  # a start that fails leaves no folder it made (`start`: its contents)
        raise
    if not app.state.runtime.rewards.trained:
        print(untrained_line(settings), file=sys.stderr, flush=True)
    from service.app import cut_running, stop_taking_work

    connections = ConnectionCounts(max_connections)
    if settings.request_read_timeout_s:  # the connections the protocol counts: /metrics shows them (`scrape_state`)
        app.state.connections = connections
    started, requests = serve_until_stopped(app, args, json_logs=settings.log_format == "json", own_access_log=True, on_stop=partial(stop_taking_work, app),
                                            on_grace_over=partial(cut_running, app), drain_s=settings.stop_drain_s,
                                            on_drain=partial(setattr, app.state, "draining"), request_read_timeout_s=settings.request_read_timeout_s,
                                            max_connections=max_connections, connections=connections)
    if not started:
        return 3  # uvicorn's STARTUP_FAILURE (a lifespan startup that failed, a port taken meanwhile)
    return how_it_stopped(app.state.runtime, requests)


_HELD: list[int] = []  # the data folder's descriptor, locked for the life of the process (`hold_data_folder`)


def hold_data_folder(folder, option: str) -> bool:
    """Lock the data folder `folder` (an exclusive `flock` on the folder itself, no file written in it)
    for the life of this process, made first if missing; returns whether it was made. Two `pluralign
    serve` on one data folder are not supported (each removes the other's staged promotion copies at its
    start, writes the same feedback log and job records): a second one is a ValueError naming the folder
    (as `option` gives it) and the process holding it. The OS lets go of the lock when the process ends,
    a crash or kill -9 included. A folder that takes no flock (an NFS volume: EBADF; a FUSE one) is served
    unlocked, with a warning. Replicas on a shared store each have a data folder of their own
    (deploy/README.md), so this holds on an object store too; the store itself is not locked."""
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _lock_data_folder(folder, option, made)
    except BaseException:  # refused, or SIGTERM or Ctrl-C (`training.cli`) before it was held: no folder left that it made
        remove_if_empty(folder, made)
        raise


def _lock_data_folder(folder, option: str, made: bool) -> bool:
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by the jobs' processes (O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{option} {folder}: in use by another `pluralign serve` ({lock_holder(folder)}); two on one "
                         "data folder remove each other's staged promotion copies: stop that one first, or give this one a "
                         "data folder of its own (replicas on a shared store each have one)") from None
    except OSError as exc:  # NFS (EFS): flock is a byte-range lock there, which a folder opened read-only cannot take
        os.close(fd)
        logging.getLogger("pluralign.serve").warning(
            "%s %s: not locked (flock: %s; an NFS or FUSE volume): a second `pluralign serve` on it is not refused, "
            "so make sure only one runs", option, folder, exc.strerror or exc)
        return made
    except BaseException:  # SIGTERM or Ctrl-C while it locks
        os.close(fd)
        raise
    _HELD.append(fd)
    return made


def lock_holder(folder) -> str:
    """Which process holds `folder`'s flock, as /proc/locks (Linux) names it: `pid N: its command line`."""
    st = os.stat(folder)
    node = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return "its process could not be found"
    for line in lines:
        fields = line.split()
        if "->" not in fields and "FLOCK" in fields and node in fields:
            pid = fields[fields.index(node) - 1]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    command = " ".join(cmdline.read().replace(b"\0", b" ").decode(errors="replace").split())  # one line
            except OSError:
                command = ""
            return f"pid {pid}" + (f": {command[:200]}" if command else "")
    return "its process could not be found"


def remove_if_empty(folder, made: bool) -> None:
    if made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_runs_here(settings) -> None:
    """What a start writes outside the data folder, checked before the imports and the models (a
    container with a read-only root, no writable HOME, an arbitrary uid): a ValueError naming the
    variable and the folder. So is a PLURALIGN_RAY_ADDRESS (or, unset, Ray's own RAY_ADDRESS) where no Ray cluster
    answers (`check_ray_address`). The embedding cache the PAL bootstrap and the jobs fill is the data
    folder's own (`cache/`) unless PLURALIGN_CACHE_DIR names another (the jobs inherit it)."""
    from pluralign.embed.models import check_model_cache
    from training.common import check_temp_dir, check_writable

    check_temp_dir()  # torch and Lance need one; without it torch's import fails
    check_model_cache(settings.encoder, settings.generator)
    if settings.job_runner == "ray":  # before minutes of models: not after, in a traceback
        from training.jobs.ray_runner import check_ray_address, ray_address_named

        address, variable = ray_address_named(settings.ray_address)
        try:
            if address:
                check_ray_address(address, variable=variable)
        except ConnectionError as exc:
            raise ValueError(str(exc)) from None
    if os.environ.get("PLURALIGN_CACHE_DIR"):
        check_writable("PLURALIGN_CACHE_DIR", os.environ["PLURALIGN_CACHE_DIR"])
    else:
        os.environ["PLURALIGN_CACHE_DIR"] = str(settings.data_path.absolute() / "cache")


def start(settings, local_store: list[str]):
    """The app, built; a key printed at the first start. What a failed start created is removed."""
    from pluralign.files import left_as_found
    from service.auth import KeyRing
    from service.promoted import restore_promoted

    restore_promoted(settings)  # outside the undoing below: a failed start must not remove what it put back
    from service.calibration.pools import adopt_own_pools
    from service.settings import check_calibration_pools_dir

    # likewise the calibration pools its own data folder kept, moved into PLURALIGN_CALIBRATION_POOLS_DIR (before what
    # undoes a failed start, which would remove a folder made for them in the data folder with them); the setting checked first, so that the move
    # never makes the folder of a volume not mounted
    check_calibration_pools_dir(settings)
    adopt_own_pools(settings)
    # what other commands write into the data folder while it starts (minutes, the models loading), under locks of their
    # own, is theirs: a key `pluralign keys create` printed once, an adapter `pluralign train adapter` saved. What the start
    # itself writes there is the key file only at its end, once it can serve (the key it prints stays good too)
    keys_file = settings.keys_path
    others = (keys_file, keys_file.with_name(keys_file.name + ".lock"), settings.adapters_path)
    from service.settings import ReplicasDisagree, StartedAlone

    # refused as alone on a store replicas write, or set up unlike them: their tables, made while this start loaded,
    # are not its to undo
    with left_as_found(settings.data_path, keep=others), left_as_found(*local_store, unless=(StartedAlone, ReplicasDisagree)):
        settings.data_path.mkdir(parents=True, exist_ok=True)
        keys = KeyRing(keys_file)  # a damaged key file: an error naming it
        from service.admin.paths import check_jobs_folder

        check_jobs_folder(settings)  # a damaged promotions.json: named before the service's imports (seconds)
        from service.startup_files import check_startup_files

        # a damaged checkpoint description or FSPO adapter: named before the store's and the app's imports (lancedb,
        # litestar's app: ~2.5 s of CPU, which create_app would spend before finding them)
        check_startup_files(settings)
        from service.app import create_app

        # create_app reads promotions.json, the description and the adapter again (for callers that build the app alone;
        # the second read of a tiny adapter: 0.6 ms of CPU), then loads the models
        app = create_app(settings)
        print_development_key(keys)  # only once the service can start: a key printed for a service that never ran is lost
    return app


def print_development_key(keys) -> None:
    """A first start's key: issued and printed (stderr) when the key file `keys` (a `service.auth.KeyRing`) holds none,
    found so under its lock (`KeyRing.issue_first`: replicas starting together on one shared file print one)."""
    key = keys.issue_first("default", name="development key")
    if key is not None:
        print(f"development API key for tenant `default` (shown once, stored hashed): {key}", file=sys.stderr, flush=True)


def untrained_line(settings) -> str:
    """The one loud start line of a service serving an untrained population model (no persona data to
    bootstrap a PAL checkpoint from): what it means and the two ways to train one."""
    shared = settings.shared_data_path
    where = "PLURALIGN_SHARED_DATA" if settings.shared_data else "../shared/data beside the checkout; PLURALIGN_SHARED_DATA overrides it"
    return (f"pluralign: warning: the population reward model is UNTRAINED: no persona data at {shared.absolute()} ({where}) to "
            f"train it from: its prototypes are random, so reranking and users' fitted weights mean nothing yet. "
            f"To train it: put the shared data there (a folder holding anthropic_persona/) or set PLURALIGN_SHARED_DATA to it "
            f"and restart (a start that finds none trains a PAL checkpoint into {settings.pal_path}, about a minute); or run "
            f"`pluralign train pal --protocol persona --groups 4 --data-dir DATA --out {settings.pal_path}` and restart")


STORE_SETTINGS = {  # what an operator checks for each object-store problem at start
    "unreachable": "PLURALIGN_STORE_ENDPOINT (setting store_endpoint)",
    "denied": "PLURALIGN_STORE_ACCESS_KEY_ID and PLURALIGN_STORE_SECRET_ACCESS_KEY (settings store_access_key_id, store_secret_access_key)",
    "no-bucket": "PLURALIGN_STORE_URI (setting store_uri)",
    "wrong-region": "PLURALIGN_STORE_REGION (setting store_region)",
}
STORE_SETTINGS["no-credentials"] = STORE_SETTINGS["denied"]
STORE_SETTINGS["commit-store"] = STORE_SETTINGS["no-bucket"]  # its `ddbTableName`; `commit_table` adds the table and endpoint
MAX_DETAIL = 400  # characters of the object store's own words a failed start repeats (the log line is one line)


def store_problem(settings, exc) -> str:
    """One line for a start whose store cannot be opened: the setting to check first, the store, what is
    wrong, and the cause's words (no credentials: `pluralign.store.failures.scrub`)."""
    from pluralign.store.failures import PROBLEMS, scrub, secrets_of
    from pluralign.urls import redacted

    where = redacted(settings.lancedb_uri)  # a URI's own credentials (the detail's are scrubbed already)
    setting = STORE_SETTINGS.get(exc.problem, "PLURALIGN_STORE_URI (setting store_uri)")
    if exc.problem == "unreachable":
        endpoint = scrub(settings.store_endpoint or "", secrets_of(settings.storage_options))  # a password in its URL
        setting += f" = {endpoint}" if endpoint else " (unset: AWS's own endpoint)"
        setting += f", within PLURALIGN_STORE_TIMEOUT_S = {settings.store_timeout_s:g} s a request"
    elif exc.problem == "wrong-region":
        setting += f" = {settings.store_region}" if settings.store_region else " (unset: AWS_REGION, or us-east-1)"
    elif exc.problem == "commit-store":
        setting += commit_table(settings)
    detail = exc.detail if len(exc.detail) <= MAX_DETAIL else exc.detail[:MAX_DETAIL] + "..."
    return f"{setting}: the store {where} cannot be {exc.action}: {PROBLEMS[exc.problem]} ({detail})"


def commit_table(settings) -> str:
    """What a start names of an `s3+ddb://...?ddbTableName=T` store's DynamoDB commit store: the table, where Lance's AWS
    SDK reaches DynamoDB (`DYNAMODB_ENDPOINT`, Lance's; unset: AWS's own) and the region it looks for the table in, the
    store's (`store_region`: Lance reaches DynamoDB with the store's region and keys, not its endpoint)."""
    from urllib.parse import parse_qs, urlsplit

    table = parse_qs(urlsplit(settings.lancedb_uri).query).get("ddbTableName", ["(none given)"])[0]
    endpoint = os.environ.get("DYNAMODB_ENDPOINT") or "(unset: AWS's own)"
    region = settings.store_region or "(unset: AWS_REGION or the AWS profile's)"
    return f": its DynamoDB commit table `{table}` (ddbTableName), at DYNAMODB_ENDPOINT = {endpoint}, in region {region} (PLURALIGN_STORE_REGION)"


def serve_until_stopped(app, args: argparse.Namespace, on_stop, on_grace_over=None, json_logs: bool = False,
                        own_access_log: bool = False, drain_s: float = 0.0, on_drain=None,
                        request_read_timeout_s: float | None = None, max_connections: int | None = None,
                        connections: ConnectionCounts | None = None, on_started=None) -> tuple[bool, CancelledRequests]:
    """Serve `app` with uvicorn on `args.host`/`args.port` until SIGTERM or Ctrl-C, telling it it stops
    (`on_stop`) and that the graceful wait is nearly over (`on_grace_over`). Returns whether it had
    started, and the requests its graceful wait cancelled. With `own_access_log` uvicorn's access lines are
    left out (they show raw paths, user ids in them; the app writes its own, `PLURALIGN_ACCESS_LOG`); with `json_logs`
    its other lines go to the root logger's handler, so every line on stderr is one JSON object. With `drain_s`,
    it keeps listening that long once told to stop, `on_drain(True)` first (the app then answers every request 503).
    With `request_read_timeout_s`, a request must arrive whole that soon, and with `max_connections` (it needs
    `request_read_timeout_s`), a connection beyond that many open is answered 503 (`timed_http_protocol`), and
    `connections`, when given, counts them (open, refused). `on_started(urls)` is called once it listens, with the base
    URL of each address it listens on (`listening_urls`: the port bound, the free one `--port 0` was given on each)."""
    import uvicorn

    requests = CancelledRequests(app)
    config = uvicorn.Config(requests, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=GRACE_S,
                            access_log=not own_access_log, **({"log_config": None} if json_logs else {}),
                            **({"http": timed_http_protocol(request_read_timeout_s, max_connections, connections, cors=getattr(app, "cors_config", None))}
                               if request_read_timeout_s else {}))
    # a SIGINT this process was started ignoring (a script's `pluralign serve &` or `nohup pluralign serve &`: a shell
    # without job control starts background commands so, and the script's Ctrl-C reaches them) stays ignored while it
    # serves, as during its start (`training.cli.main`); uvicorn stopped on it regardless. SIGTERM always stops it
    ignored = frozenset({signal.SIGINT}) if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else frozenset()
    server = stopping_server()(config, on_stop=on_stop, on_grace_over=on_grace_over or (lambda: None), drain_s=drain_s,
                               on_drain=on_drain or (lambda draining: None), ignored=ignored, on_started=on_started or (lambda urls: None))
    # uvicorn, once stopped, raises the signal it caught again for the handler it found (so that a
    # program embedding it learns of it): left to the default, SIGTERM would end the process by the
    # signal (status 143: "Error" to Kubernetes and Docker, though the stop was clean). Its own handler,
    # found there instead, takes it as the stop it already made; the status says how the stop went.
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.suppress(KeyboardInterrupt):  # as `uvicorn.run`
            server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return server.started, requests


def how_it_stopped(rt, requests: CancelledRequests) -> int:
    """0 when every request in flight was answered and no chat or DELETE is left running; else CUT_OFF,
    logged. The scheduler's threads still running cut-off work (a DELETE waiting for the store's lease, a
    chat's prefill) do not hold the process's exit (they are daemon threads), as the signal would not have."""
    cut = rt.chats.cut_off + requests.cancelled
    running = {"chat(s)": rt.scheduler.stats()["running"], "DELETE(s)": rt.deletes.stats()["running"]}
    if not cut and not any(running.values()):
        return 0
    log = logging.getLogger("pluralign.service")
    log.error("stopped with %d request(s) cut off (%d chat(s) stopped a second before the %d s graceful wait ended, %d request(s) "
              "cancelled by its end)%s", cut, rt.chats.cut_off, GRACE_S, requests.cancelled,
              "".join(f"; {n} {what} still running left unfinished" for what, n in running.items() if n))
    if running["DELETE(s)"]:
        log.error("a DELETE left unfinished is finished from the journal (deletes-in-progress/) at the next start")
    return CUT_OFF


GRACE_S = 5  # seconds uvicorn waits for the requests in flight once told to stop (`timeout_graceful_shutdown`)
CUT_EARLY_S = 1.0  # chats still generating are stopped this long before it ends, so their answers go out whole
CUT_OFF = 4  # exit status: stopped, but the graceful wait cut requests off


class CancelledRequests:
    """The ASGI app, counting the HTTP requests cancelled in it: uvicorn cancels those still running when
    its graceful wait runs out (and answers them 500, or closes a response under way)."""

    def __init__(self, app):
        self.app, self.cancelled = app, 0

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] == "http":
                self.cancelled += 1
            raise


class ConnectionCounts:
    """The connections of a server `timed_http_protocol` serves, as /metrics shows them
    (`service.system.controllers.scrape_state` reads `app.state.connections` at scrape time)."""

    def __init__(self, limit: int | None):
        self.limit = limit  # PLURALIGN_MAX_CONNECTIONS in force; None: unbounded
        self.refused = 0  # connections answered 503 over `limit` since start (`TimedRequests.refuse`)
        self.held: set = set()  # uvicorn's set of the server's open connections, once one has opened

    @property
    def open(self) -> int:
        """Connections open now (idle, a request arriving, answered, streaming), refused ones not among them."""
        return len(self.held)


def timed_http_protocol(timeout_s: float, max_connections: int | None = None, connections: ConnectionCounts | None = None,
                        cors=None):
    """uvicorn's HTTP protocol (httptools' where installed, else h11's: the one `http="auto"` picks), with
    a deadline for each request to arrive whole: its headers and body within `timeout_s` of the
    connection's opening, or of the first byte of a later request on it. A client still sending then gets
    a 408 (`code: request_timeout`) and the connection ends, half closed first (`linger`: what the client still
    sends is dropped until it closes, REFUSED_LINGER_S at most); one that sent nothing is closed, no answer; a
    request that arrived in time runs as long as it needs. uvicorn's own keep-alive timer covers only a
    connection idle after a response, so a client that never finished a request (slowloris: a byte now
    and then, or nothing) held it open, and a file descriptor, for good.

    With `max_connections` (PLURALIGN_MAX_CONNECTIONS), a connection opened while that many are open (idle
    ones, ones whose request is arriving, streaming chats) is answered 503 with Retry-After at once
    (`code: too_many_connections`), its side closed, what it still sends read and dropped, and it is closed
    when the client closes or REFUSED_LINGER_S later (REFUSED_LINGERING of them at most, `make_room`): thousands of
    idle connections, each within the read deadline, no longer take every file descriptor (measured:
    benchmarks/connections.py). uvicorn's `limit_concurrency` cannot: it is checked only once a request's
    headers have arrived, so a connection sending nothing is accepted and kept (limit 100, 1,000 idle
    connections: 1,000 held), and its 503 is plain text without Retry-After. `connections` counts what it
    holds and refuses (a new ConnectionCounts when not given).

    With `cors` (the app's Litestar CORSConfig, setting cors_origins), each answer written here carries the CORS
    headers the app gives a listed origin (`service.web_headers.cors_answer_headers`), read from the request's
    `Origin`: a page on that origin reads the 408, 431, 400 or 503 and its Retry-After, not an opaque network error.
    A connection over the limit is then answered once its request's head has come (its
    Origin read; REFUSED_LINGER_S at most, then without it), not at once.

    A connection whose client reads none of what its transport holds for UNREAD_ABORT_S (closed after its answers,
    whole answers waiting to be read, or a stream part way; not an export part way, whose route bounds its wait) is aborted (`TimedRequests.watch_the_unread`): asyncio and uvicorn kept it, counted
    against `max_connections`, until its client read or went."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type("TimedProtocol", (TimedRequests, AutoHTTPProtocol), {
        "timeout_s": timeout_s, "max_connections": max_connections, "refusal": over_limit_answer(max_connections or 0),
        "late": {reading: late_answer(timeout_s, reading) for reading in ("headers", "body")}, "refusing": {},
        "counts": connections if connections is not None else ConnectionCounts(max_connections), "cors": cors})


MAX_URL_BYTES = 65535  # httptools' limit on a request's URL (its parser keeps offsets in 16 bits)
# a request's line and headers: httptools keeps every header it has read until the head ends, with no limit of its own
# (300 MB of headers sent to one connection in 0.6 s, before any key is checked, grew the service by 270 MB, 143 MB
# of it kept once closed); a URL at its longest and 64 KiB of headers. h11 refuses a head past 16 KiB itself (a 400)
MAX_HEAD_BYTES = MAX_URL_BYTES + 65536


def stamped(answer: bytes, default_headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """`answer` (a whole HTTP answer, as bytes) with `default_headers` after its status line: the (name, value)
    pairs uvicorn writes first on every answer it sends (its `server_state.default_headers`: `Date`, refreshed
    each second, and any configured). The answers `TimedRequests` writes straight to the connection (the
    parser's 400, the 408, the 503 over the limit) go around uvicorn's cycle, which adds them: they had no `Date`."""
    status_line, rest = answer.split(b"\r\n", 1)
    return status_line + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in default_headers) + rest


def transfer_coding_in(head: bytes) -> tuple[int, str] | None:
    """What is wrong with the `Transfer-Encoding` lines of the request head that begins `head` (bytes no parser has read
    whole: the read the parser refused), as `service.strict.transfer_coding_problem` says, or in an HTTP/1.0 request
    any at all (HTTP10_TRANSFER_CODING); None without any, or with `chunked` alone in HTTP/1.1."""
    from service.strict import transfer_coding_problem

    request_line, *fields = head.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    lines = []
    for line in fields:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"transfer-encoding":
            lines.append(value.decode("latin-1"))
    if lines and request_line.rstrip().endswith(b" HTTP/1.0"):
        return 400, HTTP10_TRANSFER_CODING
    return transfer_coding_problem(lines) if lines else None


STATUS_LINES = {400: b"400 Bad Request", 415: b"415 Unsupported Media Type"}
# a request httptools (llhttp) refuses for both framings, and one whose `Transfer-Encoding` value it refuses as it reads
# it (never given whole)
LLHTTP_BOTH_LENGTHS = ("sent with `Content-Length` too: a body is framed by one of them, and a request with both is "
                       "refused (RFC 9112 6.3): send it chunked or with Content-Length")
LLHTTP_TRANSFER_CODING = ("a coding after `chunked`, or `chunked` twice: `chunked` is the last transfer coding, applied once "
                          "(RFC 9112 6.1, 6.3): send the body chunked once, or with Content-Length")
# an HTTP/1.0 request sent with `Transfer-Encoding`: HTTP/1.0 has no transfer codings, so its framing is faulty whatever
# follows (RFC 9112 6.1: a server MUST treat it so, and close the connection)
HTTP10_TRANSFER_CODING = ("sent in an HTTP/1.0 request, which has no chunked framing (RFC 9112 6.1: its framing is faulty, "
                          "and the connection is closed): send the body with Content-Length, or send the request as HTTP/1.1")


def http10_with_transfer_coding(version: bytes | str, names) -> bool:
    """Whether a request of HTTP `version` ("1.0", as h11 and httptools give it) with header `names` (lower-case bytes)
    carries a `Transfer-Encoding` HTTP/1.0 has no framing for. Both parsers read such a body chunked, and uvicorn would serve
    it (a keep-alive connection kept open after it): such a request is refused."""
    return (version.decode() if isinstance(version, bytes) else version) == "1.0" and b"transfer-encoding" in names


def close_delimited(cycle):
    """The `send` of uvicorn's httptools request cycle `cycle`, of an HTTP/1.0 request, that ends an answer of no
    `Content-Length` by closing the connection (uvicorn closes it after any answer to HTTP/1.0) instead of chunking it:
    HTTP/1.0 has no chunked framing (RFC 9112 6.1: a server MUST NOT send `Transfer-Encoding` in answer to it), as h11
    does: chunked, a streamed chat or export would reach an HTTP/1.0 client with the chunk sizes read as part of the
    stream. uvicorn's cycle chunks an answer whose `chunked_encoding` is still None once its head is
    written; set False, the answer's bytes are written as they come against `expected_content_length`, set here to the
    bytes of each piece (the last one's too, so uvicorn's count ends at 0)."""
    send, unsized = cycle.send, []  # unsized: [True] once the answer's head came without a Content-Length

    async def sent(message) -> None:
        if message["type"] == "http.response.start" and not cycle.response_started:
            headers = message.get("headers", [])
            if (b"content-length" not in {name.lower() for name, _ in headers} and cycle.scope["method"] != "HEAD"
                    and message["status"] not in (204, 304)):
                unsized.append(True)
                cycle.chunked_encoding = False
                message = {**message, "headers": [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]}
        elif message["type"] == "http.response.body" and unsized:
            cycle.expected_content_length = len(message.get("body", b""))  # each piece as it comes: closed after
        await send(message)

    return sent


def refuse_framed_twice(h11_next_event, protocol):
    """h11's `Connection.next_event` refusing a request sent with `Transfer-Encoding` and `Content-Length` both (raised as
    h11's own refusals are, so uvicorn answers it with `send_400_response`, naming `Transfer-Encoding`, and parses
    nothing more on the connection), as httptools (llhttp) refuses it. Left to h11, it would read the chunks,
    answer, and keep the connection open: what followed the chunks within the `Content-Length` a proxy in front framed
    the request by was served as a request of its own (request smuggling; RFC 9112 6.3: the server MUST close the
    connection after responding to such a request). A head h11 refuses is kept as `protocol.h11_refused_head` (the bytes
    its buffer began with, the head's first: a request pipelined behind another is parsed once that one is answered,
    outside any read), which `TimedRequests.refused_transfer_coding` reads."""
    import h11

    def next_event():
        head = protocol.conn.trailing_data[0] if protocol.conn.their_state is h11.IDLE else None
        try:
            event = h11_next_event()
        except h11.RemoteProtocolError:
            protocol.h11_refused_head = head
            raise
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}  # h11 gives them lower-cased
            if http10_with_transfer_coding(event.http_version, names):
                protocol.h11_refused_head = head
                raise h11.RemoteProtocolError("Transfer-Encoding in HTTP/1.0")
            if b"transfer-encoding" in names and b"content-length" in names:
                protocol.framed_twice = True
                raise h11.RemoteProtocolError("Transfer-Encoding with Content-Length")
        return event

    return next_event


def unparsable_answer(request_id: str, url_bytes: int = 0, transfer_coding: tuple[int, str] | None = None) -> bytes:
    """The whole HTTP answer, as bytes, of a request the HTTP parser refused: a 400, `Connection: close`,
    `X-Request-Id`, `nosniff`, an error body in OpenAI's shape naming `url` when it is `url_bytes` long,
    past MAX_URL_BYTES (code `invalid_value`); naming `Transfer-Encoding` with the status and problem of
    `transfer_coding` (`transfer_coding_in`: h11 refuses any coding but `chunked` alone, both parsers one after it;
    named as the app names it for httptools, `service.strict.refuse_transfer_coding`);
    else no field (code `invalid_http`)."""
    import msgspec

    status, extra = 400, b""
    if transfer_coding is not None:
        status, problem = transfer_coding
        message, param = f"`Transfer-Encoding`: {problem}", "Transfer-Encoding"
        code = "unsupported_media_type" if status == 415 else "invalid_value"
        extra = b"accept-encoding: identity\r\n" if status == 415 else b""
    elif url_bytes > MAX_URL_BYTES:
        message, param, code = (f"`url`: {url_bytes} bytes; this service reads a URL of at most {MAX_URL_BYTES} bytes "
                                "(send long values in a request body)"), "url", "invalid_value"
    else:
        message, param, code = ("the request is not HTTP/1.1 this service can read (a malformed request line or header, "
                                "or a head too long): check the client, or what is between it and the service"), None, "invalid_http"
    body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code,
                                          "request_id": request_id}})
    return (b"HTTP/1.1 " + STATUS_LINES[status] + b"\r\ncontent-type: application/json\r\nconnection: close\r\n" + extra +
            b"x-request-id: " + request_id.encode() + b"\r\nx-content-type-options: nosniff\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def head_too_large_answer(request_id: str) -> bytes:
    """The whole HTTP answer, as bytes, of a request whose line and headers went past MAX_HEAD_BYTES: a 431,
    `Connection: close`, `X-Request-Id`, `nosniff`, an error body in OpenAI's shape naming `headers`."""
    import msgspec

    message = (f"`headers`: the request line and headers are over {MAX_HEAD_BYTES} bytes, the most this service "
               "reads (send long values in a request body)")
    body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error", "param": "headers",
                                          "code": "headers_too_large", "request_id": request_id}})
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"x-request-id: " + request_id.encode() + b"\r\nx-content-type-options: nosniff\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def late_answer(timeout_s: float, reading: str) -> bytes:
    """The whole HTTP answer, as bytes, of a request whose `reading` ("headers" or "body") had not arrived
    within `timeout_s`: a 408, `Connection: close`, an error body in OpenAI's shape (`code: request_timeout`)."""
    words = (f"the request did not arrive whole within {timeout_s:g} s (PLURALIGN_REQUEST_READ_TIMEOUT_S): "
             f"send it again, at once").encode()
    param = b"null"
    if reading == "body":  # a body sent steadily but too slowly (a slow link) fails the same way again: a smaller one helps
        words, param = words + b" (a body this link cannot send in time: send it in smaller requests)", b'"body"'
    body = b'{"error":{"message":"' + words + b'","type":"invalid_request_error","param":' + param + b',"code":"request_timeout"}}'
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class TimedRequests:
    """What `timed_http_protocol` adds to uvicorn's protocol (the class after this one in its bases, which
    `super()` reaches): the read deadline, and the connection limit. Set by it: `timeout_s`,
    `max_connections`, `refusal` (the over-limit answer), `late` (the 408 by what was arriving), and
    `refusing` (its refused connections not yet closed), `counts` (what /metrics shows of them)."""

    timeout_s: float
    max_connections: int | None
    refusal: bytes
    late: dict[str, bytes]
    refusing: dict  # lingering connection -> its peer's host, oldest first
    counts: ConnectionCounts
    cors: object | None  # the app's CORSConfig (setting cors_origins); None: CORS off
    refused_head: bytearray | None = None  # with `cors`, what a connection refused over the limit sent of its head so far
    deadline: asyncio.TimerHandle | None = None
    parsed = False
    last_answer: bytes | None = None  # the parser's 400, waiting for the answers of requests pipelined before it
    refused = False  # answered for the last time (the 503 over the limit, the parser's 400): what arrives is dropped
    reading = "nothing"  # of the request now arriving: "nothing" yet, its "headers", its "body"; "done": arrived whole
    head_bytes = 0  # of the head of the request arriving, or of its trailers (httptools), counted to MAX_HEAD_BYTES
    # of the head, then of the trailers, of the request being parsed (httptools), as parsed: its URL, its fields' names,
    # values and line ends; counted by read (`head_bytes`), a head that began in the read that ended the request before
    # it was not (the count is reset at that head's end), nor were the bytes of the read that ended a head or trailers
    parsed_bytes = 0
    head_past_the_limit = False  # the parser was stopped at a head or trailers past MAX_HEAD_BYTES (`stop_past_the_limit`)
    body_came = False  # whether the bytes being read held any of a body (httptools' `on_body`)
    half_closed = False  # the client shut its sending side after a whole request (`eof_received`)
    answering = None  # httptools: the request cycle running (its `cycle` is the newest, perhaps queued behind this one)
    framed_twice = False  # h11: the request refused was sent with `Transfer-Encoding` and `Content-Length` both
    refused_http10_coding = False  # httptools: the request refused is HTTP/1.0 with a `Transfer-Encoding` (`on_headers_complete`)
    h11_refused_head: bytes | None = None  # h11: the bytes the head it refused began (`refuse_framed_twice`)
    unread_watch: asyncio.TimerHandle | None = None  # `watch_the_unread`'s next look, while the transport holds bytes
    sent_when_looked = 0  # of the connection's bytes, those the kernel had taken at `watch_the_unread`'s last look

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.transport = CutAnswersAbort(transport, self)  # what each request's cycle is given to write to
        self.counts.held = self.connections  # uvicorn's (the server's) set, the same one each time
        if hasattr(self, "conn"):  # h11: a request framed twice is refused as httptools refuses it (`refuse_framed_twice`)
            self.conn.next_event = refuse_framed_twice(self.conn.next_event, self)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.refuse()
            return
        self.deadline = self.loop.call_later(self.timeout_s, self.timed_out)

    def refuse(self) -> None:
        self.refused = True
        self.counts.refused += 1
        self.connections.discard(self)  # not one of the service's: it goes within REFUSED_LINGER_S
        if self.cors is None:
            self.transport.write(stamped(self.refusal, self.server_state.default_headers))
            self.linger()
            return
        # its answer waits for the head (the Origin it names), holding a lingering slot meanwhile
        if len(self.refusing) >= REFUSED_LINGERING:
            self.make_room()
        self.refused_head = bytearray()
        self.refusing[self] = (self.client or (None,))[0]
        self.deadline = self.loop.call_later(REFUSED_LINGER_S, self.answer_refused)

    def read_refused_head(self, data: bytes) -> None:
        """Bytes of a connection refused over the limit, with CORS on: kept (MAX_ORIGIN_HEAD_BYTES at most) until its
        request's head has ended, which is then answered."""
        head = self.refused_head
        head += data[: MAX_ORIGIN_HEAD_BYTES - len(head)]
        if b"\r\n\r\n" in head or len(head) >= MAX_ORIGIN_HEAD_BYTES:
            self.answer_refused()

    def answer_refused(self) -> None:
        """The 503 of a connection refused over the limit, with the CORS headers of the Origin its head named (none when
        no head came within REFUSED_LINGER_S); then it lingers."""
        if self.refused_head is None or self.transport.is_closing():
            return
        origin = origin_in_head(bytes(self.refused_head))
        self.refused_head = None
        self.stop_the_deadline()
        self.refusing.pop(self, None)
        self.transport.write(self.with_headers(self.refusal, origin))
        self.linger()

    def with_headers(self, answer: bytes, origin: str | None) -> bytes:
        """`answer` with the server's default headers (`Date`) and, with CORS on, those `origin` gets."""
        from service.web_headers import cors_answer_headers  # the app's (loaded by now: the app was built first)

        cors = cors_answer_headers(self.cors, origin) if self.cors is not None else []
        return stamped(answer, [*self.server_state.default_headers, *cors])

    def origin(self) -> str | None:
        """The `Origin` of the request arriving, as far as its head was parsed: httptools' headers so far (reset as each
        request begins); h11's once its head ended (until then, h11 holds the previous request's)."""
        if self.reading not in ("headers", "body") or (self.reading == "headers" and hasattr(self, "conn")):
            return None
        return next((value.decode("latin-1") for name, value in getattr(self, "headers", None) or () if name == b"origin"), None)

    def linger(self) -> None:
        """Ends the connection after a last answer (the 503 over the limit, the parser's 400, the 408, the app's own sent
        before the body it did not wait for) written with the client's request unread or still arriving: closed then, the
        socket would be reset, the answer lost with it. Half closed instead, it drops what arrives (`refused`) until the
        client, having read the answer, closes, or REFUSED_LINGER_S has passed (closed at once where the transport cannot
        half close). REFUSED_LINGERING such connections at most: one more takes a slot of the peer holding the most."""
        self.refused = True
        self.stop_the_deadline()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        if len(self.refusing) >= REFUSED_LINGERING:
            self.make_room()
        self.transport.write_eof()
        self.refusing[self] = (self.client or (None,))[0]  # uvicorn's (host, port) of the peer; None on a Unix socket
        self.deadline = self.loop.call_later(REFUSED_LINGER_S, self.transport.close)

    def make_room(self) -> None:
        """Every lingering slot is taken: the oldest lingering connection of the peer holding the most slots is closed
        (its client had the longest to read its answer), not the connection to linger: so one peer holding every slot
        (connections refused 400 and held open, REFUSED_LINGERING at a time) loses its own slots first, and other
        peers' 400s and 408s are not reset (tests/e2e/test_wire43_lingering.py). One
        refused over the limit and still waiting for its head (CORS on) is written its 503 first, without CORS (not
        closed without a word)."""
        busiest = Counter(self.refusing.values()).most_common(1)[0][0]
        oldest = next(held for held, peer in self.refusing.items() if peer == busiest)  # the dict keeps their order
        del self.refusing[oldest]
        oldest.stop_the_deadline()
        if oldest.refused_head is not None:  # refused, its head still awaited (CORS on): its 503, not an empty answer
            oldest.refused_head = None
            oldest.transport.write(oldest.with_headers(oldest.refusal, None))
        oldest.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            if self.refused_head is not None:
                self.read_refused_head(data)
            return
        self.parsed, self.body_came = False, False  # whether these bytes began or ended a request, held body (httptools)
        if (of_head := self.reading != "body"):  # bytes of a head (or of blank lines between requests)
            if self.head_ends_past_the_limit(data):
                self.head_too_large()
                return
            self.head_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing() or self.refused:  # closed, or lingering after the parser's 400
            return
        if hasattr(self, "conn"):  # h11: its state machine says where the client's request is
            self.reading = self.h11_reading()
        elif self.reading == "done" and not self.parsed:
            # bytes between requests that begin none (empty lines, which httptools skips before a request
            # line): uvicorn's keep-alive timer was cancelled by them, so they start the deadline as a
            # request's first byte would; else `\r\n` now and then held the connection for good
            self.reading = "nothing"
        if self.reading == "body" and not (of_head or self.parsed or self.body_came or hasattr(self, "conn")):
            # httptools, bytes within one chunked body that hold none of it: its trailers, which uvicorn keeps as headers
            # (h11 refuses trailers past 16 KiB itself), or its chunks' framing, counted until the next chunk's data
            self.head_bytes += len(data)
        elif self.reading in ("body", "done"):  # the head arrived (h11; httptools says so in `on_headers_complete`)
            self.head_bytes = 0
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large()
            return
        self.time_the_request()

    def head_ends_past_the_limit(self, data: bytes) -> bool:
        """Whether the head arriving ends in `data` past MAX_HEAD_BYTES, measured before the parser reads it: counted
        after, the count is reset once the parser has seen the head end, so a head whose last bytes came in one read with
        its end would never be measured (a head of up to MAX_HEAD_BYTES plus a read, 256 KiB, would be
        served). A request line past the parser's URL limit is left to the parser, whose 400 names `url`."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or self.head_bytes + end + 4 <= MAX_HEAD_BYTES:
            return False
        if self.reading == "headers":  # begun in an earlier read: the parser has its URL (`head_too_large` reads it)
            return True
        request_line = data.lstrip(b"\r\n").split(b"\r\n", 1)[0]
        return len(request_line) <= MAX_URL_BYTES

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its HTTP parser refuses (both parsers call it, then parse nothing more on the
        connection): the 400 in OpenAI's error shape with an `X-Request-Id`, as every other answer, rather than
        uvicorn's text/plain "Invalid HTTP request received.", naming `url` when httptools' URL limit is what was
        passed; then the connection lingers half closed (`linger`), so a client still sending reads the 400. The 400
        follows the answers of requests pipelined before the bad one (httptools parses ahead of them).
        uvicorn 0.54 documents no such hook: tests/unit/test_review40_uvicorn_hooks.py fails if it goes."""
        if self.head_past_the_limit:  # not the parser's refusal: `stop_past_the_limit` stopped it
            self.head_too_large()
            return
        from service.requestid import new_id  # the app's own ids (loaded by now: a request has come)

        rid = new_id()
        url = getattr(self, "url", b"") if not hasattr(self, "conn") else b""  # httptools': the request target so far
        # its own id as the record's (the log's filter adds the current request's otherwise: under h11, a bad request
        # pipelined behind a good one is parsed in the good one's context, and the line carried both ids)
        coding = self.refused_transfer_coding(msg)
        logging.getLogger("pluralign.service").warning(
            "a request the HTTP parser refused was answered %d (%s)", 400 if coding is None else coding[0],
            f"a URL of {len(url)} bytes" if len(url) > MAX_URL_BYTES else msg if coding is None else f"Transfer-Encoding {coding[1]}",
            extra={"request_id": rid})
        self.answer_last(self.with_headers(unparsable_answer(rid, len(url), coding), self.origin()))

    def refused_transfer_coding(self, msg: str) -> tuple[int, str] | None:
        """What is wrong with the `Transfer-Encoding` of the request the parser refused with `msg`
        (`transfer_coding_problem`), None for nothing or not known. httptools: only when its refusal is of that header
        (llhttp's words name it), from the lines it gave of that request (uvicorn's `headers`, begun afresh at each
        request's first byte), whichever reads its head came in; a value it refuses as it reads it (a coding after
        `chunked`, or `chunked` again) is never given, and is said so (the first head in the read would be that of a
        request pipelined before the refused one: a request refused for a malformed header would be a 415 naming a
        `Transfer-Encoding` it did not have, and a head in two reads would name nothing). h11 gives no lines: the
        bytes its buffer began with when it refused the head (`refuse_framed_twice`) are read (`transfer_coding_in`),
        not those of the read it was refused in (`arriving`), which hold none for a request pipelined behind
        another (parsed once that one was answered): the 400 would name nothing. Both framings given: the 400 saying so. An
        HTTP/1.0 request with any `Transfer-Encoding` (`http10_with_transfer_coding`, either parser): the 400 saying
        HTTP/1.0 has no chunked framing (HTTP10_TRANSFER_CODING)."""
        from service.strict import transfer_coding_problem

        if self.refused_http10_coding:  # httptools, `on_headers_complete` (h11's head is read below)
            return 400, HTTP10_TRANSFER_CODING
        if hasattr(self, "conn"):  # h11
            if self.framed_twice:  # `refuse_framed_twice`
                return 400, LLHTTP_BOTH_LENGTHS
            return transfer_coding_in(self.h11_refused_head) if self.h11_refused_head is not None else None
        import httptools  # this protocol's parser

        # uvicorn passes its own words; llhttp's are the exception being handled (`send_400_response` is called in its except)
        if isinstance(refusal := sys.exc_info()[1], httptools.HttpParserError):
            msg = str(refusal)
        if "Transfer-Encoding" not in msg:  # not that header's refusal
            return None
        if "Content-Length" in msg:  # llhttp: "Content-Length can't be present with Transfer-Encoding"
            return 400, LLHTTP_BOTH_LENGTHS
        lines = [value.decode("latin-1") for name, value in (getattr(self, "headers", None) or []) if name == b"transfer-encoding"]
        return transfer_coding_problem(lines) or (400, LLHTTP_TRANSFER_CODING)

    def head_too_large(self) -> None:
        """A request whose head went past MAX_HEAD_BYTES: its 431 (`head_too_large_answer`), or the 400 naming `url`
        when httptools' URL so far is past its limit (which it tells only once the URL ends); then nothing more is
        read of the connection, as after the parser's 400 (`answer_last`)."""
        from service.requestid import new_id

        if len(getattr(self, "url", b"")) > MAX_URL_BYTES:  # httptools' URL, still arriving: its limit is what was passed
            self.send_400_response("a URL past the parser's limit")
            return
        if self.ended_after_its_answer():  # trailers arriving after the app began its answer: no 431 may follow it
            return
        rid = new_id()
        logging.getLogger("pluralign.service").warning("a request whose head passed %d bytes was answered 431", MAX_HEAD_BYTES,
                                                       extra={"request_id": rid})
        self.answer_last(self.with_headers(head_too_large_answer(rid), self.origin()))

    def answer_last(self, answer: bytes) -> None:
        """`answer` is the connection's last: written after the answers of requests pipelined before it (httptools parses
        ahead of them), a body it cut read by the app as a disconnect; then the connection lingers half closed."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:  # requests pipelined before it, arrived whole (httptools): their answers go first
                self.refused, self.last_answer = True, answer  # written by on_response_complete once they are out
                self.stop_the_deadline()
                return
            cut_off(cycle)  # a body cut by the bad bytes: the app reads a disconnect, as when a client goes
        self.transport.write(answer)
        self.linger()  # closed now, with the rest of a long head unread, the client would read a reset, not the 400

    def stop_the_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def h11_reading(self) -> str:
        import h11

        state, buffered = self.conn.their_state, bool(self.conn.trailing_data[0])
        return {h11.IDLE: "headers" if buffered else "nothing", h11.SEND_BODY: "body"}.get(state, "done")

    def time_the_request(self) -> None:
        """The deadline runs while a request is arriving, from its first byte, and stops once it has."""
        if self.reading != "done" and self.deadline is None:  # the first bytes of a later request
            self.deadline = self.loop.call_later(self.timeout_s, self.timed_out)
        elif self.reading == "done" and self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def on_response_complete(self) -> None:
        answered, queued = self.cycle, getattr(self, "pipeline", None)
        following = queued[-1][0] if queued else None  # httptools: the request pipelined next, started now
        super().on_response_complete()  # type: ignore[misc]
        if hasattr(self, "conn"):  # h11 parses (and starts) a request pipelined behind this answer only now
            following = self.cycle if self.cycle is not answered else None
        elif following is not None and queued and queued[-1][0] is following:
            following = None  # not started: the connection is closing
        if following is not None:
            self.answering = following
        if self.half_closed:  # `eof_received`: closed once the answers of what arrived are out
            if following is not None and watches_its_client(following):
                # a chat pipelined behind the answers the half-close waited for: its client is taken as gone, as it is
                # when the chat was the one running (`eof_received`); nothing after it is answered
                cut_off(following)
                self.transport.close()
                return
            if hasattr(self, "conn"):  # h11 parses a request pipelined behind this answer only now: arrived whole?
                self.reading = self.h11_reading()
            # a request not whole by now never will be (its client sends nothing more): one left by h11 would keep the
            # connection, with no read deadline, and its app waiting, for good
            if (self.cycle is None or self.cycle.response_complete or self.reading != "done") and not self.transport.is_closing():
                self.transport.close()  # after what it still holds is written
            return
        if self.last_answer is not None and self.cycle.response_complete and not self.transport.is_closing():
            self.transport.write(self.last_answer)  # the parser's 400, after the answers pipelined before it
            self.last_answer = None
            self.linger()
            return
        # h11 parses a request pipelined behind this answer only now: cut in its headers, it had no
        # deadline (no bytes come after it) and was closed without a word by uvicorn's keep-alive timer
        if hasattr(self, "conn") and not self.transport.is_closing() and not self.refused:
            self.reading = self.h11_reading()
            self.time_the_request()

    def stop_past_the_limit(self) -> None:
        """At a head's or trailers' end: past MAX_HEAD_BYTES as parsed (`parsed_bytes`), the app is not told of the request
        (or that its body ended), and the parser stops here (uvicorn then calls `send_400_response`: the 431), also for
        trailers whose end came in the read that passed the limit, and for a head pipelined behind another request's end
        in one read (a GET, then 135 KB of headers: a 431, not a 200 then a 401)."""
        if self.parsed_bytes > MAX_HEAD_BYTES:
            self.head_past_the_limit = True
            raise ValueError("a head or trailers past MAX_HEAD_BYTES")

    # httptools' parser calls these as the request arrives (h11's state is read in data_received)
    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        self.reading, self.parsed, self.parsed_bytes = "headers", True, 0

    def on_url(self, url: bytes) -> None:
        self.parsed_bytes += len(url)
        super().on_url(url)  # type: ignore[misc]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parsed_bytes += len(name) + len(value) + 4  # a head's fields, or a chunked body's trailers (uvicorn keeps both)
        super().on_header(name, value)  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self.stop_past_the_limit()
        if http10_with_transfer_coding(self.parser.get_http_version(), {name for name, _ in self.headers}):
            # the parser stops here, the app never told: uvicorn calls `send_400_response`, which names it
            self.refused_http10_coding = True
            raise ValueError("Transfer-Encoding in HTTP/1.0")
        if self.parser.get_http_version() == "1.0":
            # RFC 9110 10.1.1 and 15.2: an HTTP/1.0 request's `100-continue` is ignored, and no 1xx sent to its client,
            # which would read it as the answer; uvicorn's httptools protocol would send the 100 (h11 does not).
            # uvicorn's own flag, set by its `on_header` for the request whose head just ended.
            self.expect_100_continue = False
        super().on_headers_complete()  # type: ignore[misc]
        if self.parser.get_http_version() == "1.0" and getattr(self.cycle, "scope", None) is self.scope:  # its cycle
            self.cycle.send = close_delimited(self.cycle)
        if not self.pipeline or self.pipeline[0][0] is not self.cycle:  # begun at once, not queued behind an answer
            self.answering = self.cycle
        self.reading, self.head_bytes, self.parsed_bytes = "body", 0, 0

    def on_body(self, body: bytes) -> None:
        super().on_body(body)  # type: ignore[misc]
        self.body_came = True

    def on_message_complete(self) -> None:
        self.stop_past_the_limit()
        super().on_message_complete()  # type: ignore[misc]
        self.reading, self.parsed = "done", True

    def eof_received(self) -> bool | None:
        """The client shut its sending side (`shutdown(SHUT_WR)`, `nc -N`, a proxy passing a client's half-close on).
        RFC 9112 (9.6) lets it still read the answer; uvicorn's protocols return None here, so asyncio closed the
        connection and the answer of a request that had arrived whole was dropped (the request still ran: feedback
        stored, its 201 lost). Now the connection stays open for the answers of the requests that arrived whole, and
        closes after the last (`on_response_complete`). A half-close cannot be told from a close (both are the
        client's FIN), so a chat (`WATCHES_ITS_CLIENT`: a generation is stopped when its client goes, freeing its
        slot) is still taken as its client gone, as is a request still arriving (nothing more of it will come)."""
        running = self.cycle if hasattr(self, "conn") else self.answering  # httptools' `cycle` may be one queued behind it
        if self.refused or self.reading != "done" or running is None or running.response_complete:
            return None  # asyncio closes the connection: uvicorn's way
        if watches_its_client(running):
            # uvicorn's `connection_lost` tells its newest cycle alone, which under httptools may be a request queued
            # behind this chat: the chat is told here
            cut_off(running)
            return None
        # the answers of the requests that arrived whole are written; a chat among them is cut when it begins
        # (`on_response_complete`), not a chat queued behind a GET (httptools) taken for the one
        # running: the connection would be closed and the GET's answer, written after, lost
        self.half_closed = True
        return True

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        self.watch_the_unread()

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        if not self.transport.is_closing():  # its client reads: the app writes on (closing, what is left is watched on)
            self.stop_the_unread_watch()

    def watch_the_unread(self) -> None:
        """The transport holds bytes its client has not read: its writes paused (the app waiting for them to drain), or
        it was closed with them unsent (`CutAnswersAbort.close`). asyncio keeps such a transport, its descriptor and its
        bytes, and uvicorn counts it among the connections (PLURALIGN_MAX_CONNECTIONS), until the client reads them or
        goes: a client that never reads held it for good. Each UNREAD_ABORT_S from now, the transport is looked at:
        aborted when its client read none of what it held (`unread_looked_at`)."""
        if self.unread_watch is None:
            self.sent_when_looked = self.transport.sent()
            self.unread_watch = self.loop.call_later(UNREAD_ABORT_S, self.unread_looked_at)

    def unread_looked_at(self) -> None:
        self.unread_watch = None
        if not self.transport.get_write_buffer_size():  # all sent (closing: asyncio closes it; open: a later pause watches)
            return
        # not one byte taken in UNREAD_ABORT_S, of whole answers, a stream (or after the close): an export part way on an
        # open connection is its route's to end (`export_send_timeout_s`), so looked at again
        if self.transport.sent() <= self.sent_when_looked and (self.transport.is_closing() or not self.answer_left_to_its_route()):
            self.transport.abort()  # uvicorn's `connection_lost` follows: an app waiting to write reads a disconnect
            return
        self.watch_the_unread()

    def answer_going_out(self):
        """The cycle whose answer goes out: h11's one cycle; httptools' `cycle` is its newest, perhaps a request queued
        behind that answer, so the one running (`answering`)."""
        return getattr(self, "cycle", None) if hasattr(self, "conn") else self.answering

    def answer_part_way(self) -> bool:
        """Whether the answer going out has begun and not ended."""
        cycle = self.answer_going_out()
        return cycle is not None and cycle.response_started and not cycle.response_complete

    def answer_left_to_its_route(self) -> bool:
        """Whether the answer going out is part way and its route bounds its own wait for its client to take each piece
        (an export: `export_send_timeout_s`, its scope marked SENDS_BOUNDED). Any other (a chat stream) has no such
        bound, uvicorn's drain waiting without one, so it is watched as a whole answer is."""
        from service.users.exports import SENDS_BOUNDED

        return self.answer_part_way() and bool(self.answer_going_out().scope.get(SENDS_BOUNDED))

    def stop_the_unread_watch(self) -> None:
        if self.unread_watch is not None:
            self.unread_watch.cancel()
            self.unread_watch = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.refusing.pop(self, None)
        self.refused_head = None
        self.stop_the_deadline()
        self.stop_the_unread_watch()
        super().connection_lost(exc)  # type: ignore[misc]
        if self.answering is not None and not hasattr(self, "conn"):
            # httptools: uvicorn tells its newest cycle alone, which may be a request queued (or cut) behind the one
            # running; the running one (a chat generating) is told too, or a chat with a
            # request pipelined behind it would generate to its end for a client that had reset the connection, or had
            # half-closed it while that request was still arriving
            cut_off(self.answering)

    def timed_out(self) -> None:
        self.deadline = None
        if self.transport.is_closing() or self.reading == "done":
            return
        if self.behind_an_answer():  # nothing may be written into that answer, so the deadline waits for it
            self.deadline = self.loop.call_later(self.timeout_s, self.timed_out)
            return
        if self.ended_after_its_answer():  # the app had answered: no 408 may follow
            return
        if self.reading == "nothing":  # no byte unread, no answer to lose: closed at once, taking no lingering slot
            self.refused = True
            self.transport.close()
            return
        self.transport.write(self.with_headers(self.late[self.reading], self.origin()))
        # the client may be sending as the deadline passes (a trickled body, a byte of its headers): closed now, with
        # a byte unread or arriving after, the socket is reset and the client reads a reset, not the 408 and an end
        self.linger()

    def behind_an_answer(self) -> bool:
        """Whether the request arriving was pipelined behind one whose answer is still going out. Its body too: httptools
        queues a request whose head it parsed then (its cycle in `pipeline`, its app not started) and reads nothing more
        of the connection until that answer is out, so the body waits in the socket, not on the client, and no 408 is
        written into the middle of the answer before it. (h11 parses no request until the answer before it is out.)"""
        if self.reading == "body":
            return bool(getattr(self, "pipeline", None))  # httptools' queue: the newest cycle, `self.cycle`, is in it
        return self.cycle is not None and not self.cycle.response_complete

    def ended_after_its_answer(self) -> bool:
        """When the app has begun answering the request whose body is arriving, the body is cut (`cut_body`) and the
        connection ended: lingering after a whole answer (a 401 sent before the body was read), as after a 408; closed
        after one part way (nothing may be written into it). Returns whether it was; False while no answer began."""
        if self.reading != "body" or not self.cut_body():
            return False
        if self.cycle.response_complete:
            self.linger()
        else:
            self.transport.close()
        return True

    def cut_body(self) -> bool:
        """The app waiting for the body that did not arrive reads a disconnect (what it sends is dropped);
        returns whether its answer had begun (nothing more may be written into it)."""
        cycle = self.cycle
        if cycle is None:
            return False
        cut_off(cycle)
        return cycle.response_started


def unacknowledged(transport) -> int:
    """The bytes a connection's socket holds that its peer has not acknowledged, sent or not (Linux's SIOCOUTQ, the
    `ss` Send-Q); 0 where it cannot be read (a closed transport, another system)."""
    try:
        fd = transport.get_extra_info("socket").fileno()
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (AttributeError, OSError, ValueError):
        return 0


class CutAnswersAbort:
    """A connection's transport whose `close` of an answer cut part way (the app ended without finishing it: an
    export whose client stopped reading, `export_send_timeout_s`) with bytes still waiting to be written drops
    them and closes at once. uvicorn closes a cut answer's connection with `close`, which waits to write them
    first: to a client that stopped reading, for ever, so each cut export kept its file descriptor (and one of
    PLURALIGN_MAX_CONNECTIONS) until the client went. The answer is incomplete either way (its chunked body
    never ends); every other close (a whole answer, a 408, a refusal) still writes what it holds first, while its
    client reads some of it within each UNREAD_ABORT_S (`TimedRequests.watch_the_unread`). It counts what is
    written to it (`sent`: what its client's kernel acknowledged of it, which that watch reads)."""

    def __init__(self, transport, protocol):
        self._transport, self._protocol = transport, protocol
        self.written = 0  # bytes written to it (uvicorn's and ours), `sent` or still held

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def write(self, data) -> None:
        self.written += len(data)
        self._transport.write(data)

    def sent(self) -> int:
        """The bytes written that its client's kernel acknowledged: the transport no longer holds them, nor the socket's
        send queue (`unacknowledged`). Not what the kernel took from the transport: it takes more only once a third of
        its send buffer (autotuned up to 4 MiB) is free, so a client reading under a third of that buffer per UNREAD_ABORT_S
        (up to ~45 KB/s) of a large answer showed none taken, and was cut reading all along."""
        return self.written - self._transport.get_write_buffer_size() - unacknowledged(self._transport)

    def close(self) -> None:
        protocol = self._protocol
        # the answer going out, not httptools' newest cycle: with that one, a cut answer with a request pipelined behind
        # it would hold its connection
        if protocol.answer_part_way() and self._transport.get_write_buffer_size():
            self._transport.abort()
            return
        self._transport.close()
        if self._transport.get_write_buffer_size():  # written on, UNREAD_ABORT_S at most while its client reads none
            protocol.watch_the_unread()


# requests whose handlers stop their work when the client goes (an `http.disconnect`): a client's half-close is taken
# as its going for these (`TimedRequests.eof_received`)
WATCHES_ITS_CLIENT = frozenset({("POST", "/v1/chat/completions")})


def watches_its_client(cycle) -> bool:
    """Whether uvicorn's request `cycle` is one of WATCHES_ITS_CLIENT (by its method and its path as routed)."""
    return (cycle.scope["method"], routed_path(cycle.scope["path"])) in WATCHES_ITS_CLIENT


def cut_off(cycle) -> None:
    """uvicorn's request `cycle` reads its client gone (an `http.disconnect`) and what it sends is dropped."""
    if not cycle.response_complete:
        cycle.disconnected = True
        cycle.message_event.set()


def routed_path(path: str) -> str:
    """`path` as Litestar's router reads it (`litestar.utils.normalize_path`: no slash at its end, runs of slashes as one):
    `/v1/chat/completions/` and `//v1//chat/completions` are the chat's route too (`WATCHES_ITS_CLIENT` matched
    against the path as sent would miss such a chat's closed client)."""
    return "/" + MULTI_SLASH.sub("/", path.strip("/"))


MULTI_SLASH = re.compile(r"//+")
REFUSED_LINGER_S = 2.0  # the longest a connection refused (over PLURALIGN_MAX_CONNECTIONS, a 400, a 408) stays, reading what its client still sends
# how often a connection's transport holding bytes (its writes paused, or closed with them unsent) is looked at; one
# whose client read none of them since the last look is aborted, its bytes dropped (`TimedRequests.watch_the_unread`):
# held at most twice this past the client's last read. A client reading on within each, however slowly, is not (`sent`)
UNREAD_ABORT_S = 30.0
REFUSED_LINGERING = 64  # refused connections left to their clients at most; one more closes the busiest peer's oldest
MAX_ORIGIN_HEAD_BYTES = 16384  # of a refused connection's head kept to find its Origin (CORS on): a browser's fits


def origin_in_head(head: bytes) -> str | None:
    """The `Origin` header's value in the bytes of a request's head (its line and headers, or the first of them); None
    when there is none, or when it is not one a browser sends (RFC 6454: visible ASCII only). No HTTP parser has read
    these bytes: a value holding a bare CR, a NUL or another control byte (which httptools and h11 answer 400) would
    match a wildcard origin (`https://*.app.example`: Litestar's `.*`) and be echoed as `Access-Control-Allow-Origin`, a
    bare CR that a client or a proxy may read as a line break."""
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"origin":
            value = value.strip(b" \t")
            return value.decode("ascii") if _VISIBLE_ASCII.fullmatch(value) else None
    return None


_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")


CONNECTIONS_RETRY_AFTER = 1  # seconds: `Retry-After` of the 503 of a connection over PLURALIGN_MAX_CONNECTIONS


def over_limit_answer(max_connections: int) -> bytes:
    """The whole HTTP answer, as bytes, of a connection refused over `max_connections`: a 503 with
    Retry-After, `Connection: close` and an error body in OpenAI's shape (`code: too_many_connections`),
    with the `Cache-Control: no-store` and `nosniff` every other answer of a keyed path gets (service.web_headers)."""
    import msgspec

    body = msgspec.json.encode({"error": {
        "message": f"the service holds as many connections as it may (PLURALIGN_MAX_CONNECTIONS = {max_connections}): "
                   f"connect again after Retry-After seconds", "type": "service_unavailable_error", "param": None,
        "code": "too_many_connections"}})
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"cache-control: no-store\r\nx-content-type-options: nosniff\r\n"
            b"retry-after: " + str(CONNECTIONS_RETRY_AFTER).encode() + b"\r\ncontent-length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)


def listening_urls(host: str, sockets) -> list[str]:
    """The base URL (`http://host:port`) of each of a server's listening `sockets`, its port the one bound (`--port 0`:
    the one the system chose). One socket: under `host` as given; several (a name that resolves to more than one address,
    `localhost` as 127.0.0.1 and ::1 on many machines): each under its own address, for under `--port 0` each address
    has a port of its own. An IPv6 zone id is written `%25` (`http://[fe80::1%25eth0]:8000`, RFC 6874: `%` alone is no
    URL). The host '' (every interface) is named by each socket's address, one socket too (a kernel without IPv6:
    0.0.0.0 alone; `http://:8000` is no URL)."""
    one = len(sockets) == 1 and host
    named = [(host, sockets[0].getsockname()[1])] if one else [sock.getsockname()[:2] for sock in sockets]
    return [f"http://{host_port(address, port)}" for address, port in named]


def stopping_server():
    """uvicorn's Server, telling the app it is stopping (`on_stop`) before it waits for requests in flight,
    and that the wait is nearly over (`on_grace_over`, CUT_EARLY_S before its graceful timeout). A signal
    of `ignored` (the signal numbers its process ignored when it began serving) does nothing."""
    import uvicorn

    class StoppingServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, on_stop, on_grace_over, drain_s: float = 0.0, on_drain=lambda draining: None,
                     ignored: frozenset[int] = frozenset(), on_started=lambda urls: None):
            super().__init__(config)
            self.on_started = on_started
            self.on_stop, self.on_grace_over, self.drain_s, self.on_drain = on_stop, on_grace_over, drain_s, on_drain
            self.ignored = ignored  # signals that neither stop it nor are handed back once it stopped

        def handle_exit(self, sig: int, frame) -> None:
            if sig not in self.ignored:
                super().handle_exit(sig, frame)

        def urls(self) -> list[str]:
            return listening_urls(self.config.host, [sock for server in self.servers for sock in server.sockets])

        def _log_started_message(self, listeners) -> None:
            # uvicorn's names the first socket's port alone: under `--port 0` each address has a port of its own
            if self.config.fd is not None or self.config.uds is not None:
                super()._log_started_message(listeners)
                return
            logging.getLogger("uvicorn.error").info("Uvicorn running on %s (Press CTRL+C to quit)", " and ".join(self.urls()))

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:  # listening: the ports it bound (`--port 0`: ones the system chose)
                self.on_started(self.urls())

        async def shutdown(self, sockets=None) -> None:
            self.on_stop()  # work still waiting: 503 now, not uvicorn's 500 after its graceful timeout
            if self.drain_s > 0:  # uvicorn's shutdown closes the listening socket and idle connections first thing:
                self.on_drain(True)  # until then, what arrives is answered 503 with Retry-After (service.stopping.draining)
                logging.getLogger("pluralign.service").info("stopping: answering 503 for %g s before closing the listening socket", self.drain_s)
                await asyncio.sleep(self.drain_s)
            grace = self.config.timeout_graceful_shutdown
            cut = asyncio.get_running_loop().call_later(max(grace - CUT_EARLY_S, 0), self.on_grace_over) if grace is not None else None
            try:
                await super().shutdown(sockets)
            finally:
                if cut is not None:
                    cut.cancel()

    return StoppingServer
