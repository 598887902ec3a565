"""A server started ignoring SIGINT (`pluralign serve &` or `nohup pluralign serve &` in a script: a shell
without job control starts background commands so, and the script's Ctrl-C reaches them too) keeps ignoring it while it serves, as its start
does (`training.cli.main` leaves an ignored SIGINT ignored): uvicorn put its own handler in place for SIGINT
whatever the process had, and the script's Ctrl-C stopped the service (reviewt41). SIGTERM still stops it.
tests/e2e/test_reviewt41_signals.py sends the real signal to a real `pluralign serve`."""

from __future__ import annotations

import argparse
import signal
import threading

import httpx
import numpy as np

from service.embeddings.app import create_embeddings_app
from tests.service.tiny import free_port
from training.commands.serve import serve_until_stopped


class Zeros:
    encoder_id, dim = "zeros", 2

    def encode(self, texts):
        return np.zeros((len(texts), self.dim), dtype=np.float32)


def test_an_ignored_sigint_does_not_stop_the_server_and_sigterm_does():
    args = argparse.Namespace(host="127.0.0.1", port=free_port(), log_level="warning")
    seen: dict[str, object] = {}

    def operator() -> None:  # while it serves: the handler in place now meets a SIGINT, then a SIGTERM
        ticks = threading.Event()
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{args.port}/health", timeout=5)
                break
            except httpx.TransportError:
                ticks.wait(0.05)
        handler = signal.getsignal(signal.SIGINT)
        server = handler.__self__  # uvicorn's Server (its bound `handle_exit`)
        handler(signal.SIGINT, None)
        seen["stopping after SIGINT"] = server.should_exit
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)

    caller = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        thread = threading.Thread(target=operator, daemon=True)
        thread.start()
        started, requests = serve_until_stopped(create_embeddings_app(Zeros()), args, on_stop=lambda: None)
        thread.join(30)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    finally:
        signal.signal(signal.SIGINT, caller)
    assert started and requests.cancelled == 0
    assert seen == {"stopping after SIGINT": False}
