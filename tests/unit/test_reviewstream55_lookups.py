"""Review of session stream55: the lookup of a remote server's name on a thread of its own (`pluralign.bounded_http`'s
`_Lookups`), through the real client (`RemoteGenerator`) on a real HTTP server in this process, reached by name
(`localhost`, so the name is looked up); and a server's name no lookup can take, refused at start."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from pluralign.policy.generator import GenerationTimedOut, RemoteGeneratorError
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.stub_openai import served
from tests.unit.test_stream55_remote_bounds import MESSAGES, Pacing


def test_a_lookup_whose_thread_could_not_start_does_not_hold_its_name_for_good(monkeypatch):
    """A lookup's thread that the system refuses to start (`RuntimeError: can't start new thread`: a container's pids
    limit, a burst of threads) left its name marked as looked up at that moment, with no thread to end it: every later
    request to the server waited its connect timeout for a lookup that never came and failed, until the process
    restarted. Now the refused start fails that one request (a connection error) and the next one looks the name up."""
    with served(Pacing) as root:
        url = root.replace("127.0.0.1", "localhost")
        remote = RemoteGenerator(f"{url}/v1", "base", policy=RemotePolicy(timeout_s=3, connect_timeout_s=0.5, max_retries=0))
        start = threading.Thread.start

        def refused(thread: threading.Thread) -> None:
            if thread.name == "name-lookup":
                raise RuntimeError("can't start new thread")
            start(thread)

        monkeypatch.setattr(threading.Thread, "start", refused)
        with pytest.raises(RemoteGeneratorError) as failed:
            remote.generate(MESSAGES)
        assert "unreachable" in str(failed.value), failed.value  # before: the RuntimeError itself (a 500)
        monkeypatch.setattr(threading.Thread, "start", start)
        began = time.monotonic()
        assert remote.generate(MESSAGES)[0][0].text == "once"  # before: GenerationTimedOut after the 0.5 s connect timeout
        assert time.monotonic() - began < 0.5
        remote.close()


@pytest.mark.parametrize("host", ["vllm..svc", "vllm." + "b" * 64])
def test_a_server_url_whose_host_no_resolver_takes_is_refused_at_start_naming_its_setting(host):
    """A host with an empty label (`vllm..svc`, a typo) or one past 63 characters cannot be looked up: the resolver's
    encoding raises UnicodeError, which no connection error catches. The start took it (`Settings.check_models`, the
    clients' `check_base_url`) and every chat was a 500 `internal error` (the UnicodeError raised out of the `openai`
    client); now the start stops with one line naming the setting and the host, and a client is refused when made."""
    from service.settings import Settings

    settings = Settings.load({"PLURALIGN_GENERATOR": f"openai:http://{host}:8000/v1"})
    with pytest.raises(ValueError) as refused:
        settings.check_models()
    said = str(refused.value)
    assert said.startswith("PLURALIGN_GENERATOR (setting generator): ") and f"its host {host!r} is no name" in said, said
    with pytest.raises(ValueError, match="base_url"):
        RemoteGenerator(f"http://{host}:8000/v1", "base")


def test_a_host_no_resolver_takes_is_a_connection_error_of_the_bounded_client():
    """`bounded_client`'s lookup (`_Lookups`) says a name it cannot look up is httpx's ConnectError, as its docstring
    says, whatever the resolver raises: a UnicodeError (an empty label) went out of the client as it was."""
    import httpx2

    from pluralign.bounded_http import bounded_client

    with bounded_client(bound_s=2) as client, pytest.raises(httpx2.ConnectError, match="label empty or too long"):
        client.get("http://vllm..svc:9/")


HUNG = "generation-server.review.hangs.test"  # a name whose lookup hangs (until the test ends)


@pytest.fixture
def hung_lookup(monkeypatch):
    """`socket.getaddrinfo` hanging for HUNG (2 s at most), as a resolver whose DNS server never answers."""
    release, real = threading.Event(), socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == HUNG:
            release.wait(2.0)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    release.set()


def test_a_chat_given_up_on_its_name_lookup_says_so_in_the_operators_words(hung_lookup):
    """A lookup that hangs is given up at the connect's bound (`connect_timeout_s`), but the chat's error said "did not
    answer within <timeout_s>": here "within 3 s" after 0.3 s, and by default "within 120 s (each of 3 tries)" after
    15 s, sending the operator to look at the engine rather than at the DNS. Now the reason (the operator's log line)
    says what timed out: the lookup of the server's name, and its bound. What a client is told is unchanged."""
    remote = RemoteGenerator(f"http://{HUNG}:9/v1", "base", policy=RemotePolicy(timeout_s=3, connect_timeout_s=0.3, max_retries=0))
    for call in (lambda: remote.generate(MESSAGES), lambda: list(remote.stream(MESSAGES))):
        began = time.monotonic()
        with pytest.raises(GenerationTimedOut) as timed_out:
            call()
        assert time.monotonic() - began < 1.5
        said = str(timed_out.value)
        assert f"connecting: the lookup of the name {HUNG!r} took longer than 0.3 s" in said, said
        assert timed_out.value.bound == "timeout_s" and timed_out.value.said.endswith("within 3 s"), vars(timed_out.value)
    remote.close()


def test_an_embeddings_request_given_up_on_its_name_lookup_says_so_in_the_operators_words(hung_lookup):
    """As a chat's: the embeddings server's EncoderTimedOut said "did not answer within <timeout>" whatever timed out."""
    from pluralign.embed.remote import EncoderTimedOut, RemoteEncoder

    began = time.monotonic()
    with pytest.raises(EncoderTimedOut) as timed_out:
        RemoteEncoder(f"http://{HUNG}:9/v1", "sentence-transformers/all-MiniLM-L6-v2", timeout=0.3, max_retries=0)
    assert time.monotonic() - began < 1.5
    # the lookup's bound is the time left of the request's 0.3 s when it began (0.296 s on a loaded machine)
    assert re.search(rf"\(connecting: the lookup of the name {re.escape(repr(HUNG))} took longer than 0\.[0-3]\d* s\)",
                     str(timed_out.value)), timed_out.value


@pytest.mark.parametrize("host", ["bü..svc", "bü" + "x" * 64 + ".svc", "bü\u00adx.svc"])
def test_a_host_not_in_ascii_that_httpx_cannot_encode_is_refused_at_start_naming_its_setting(host):
    """Review of review stream55: a host not in ASCII was left to httpx, which encodes it by IDNA 2008 when the client is
    made: the start's check took `bü..svc` (an empty label), one past 63 characters, or one holding a soft hyphen, and
    the service's start then failed in the `openai` client's constructor with httpx's InvalidURL, naming no setting (a
    library user got that error, no ValueError naming `base_url`). Refused by the start's check now, as an ASCII one
    is; a name IDNA takes (`bücher.example`) is still taken as written."""
    from pluralign.urls import base_url_problem
    from service.settings import Settings

    settings = Settings.load({"PLURALIGN_GENERATOR": f"openai:http://{host}:8000/v1"})
    with pytest.raises(ValueError) as refused:
        settings.check_models()
    said = str(refused.value)
    assert said.startswith("PLURALIGN_GENERATOR (setting generator): ") and f"its host {host!r} is no name" in said, said
    with pytest.raises(ValueError, match="base_url"):
        RemoteGenerator(f"http://{host}:8000/v1", "base")
    assert base_url_problem("http://bücher.example:8000/v1") is None and base_url_problem("http://Bücher.example/v1") is None


def _link_local() -> tuple[str, str] | None:
    """(an IPv6 link-local address of this machine, its interface's name), from Linux's /proc/net/if_inet6 (scope 0x20:
    link); None where there is none."""
    try:
        lines = open("/proc/net/if_inet6").read().splitlines()
    except OSError:
        return None
    for line in lines:
        hexed, _, _, scope, _, name = line.split()
        if scope == "20":
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexed)), name
    return None


@pytest.mark.skipif(_link_local() is None, reason="no IPv6 link-local address on this machine")
def test_a_server_name_that_resolves_to_a_link_local_address_is_reached_on_its_interface(monkeypatch):
    """Session left56: a generation server named by a name that resolves to an IPv6 link-local address with its zone
    (mDNS's `vllm.local`, a hosts file's `fe80::1%eth0`) was looked up (`_Lookups`) into the address's text alone,
    `fe80::...` without its interface, and every connect to it failed (EINVAL): each chat a 503 "unreachable". The
    zone is kept now. A real server on this machine's link-local address, reached by a name; the name's lookup is the
    system resolver's answer for the address with its zone (no resolver file of the machine is changed here)."""
    from tests.stub_openai import JSONHandler

    address, interface = _link_local()
    lookup = socket.getaddrinfo

    def resolving(host, *args, **kwargs):
        return lookup(f"{address}%{interface}" if host == "vllm-link.test" else host, *args, **kwargs)

    class Answer(JSONHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.read_json()
            self.answer(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "base",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": "near"}, "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    from http.server import ThreadingHTTPServer

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    server = Server(lookup(f"{address}%{interface}", 0, socket.AF_INET6, socket.SOCK_STREAM)[0][4], Answer)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setattr(socket, "getaddrinfo", resolving)
    try:
        remote = RemoteGenerator(f"http://vllm-link.test:{server.server_address[1]}/v1", "base",
                                 policy=RemotePolicy(timeout_s=5, connect_timeout_s=2, max_retries=0))
        assert remote.generate(MESSAGES)[0][0].text == "near"  # before: RemoteGeneratorError, unreachable (EINVAL)
        remote.close()
        literal = RemoteGenerator(f"http://[{address}%25{interface}]:{server.server_address[1]}/v1", "base",
                                  policy=RemotePolicy(timeout_s=5, max_retries=0))  # the address itself, its zone as RFC 6874 writes it
        assert literal.generate(MESSAGES)[0][0].text == "near"
        literal.close()
    finally:
        server.shutdown()
        server.server_close()
