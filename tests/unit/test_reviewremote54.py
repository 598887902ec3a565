"""Review of session remote54 (requests to generation and embeddings servers bounded whole, `pluralign.bounded_http`):
bounds that no socket can take, taken at start and failing every chat later; the environment's proxy no longer
followed."""

from __future__ import annotations

import time

import pytest

from pluralign.bounded_http import BoundedTransport
from pluralign.embed.remote import RemoteEncoder
from pluralign.policy.generator import GenerationTimedOut
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.settings import Settings
from tests.stub_openai import served
from tests.unit.test_remote54_whole_bound import BOUND_S, MESSAGES, SLACK_S, Dribbling


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "86401"])
def test_a_generator_timeout_no_socket_takes_is_refused_at_start_naming_it(value):
    """`PLURALIGN_GENERATOR_TIMEOUT_S=inf` (an operator's "no bound", likelier since session remote54 made it the bound of
    a stream's whole answer), `nan` or `1e300` loaded: the service started, and every chat's request to the server then
    failed in the socket (`settimeout`: OverflowError 'timestamp out of range for platform time_t', ValueError), which
    no `except` takes: each chat a 500 `internal error`, the log naming no setting. Now the start is refused naming the
    setting, as the other timeouts are (at most a day)."""
    with pytest.raises(ValueError) as err:
        Settings.load({"PLURALIGN_GENERATOR_TIMEOUT_S": value})
    assert "`generator_timeout_s` must be above 0 and at most 86400" in str(err.value), err.value
    assert Settings.load({"PLURALIGN_GENERATOR_TIMEOUT_S": "86400"}).generator_timeout_s == 86400


@pytest.mark.parametrize("field", ["timeout_s", "connect_timeout_s"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, -1.0])
def test_a_remote_policy_no_socket_takes_is_refused_when_made(field, value):
    """The library's own: `RemotePolicy(timeout_s=inf)` was taken, and each request of its generator failed in the socket
    (seen: OverflowError 'timestamp out of range for platform time_t', raised through the `openai` client). Now it is a
    ValueError naming the field when the policy is made (an object is ready once constructed)."""
    with pytest.raises(ValueError, match=field):
        RemotePolicy(**{field: value})
    with pytest.raises(ValueError, match="bound_s"):
        BoundedTransport(value)


def test_the_largest_generator_timeout_serves_a_chat():
    """The bound's top (a day) is one the socket takes: a chat, a count and a stream served."""
    with served(Dribbling) as root:
        Dribbling.how = None
        remote = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=86400, max_retries=0))
        assert remote.generate(MESSAGES)[0][0].text == "a plan"
        assert remote.prompt_tokens(MESSAGES) == 5
        assert "".join(p for p in remote.stream(MESSAGES) if isinstance(p, str)) == "a plan"


class Proxying(Dribbling):
    """A forward HTTP proxy on loopback that answers each request itself as `Dribbling` does (so the server it names
    need not exist), keeping the absolute URI it was asked for (`asked`)."""

    asked: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        type(self).asked.append(self.path)
        self.path = "/" + self.path.split("://", 1)[-1].split("/", 1)[-1] if "://" in self.path else self.path
        super().do_POST()


@pytest.fixture
def proxy(monkeypatch):
    """The proxy's URL, named by `http_proxy` in the environment (no other proxy variable set); what it was asked
    emptied before."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    Dribbling.how, Proxying.asked = None, []
    with served(Proxying) as url:
        monkeypatch.setenv("http_proxy", url)
        yield url
    Dribbling.how = None


def test_requests_to_the_servers_go_through_the_environments_proxy(proxy):
    """Session remote54 gave both clients a transport of their own, and httpx reads no proxy of the environment for a
    client given one: requests went straight to the server (deploy/README.md said so), so a service reaching its
    generation or embeddings server through `HTTP_PROXY`/`HTTPS_PROXY` (an egress proxy) found it unreachable after the
    upgrade: every chat a 503. Before remote54 the `openai` client followed them, as httpx does. Now they are followed
    again (`NO_PROXY` too, below), each request still bounded whole."""
    upstream = "http://generation.invalid/v1"  # RFC 6761: never resolves; reached through the proxy alone
    remote = RemoteGenerator(upstream, "base", policy=RemotePolicy(timeout_s=BOUND_S, max_retries=0))
    assert remote.generate(MESSAGES)[0][0].text == "a plan"  # before: RemoteGeneratorError, unreachable
    assert remote.prompt_tokens(MESSAGES) == 5
    assert "".join(p for p in remote.stream(MESSAGES) if isinstance(p, str)) == "a plan"
    encoder = RemoteEncoder("http://embeddings.invalid/v1", "minilm", timeout=BOUND_S, max_retries=0)
    assert encoder.encode(["hello"]).shape == (1, 3)
    assert Proxying.asked == ["http://generation.invalid/v1/chat/completions", "http://generation.invalid/tokenize",
                              "http://generation.invalid/v1/chat/completions", "http://embeddings.invalid/v1/embeddings",
                              "http://embeddings.invalid/v1/embeddings"], Proxying.asked
    Dribbling.how = "body"  # through the proxy, a dribbled answer is still given up at the bound
    began = time.monotonic()
    with pytest.raises(GenerationTimedOut):
        remote.generate(MESSAGES)
    assert time.monotonic() - began < BOUND_S + SLACK_S


def test_a_server_no_proxy_names_is_reached_straight(proxy, monkeypatch):
    """`NO_PROXY` (here the loopback address of the server) is followed as httpx follows it: the proxy is asked nothing."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with served(Dribbling) as root:
        remote = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=BOUND_S, max_retries=0))
        assert remote.generate(MESSAGES)[0][0].text == "a plan"
        assert remote.prompt_tokens(MESSAGES) == 5
    assert Proxying.asked == [], Proxying.asked


@pytest.mark.parametrize("name", ["PLURALIGN_GENERATOR_API_KEY", "PLURALIGN_ENCODER_API_KEY"])
@pytest.mark.parametrize("key", ["sk-abc\n", "sk-\u00e9t\u00e9", " sk-abc", "sk-a\tbc"])
def test_an_api_key_no_header_carries_is_refused_at_start_naming_it_and_not_said(name, key):
    """A server's key is sent as `Authorization: Bearer <key>`. One with a line end (a Kubernetes secret written with
    `echo`), a letter outside ASCII, a tab or a space at its ends was taken: since session remote54 the start then
    stopped at the generator's construction with `pluralign: error: 'ascii' codec can't encode character ... (header
    'Authorization')` naming no setting (before, every chat was a 500), and a line end made every request "Connection
    error.", a 503 each naming nothing (h11 refuses the header). Now the start is refused naming the setting, the key
    itself not said (a secret)."""
    with pytest.raises(ValueError) as err:
        Settings.load({name: key})
    setting = name.removeprefix("PLURALIGN_").lower()
    assert f"`{setting}` must be printable ASCII" in str(err.value), err.value
    assert "sk-" not in str(err.value), err.value
    assert getattr(Settings.load({name: "sk-abc_123.XYZ"}), setting) == "sk-abc_123.XYZ"
