"""Helpers for tests that run the `pluralign` CLI in-process, as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os

from training.cli import main


def write_jsonl(path, items) -> str:
    """Write `items` (dicts as JSON, strings as they are) one per line; returns the path as a string."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in items))
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...`; a usage error's SystemExit counts as its code. The process's
    umask and its PLURALIGN_* variables are put back afterwards: `pluralign serve` sets its own umask (0077,
    `training.commands.serve.run`), which a refused start in this process left to every later test of the worker (a file
    made 0644 was then 0600), and PLURALIGN_CACHE_DIR to its data folder's cache (`check_settings`), which a start
    refused after that check left naming a removed temp folder to the worker's later tests and the jobs they start."""
    umask = os.umask(0o022)
    os.umask(umask)
    settings = {name: value for name, value in os.environ.items() if name.startswith("PLURALIGN_")}
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    finally:
        os.umask(umask)
        for name in [n for n in os.environ if n.startswith("PLURALIGN_") and n not in settings]:
            del os.environ[name]
        os.environ.update(settings)
    out, err = capsys.readouterr()
    return code, out, err


@contextlib.contextmanager
def import_stand_in(answer):
    """A stand-in for the service `pluralign data import` sends to, on loopback: each POST is answered by
    `answer(path, headers, body) -> (status, JSON-able reply)`. Yields its URL (`http://127.0.0.1:<port>`)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            status, reply = answer(self.path, self.headers, self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
