"""tests/service/tiny.py LiveServer binds its listening socket when built (bc9de3e). An app whose startup fails ends
the server's thread before uvicorn ever took the socket, and `with LiveServer(app)` raises from `__enter__`, so
`__exit__` (where the socket was closed, "unless the app's startup failed first") never runs: the bound socket and
what `after_stop` returns (a start_service tokenizer) were left behind."""

from __future__ import annotations

import socket

import pytest
from litestar import Litestar, get

from tests.service.tiny import LiveServer


def _fail() -> None:
    raise RuntimeError("startup broke")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's sys.exit(3) in its thread
def test_a_server_whose_app_fails_to_start_leaves_no_socket_behind():
    server = LiveServer(Litestar(route_handlers=[], on_startup=[_fail]))
    stopped: list[bool] = []
    server.after_stop.append(lambda: stopped.append(True))
    with pytest.raises(RuntimeError, match="its thread ended"):
        with server:
            pass
    assert server.socket.fileno() == -1, "the bound socket was left open"
    assert stopped == [True], "after_stop was not called though the server's thread ended"
    with socket.socket() as again:  # its port is free again
        again.bind(("127.0.0.1", server.port))


@get("/health", sync_to_thread=False)
def _health() -> str:
    return "ok"


def test_a_server_that_ran_closes_its_socket():
    with LiveServer(Litestar(route_handlers=[_health])) as server:
        pass
    assert server.socket.fileno() == -1
