"""`pluralign serve`: the HTTP service on embedded defaults.

    pluralign serve --host 127.0.0.1 --port 8000
    pluralign serve --data-dir /srv/pluralign --port 8000

Settings come from PLURALIGN_* variables (PLURALIGN_DATA_DIR, default ./data; --data-dir wins over it,
as for `pluralign keys`) or a TOML file named by PLURALIGN_CONFIG. At first start, once the data
folder has been read and the models loaded, a development API key is issued for tenant `default`,
printed once, and stored hashed in the data folder; a data folder the service cannot use is an
error first, and no key is issued. A start that fails (a bad setting, a damaged file, Ctrl-C while
the models load) prints one line `pluralign: error: ...` naming the setting or file, and removes what
it had created in the data folder. GET /health answers once the models are loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from functools import partial

from training.common import add_listen_args, check_listen


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP service (uvicorn)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_listen_args(parser, default_port=8000)
    parser.add_argument("--data-dir", default=None, help="the service's data folder (default PLURALIGN_DATA_DIR or ./data)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_listen(args.host, args.port)  # before a data folder, a key, a model or the service's imports (seconds)
    from pluralign.files import left_as_found
    from pluralign.store.location import is_object_store
    from service.auth import KeyRing
    from service.settings import Settings
    from training.common import check_writable, setup_logging

    setup_logging()
    os.umask(0o077)  # users' data, keys and jobs: readable by this account only (files 0600, folders 0700)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)  # no progress bar per request
    settings = Settings.load(data_dir=args.data_dir)
    # the data folder, before a model loads (a minute) or a key is issued: a file there, or a place
    # this account cannot write, is one line naming the option or setting; a damaged file in it names the file
    option = "--data-dir" if args.data_dir is not None else "PLURALIGN_DATA_DIR (setting data_dir)"
    check_writable(option, str(settings.data_path))
    # a start that fails part way (a damaged checkpoint once the tables are open, a model that will
    # not load, Ctrl-C) removes what it created: the folder is left as it was found
    # not a store other replicas share (`replicas` > 1): what appeared there meanwhile may be theirs
    local_store = [] if is_object_store(settings.lancedb_uri) or settings.replicas > 1 else [settings.lancedb_uri]
    with left_as_found(settings.data_path, *local_store):
        settings.data_path.mkdir(parents=True, exist_ok=True)
        keys = KeyRing(settings.data_path / "api_keys.json")  # a damaged key file: an error naming it
        import uvicorn  # the service's imports (torch, the models' libraries: seconds) once the folder is known good

        from service.app import create_app, stop_taking_deletes

        app = create_app(settings)  # promotions.json, the population model's description and the FSPO adapter first, then the models
        if len(keys) == 0:  # only once the service can start: a key printed for a service that never ran is lost
            key = keys.issue("default", name="development key")
            print(f"development API key for tenant `default` (shown once, stored hashed): {key}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    server = stopping_server()(config, on_stop=partial(stop_taking_deletes, app))
    with contextlib.suppress(KeyboardInterrupt):  # as `uvicorn.run`
        server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE (a lifespan startup that failed, a port taken meanwhile)


def stopping_server():
    """uvicorn's Server, telling the app it is stopping (`on_stop`) before it waits for requests in flight."""
    import uvicorn

    class StoppingServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, on_stop):
            super().__init__(config)
            self.on_stop = on_stop

        async def shutdown(self, sockets=None) -> None:
            self.on_stop()  # DELETEs still waiting: 503 now, not uvicorn's 500 after its graceful timeout
            await super().shutdown(sockets)

    return StoppingServer
