"""Review session 40: `pluralign serve` reaches into uvicorn's HTTP protocols where uvicorn documents no hook
(training/commands/serve.py, `TimedRequests`): it overrides `send_400_response` (the JSON 400 of a request the parser
refuses) and reads the protocols' `url` (httptools), `conn` (h11) and `cycle`. An upgrade of uvicorn that renames or
stops calling one of them would not fail: the 400 would silently be uvicorn's text/plain again (its e2e test runs h11
only with -m slow). These fail at once, naming what went."""

from __future__ import annotations

import inspect

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from training.commands.serve import TimedRequests, timed_http_protocol


@pytest.mark.parametrize("protocol,caller,read", [(HttpToolsProtocol, "data_received", ("self.url", "self.cycle")),
                                                  (H11Protocol, "handle_events", ("self.conn", "self.cycle"))])
def test_uvicorn_still_calls_the_hooks_serve_overrides(protocol, caller, read):
    assert callable(getattr(protocol, "send_400_response", None)), f"uvicorn's {protocol.__name__} has no send_400_response"
    assert list(inspect.signature(protocol.send_400_response).parameters) == ["self", "msg"]
    source = inspect.getsource(protocol)
    assert "self.send_400_response(" in inspect.getsource(getattr(protocol, caller)), \
        f"uvicorn's {protocol.__name__}.{caller} no longer calls send_400_response: the parser's 400 is uvicorn's own again"
    for attribute in read:
        assert f"{attribute} =" in source, f"uvicorn's {protocol.__name__} no longer sets {attribute}"


def test_the_served_protocol_answers_the_parser_s_refusals_with_serve_s_400():
    served = timed_http_protocol(30.0)
    assert served.send_400_response is TimedRequests.send_400_response
