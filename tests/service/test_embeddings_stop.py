"""`pluralign serve-embeddings` told to stop (SIGTERM): requests waiting for the encoder are answered 503
with Retry-After at once (the openai client, and so the service's RemoteEncoder, sends them again), not
left to uvicorn's graceful wait; the one encoding finishes."""

from __future__ import annotations

import threading

import httpx
import numpy as np

from service.embeddings.app import create_embeddings_app, stop_taking_encodes
from tests.service.tiny import LiveServer


class HeldEncoder:
    encoder_id, dim = "held", 2

    def __init__(self):
        self.encoding, self.release = threading.Event(), threading.Event()

    def encode(self, texts):
        self.encoding.set()
        self.release.wait(30)
        return np.zeros((len(texts), self.dim), dtype=np.float32)


def test_requests_waiting_for_the_encoder_get_503_when_the_server_stops():
    encoder = HeldEncoder()
    app = create_embeddings_app(encoder)
    answers: dict[str, httpx.Response] = {}

    def send(name: str) -> None:
        answers[name] = httpx.post(f"{server.url}/v1/embeddings", json={"input": name, "model": "held"}, timeout=60)

    with LiveServer(app) as server:
        first = threading.Thread(target=send, args=("first",))
        first.start()
        assert encoder.encoding.wait(30)
        waiting = threading.Thread(target=send, args=("waiting",))
        waiting.start()
        ticks = threading.Event()
        while app.state.encodings.stats()["waiting"] == 0:
            ticks.wait(0.01)
        assert stop_taking_encodes(app) == 1
        waiting.join(10)
        r = answers["waiting"]
        assert (r.status_code, r.headers.get("Retry-After")) == (503, "5"), (r.status_code, r.text)
        assert "the service is stopping" in r.json()["error"]["message"]
        later = httpx.post(f"{server.url}/v1/embeddings", json={"input": "later", "model": "held"}, timeout=60)
        assert later.status_code == 503  # and every request from now on
        encoder.release.set()
        first.join(30)
        assert answers["first"].status_code == 200, answers["first"].text  # the one encoding finished
