"""Review session 37: an operator sees PLURALIGN_MAX_CONNECTIONS at work in /metrics: how many connections
are open (`pluralign_open_connections`), the limit (`pluralign_max_connections`) and how many were refused
over it (`pluralign_connections_refused_total`), no per-client label. Before, /metrics had none of them:
connections answered 503 too_many_connections left no trace but the clients' errors."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.e2e.test_conn37_connections import read_to_end, start


def sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


@pytest.fixture(scope="module", params=["httptools", pytest.param("h11", marks=pytest.mark.slow)])
def served(request, tmp_path_factory, tiny_generator_dir):
    proc = start(tmp_path_factory.mktemp("r37-metrics"), tiny_generator_dir, request.param, PLURALIGN_MAX_CONNECTIONS="3",
                 PLURALIGN_REQUEST_READ_TIMEOUT_S="30")
    try:
        yield proc
    finally:
        proc.stop()


def test_metrics_show_open_and_refused_connections(served):
    before = httpx.get(served.url + "/metrics", timeout=5).text
    assert sample(before, "pluralign_max_connections") == 3
    assert sample(before, "pluralign_connections_refused_total") == 0
    assert sample(before, "pluralign_open_connections") == 1  # the scrape's own
    held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(2)]
    try:
        time.sleep(0.3)
        with httpx.Client(base_url=served.url, timeout=5) as scraper:
            assert sample(scraper.get("/metrics").text, "pluralign_open_connections") == 3  # the limit reached
            refused = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(5)]
            for s in refused:
                assert read_to_end(s).startswith(b"HTTP/1.1 503 ")
                s.close()
            after = scraper.get("/metrics").text
        assert sample(after, "pluralign_connections_refused_total") == 5
        assert sample(after, "pluralign_open_connections") == 3  # the refused ones were never the service's
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert sample(httpx.get(served.url + "/metrics", timeout=5).text, "pluralign_open_connections") == 1
