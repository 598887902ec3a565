"""The wire's small things session 47's closing note left (session small48): where a server on several addresses listens,
and how a refused X-Request-Id's tenant name reads."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest


async def _ok(scope, receive, send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_server_on_several_addresses_names_the_port_each_one_bound(caplog):
    """`--port 0` with a host of several addresses (`localhost` as 127.0.0.1 and ::1 on many machines): each address gets
    a free port of its own. Before, `serve`'s start line (uvicorn's) and `serve-embeddings`' (`on_started`) named the
    first socket's port alone, under the host's name: a client that reached the other address found another port.
    Here the host '' (every interface: 0.0.0.0 and ::) is the several addresses; the CLI's `check_listen` refuses it,
    so `stopping_server` (what both commands run) is driven directly, on loopback."""
    import uvicorn

    from training.commands.serve import stopping_server

    started: list = []
    config = uvicorn.Config(_ok, host="", port=0, lifespan="off", log_config=None, log_level="info")
    server = stopping_server()(config, on_stop=lambda: None, on_grace_over=lambda: None, on_started=started.append)
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    thread = threading.Thread(target=server.run, daemon=True)  # not the main thread: uvicorn leaves the signals alone
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not started and not thread.is_alive():
            pytest.skip("cannot listen on every interface here (uvicorn's start failed: no IPv6 loopback?)")
        urls = started[0]  # before: one int, the first socket's port
        if len(urls) < 2:
            pytest.skip(f"'' is one address here (no IPv6): {urls}")
        ports = {url.split("://")[1].rsplit(":", 1)[0]: int(url.rsplit(":", 1)[1]) for url in urls}
        assert sorted(ports) == ["0.0.0.0", "[::]"], urls
        for loopback, address in (("127.0.0.1", "0.0.0.0"), ("[::1]", "[::]")):  # each port answers on its own family
            assert httpx.get(f"http://{loopback}:{ports[address]}/", timeout=5).text == "ok"
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Uvicorn running on")]
        assert said == [f"Uvicorn running on {' and '.join(urls)} (Press CTRL+C to quit)"], said
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_one_socket_is_named_by_the_host_as_given():
    import socket

    from training.commands.serve import listening_urls

    with socket.socket() as ipv4:
        ipv4.bind(("127.0.0.1", 0))
        port = ipv4.getsockname()[1]
        assert listening_urls("localhost", [ipv4]) == [f"http://localhost:{port}"]
        assert listening_urls("::1", [ipv4]) == [f"http://[::1]:{port}"]  # before: http://::1:PORT, no URL
