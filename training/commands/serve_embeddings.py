"""`pluralign serve-embeddings`: OpenAI's /v1/embeddings over a local encoder (default MiniLM).

    pluralign serve-embeddings --host 127.0.0.1 --port 8001 --encoder minilm

The API service uses it with `PLURALIGN_ENCODER=openai:http://127.0.0.1:8001/v1` and
`PLURALIGN_ENCODER_MODEL=sentence-transformers/all-MiniLM-L6-v2` (the name this server serves).

PLURALIGN_REQUEST_READ_TIMEOUT_S and PLURALIGN_MAX_CONNECTIONS bound it as they bound `pluralign serve`: a
request still arriving after that long is answered 408 and its connection closed, a connection beyond that many
open is answered 503 with Retry-After (`training.commands.serve.timed_http_protocol`).

SIGTERM or Ctrl-C stops it as `pluralign serve` stops: requests waiting for the encoder are answered 503
with Retry-After at once, the one encoding gets up to 5 s; exit status 0, or 4 when that wait cut
requests off, 3 when it could not start. Stopped before it serves (while the encoder loads), it ends as
other commands do: `pluralign: error: stopped by SIGTERM`, 143 (130 for Ctrl-C). A SIGINT it was started
ignoring (a script's `&`) stays ignored.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.common import add_listen_args, check_listen


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve-embeddings", help="serve /v1/embeddings (OpenAI shape) over a local encoder",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_listen_args(parser, default_port=8001, default_log_level="warning")
    parser.add_argument("--encoder", default="minilm", help="`minilm`, `minilm-onnx-int8` or a sentence-transformers folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_listen(args.host, args.port)  # before the encoder or the service's imports (seconds)
    from service.settings import check_encoder_name

    check_encoder_name(args.encoder, f"--encoder {args.encoder}")  # a mistyped name: before them too
    from pluralign.embed.models import check_model_cache
    from service.settings import Settings
    from training.common import check_temp_dir, fit_open_files

    settings = Settings.load()  # its read deadline and connection limit (every command checked the settings already)
    max_connections = fit_open_files(settings.max_connections)  # the limit in force (unset: fits the open-files limit)

    check_temp_dir()  # a read-only root without /tmp, a model cache it cannot write: one line, before them too
    check_model_cache(args.encoder, generator="")
    from functools import partial

    from service.embeddings.app import create_embeddings_app, stop_taking_encodes
    from service.encoders import make_encoder
    from training.commands.serve import CUT_OFF, serve_until_stopped
    from training.common import setup_logging

    setup_logging()
    from service.requestid import configure_logging

    configure_logging("text")  # as the app's lines: a request's end with ` request_id=<id>`
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    from pluralign.embed.remote import RemoteEncoderError

    try:
        encoder = make_encoder(args.encoder)
    except (ValueError, RemoteEncoderError) as exc:  # an `openai:URL` not reached, or reading texts unlike the local encoder
        raise ValueError(f"--encoder {args.encoder}: {exc}") from None
    app = create_embeddings_app(encoder)
    # its log level (warning) hides uvicorn's "running on" line: without this one, nothing said it was up, or where. Once
    # it listens, with the port bound: `--port 0` (any free port) printed `:0`, no address to send to; a host of several
    # addresses: each one's URL (each has a port of its own under `--port 0`)
    def say_where(urls: list[str]) -> None:
        where = " and ".join(f"{url}/v1/embeddings" for url in urls)
        print(f"pluralign serve-embeddings: {encoder.encoder_id} ({encoder.dim} dimensions) at {where}", file=sys.stderr, flush=True)

    started, requests = serve_until_stopped(app, args, on_stop=partial(stop_taking_encodes, app), on_started=say_where,
                                            request_read_timeout_s=settings.request_read_timeout_s, max_connections=max_connections)
    if not started:
        return 3
    if requests.cancelled:
        logging.getLogger("pluralign.embeddings").error("stopped with %d request(s) cut off by the graceful wait", requests.cancelled)
        return CUT_OFF
    return 0
