"""The wire's small things session 47's closing note left (session small48): where a server on several addresses listens,
and how a refused X-Request-Id's tenant name reads."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest


async def _ok(scope, receive, send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def _serving_every_interface(caplog, **config) -> Iterator[tuple[list, threading.Thread]]:
    """`stopping_server` (what `serve` and `serve-embeddings` run) serving `_ok` on host '' (every interface), port 0,
    with uvicorn's `config` besides, in a thread (not the main thread: uvicorn leaves the signals alone), its log
    lines in `caplog`; yields (the `on_started` calls, the thread) once it started or its start failed (10 s at
    most), and stops it after."""
    import uvicorn

    from training.commands.serve import stopping_server

    started: list = []
    config = uvicorn.Config(_ok, host="", port=0, lifespan="off", log_config=None, log_level="info", **config)
    server = stopping_server()(config, on_stop=lambda: None, on_grace_over=lambda: None, on_started=started.append)
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield started, thread
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _without_ipv6(monkeypatch) -> None:
    """`socket.socket` refuses IPv6 sockets as a kernel without IPv6 does (`ipv6.disable=1`, some containers: EAFNOSUPPORT),
    for the test `monkeypatch` belongs to; `getaddrinfo` still names `::` for ''."""
    import errno
    import socket

    made = socket.socket

    class NoIPv6(made):
        def __init__(self, family=-1, *args, **kwargs):
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", NoIPv6)


def test_a_server_on_several_addresses_names_the_port_each_one_bound(caplog):
    """`--port 0` with a host of several addresses (`localhost` as 127.0.0.1 and ::1 on many machines): each address gets
    a free port of its own. Before, `serve`'s start line (uvicorn's) and `serve-embeddings`' (`on_started`) named the
    first socket's port alone, under the host's name: a client that reached the other address found another port.
    Here the host '' (every interface: 0.0.0.0 and ::) is the several addresses (the CLI's `check_listen` refused it until
    remote49), and `stopping_server` (what both commands run) is driven directly, on loopback."""
    with _serving_every_interface(caplog) as (started, thread):
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


def test_one_socket_is_named_by_the_host_as_given():
    import socket

    from training.commands.serve import listening_urls

    with socket.socket() as ipv4:
        ipv4.bind(("127.0.0.1", 0))
        port = ipv4.getsockname()[1]
        assert listening_urls("localhost", [ipv4]) == [f"http://localhost:{port}"]
        assert listening_urls("::1", [ipv4]) == [f"http://[::1]:{port}"]  # before: http://::1:PORT, no URL


def test_an_ipv6_zone_id_is_written_as_a_url_writes_it():
    """remote49: a link-local address's zone id (`fe80::1%eth0`) was printed with a bare `%`, which no URL parser takes
    (RFC 6874 writes it `%25`): the start line named no URL a client could use."""
    import socket
    from urllib.parse import urlsplit

    from training.commands.serve import listening_urls

    with socket.socket() as ipv4:
        ipv4.bind(("127.0.0.1", 0))
        port = ipv4.getsockname()[1]
        [url] = listening_urls("fe80::1%eth0", [ipv4])
    assert url == f"http://[fe80::1%25eth0]:{port}" and urlsplit(url).port == port, url


def test_check_listen_binds_every_address_the_host_names(tmp_path):
    """remote49: `check_listen` bound only the first address the host resolved to, and refused '' (every interface, which
    uvicorn serves as asyncio does: 0.0.0.0 and ::). A port taken on one of the others passed the check, and the start
    failed at uvicorn's bind, after the models had loaded. Now every address is bound: '' with the port free on both is
    accepted, and with the port taken on :: alone the start is refused at once, naming [::]:PORT, by the real CLI."""
    import socket
    import subprocess
    import sys

    from tests.processes import REPO
    from training.common import check_listen

    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            taken.bind(("::", 0))
        except OSError:
            pytest.skip("no IPv6 here")
        taken.listen()
        port = taken.getsockname()[1]
        check_listen("127.0.0.1", port)  # the IPv4 address alone is free
        with pytest.raises(ValueError, match=rf"^--port {port}: \[::\]:{port} is in use by another process"):
            check_listen("", port)  # before: "--host : not an address this machine can listen on"
        result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--host", "", "--port", str(port)], cwd=REPO,
                                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PLURALIGN_DATA_DIR": str(tmp_path / "data")},
                                capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (
        2, f"pluralign: error: --port {port}: [::]:{port} is in use by another process; choose another port"), result.stderr
    check_listen("", 0)  # every interface, any free port: accepted


def test_check_listen_passes_a_host_whose_ipv6_address_this_kernel_cannot_open(monkeypatch):
    """review remote49: on a kernel without IPv6 (`ipv6.disable=1`, some containers) `socket(AF_INET6)` fails
    (EAFNOSUPPORT) though `getaddrinfo` still names `::` for '' (and `::1` for `localhost` where /etc/hosts says so).
    asyncio's `create_server`, which uvicorn serves with, skips an address whose socket cannot be made and serves the
    others; `check_listen` let the OSError out, so `pluralign serve --host ''` was refused where uvicorn would serve.
    Both are run here with IPv6 sockets refused as such a kernel refuses them: they agree."""
    import asyncio

    from training.common import check_listen

    _without_ipv6(monkeypatch)

    async def served() -> list:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host="", port=0)
        names = [sock.getsockname()[0] for sock in server.sockets]
        server.close()
        await server.wait_closed()
        return names

    assert asyncio.run(served()) == ["0.0.0.0"]  # uvicorn's server: IPv4 alone
    check_listen("", 0)  # before: OSError [Errno 97] Address family not supported by protocol


def test_every_interface_served_on_one_address_is_named_by_that_address(monkeypatch, caplog):
    """review remote49: `--host ''` (every interface, accepted since remote49) on a kernel without IPv6 is served on one
    socket, 0.0.0.0; `listening_urls` names one socket by the host as given, so the start line said `http://:PORT`, no
    URL. Now it names the socket's address, as for several."""
    _without_ipv6(monkeypatch)
    # asyncio's loop: uvloop's create_server skips a socket it cannot make alike (its loop.pyx), but makes it with the
    # `socket.socket` it imported, which no patch here reaches
    with _serving_every_interface(caplog, loop="asyncio") as (started, _):
        [url] = started[0]
        assert url.startswith("http://0.0.0.0:"), url  # before: http://:PORT
        assert httpx.get(f"http://127.0.0.1:{url.rsplit(':', 1)[1]}/", timeout=5).text == "ok"
        assert f"Uvicorn running on {url} (Press CTRL+C to quit)" in [r.getMessage() for r in caplog.records]
