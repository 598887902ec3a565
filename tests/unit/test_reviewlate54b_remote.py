"""Review of the reviewers' fixes of session remote54 (`pluralign.bounded_http`, the remote generation and embeddings
clients), each through the real clients on a real HTTP server on loopback."""

from __future__ import annotations

import json
import os
import pickle
import time

import pytest

from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import EncoderTimedOut, RemoteEncoder, RemoteEncoderError
from pluralign.policy.generator import GenerationTimedOut, PromptNotCounted, RemoteGeneratorError
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.settings import Settings
from tests.stub_openai import served
from tests.unit.test_remote53_encoder_length import TEI, info
from tests.unit.test_remote54_whole_bound import MESSAGES, Dribbling

BOUND_S = 0.5  # the encoder's timeout here: each try of a request, whole


class SlowInfo(TEI):
    """TEI (its `/v1/embeddings` at once) whose `GET /info` says `info` after `wait_s`, or answers `answers` with no
    body, or drops the connection unanswered (`answers` 0)."""

    wait_s = 0.0
    answers = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        time.sleep(type(self).wait_s)
        if type(self).answers == 0:
            self.close_connection = True
            return
        try:
            if type(self).answers != 200:
                return self.answer(type(self).answers, {"error": "not now"})
            super().do_GET()
        except OSError:  # the client gave up waiting and closed the connection
            self.close_connection = True


@pytest.fixture
def slow_info():
    SlowInfo.info, SlowInfo.wait_s, SlowInfo.answers = info(512, True), 0.0, 200
    with served(SlowInfo) as root:
        yield root
    SlowInfo.info, SlowInfo.wait_s, SlowInfo.answers = None, 0.0, 200


def test_a_server_whose_info_is_not_given_in_time_is_not_taken_unchecked(slow_info):
    """TEI reading 512 word pieces where MiniLM reads 256 is refused at construction (session remote53), by its `GET
    /info`. Before: an /info that did not answer within the bound (a loaded TEI, a dribbling proxy: remote54 bounded it
    whole), answered a 5xx or dropped the connection was taken as "no such route" and the check silently skipped: the
    encoder was made, and a long text's vector was not the tables'. Now the length not known is the server's failure,
    said at construction (tried as often as any request), as the dimension probe's is; a route it has not (404) is
    still taken as it is."""
    SlowInfo.wait_s = BOUND_S + 0.5
    with pytest.raises(EncoderTimedOut, match=r"/info.* within 0.5 s"):
        RemoteEncoder(f"{slow_info}/v1", MINILM_ID, timeout=BOUND_S, max_retries=0, max_length=256)
    SlowInfo.wait_s = 0.0
    for status in (503, 0):
        SlowInfo.answers = status
        with pytest.raises(RemoteEncoderError, match=r"/info"):
            RemoteEncoder(f"{slow_info}/v1", MINILM_ID, timeout=BOUND_S, max_retries=0, max_length=256)
    SlowInfo.answers = 200  # said in time: refused for its length, as before
    with pytest.raises(RemoteEncoderError, match="at most 512 word pieces"):
        RemoteEncoder(f"{slow_info}/v1", MINILM_ID, timeout=BOUND_S, max_retries=0, max_length=256)
    SlowInfo.info = None  # no such route (vLLM, OpenAI, `pluralign serve-embeddings`): taken, as before
    assert RemoteEncoder(f"{slow_info}/v1", MINILM_ID, timeout=BOUND_S, max_retries=0, max_length=256).dim == 384


@pytest.mark.parametrize("error", [GenerationTimedOut("generation server at http://g timed out", 2.5, 3),
                                   EncoderTimedOut("embeddings server at http://e timed out", 4.0, 2),
                                   PromptNotCounted("the generation server could not count", "answered 503")])
def test_a_remote_servers_errors_cross_a_process_whole(error):
    """Session remote54's GenerationTimedOut and EncoderTimedOut (and remote53's PromptNotCounted) took more than their
    message, all of it required, so pickle, which makes an exception again from its message alone, could not: one
    raised in a worker process (a `concurrent.futures.ProcessPoolExecutor`'s, Ray's) failed there as a TypeError
    `missing 1 required positional argument: 'bound_s'` in place of the error, the pool broken. Now each comes back
    whole: its message and what it says beside."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error) and vars(back) == vars(error), (back, vars(back))


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.mark.parametrize("variable, proxy, said", [
    ("ALL_PROXY", "socks5://user:hunter2@proxy.invalid:1080", "a SOCKS proxy, which needs the `socksio` package"),
    ("https_proxy", "ftp://user:hunter2@proxy.invalid", "Unknown scheme for proxy URL"),
])
def test_serve_with_a_proxy_it_cannot_use_stops_with_one_line_naming_the_variable_not_its_password(
        tmp_path, monkeypatch, capsys, variable, proxy, said):
    """Since the review of session remote54 the servers are reached through the environment's proxy. One it cannot
    use stopped the start: a SOCKS proxy (`ALL_PROXY=socks5://...`, socksio not installed) with httpcore's traceback
    (RuntimeError, exit 1), an ftp:// one with a line naming neither the variable nor the setting. Now one line names
    the variable, the proxy's password hidden, exit 2, no data folder left."""
    from tests.unit.clitools import cli

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, proxy)
    monkeypatch.setenv("PLURALIGN_ENCODER", "openai:http://embeddings.invalid/v1")
    monkeypatch.delenv("PLURALIGN_CACHE_DIR", raising=False)  # set by serve's check_settings, before this refusal
    data = tmp_path / "data"
    code, _, err = cli(capsys, "serve", "--port", "0", "--data-dir", str(data))
    assert "PLURALIGN_CACHE_DIR" not in os.environ, "the CLI helper left the refused serve's cache folder to later tests"
    lines = [line for line in err.splitlines() if line.startswith("pluralign: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"pluralign: error: PLURALIGN_ENCODER (setting encoder): {variable} names a proxy "
                               f"({proxy.replace('hunter2', '***')}) for the servers' requests"), lines
    assert said in lines[0] and "hunter2" not in err, lines
    assert not data.exists()


def test_a_client_that_trusts_no_environment_reads_no_proxy_of_it(monkeypatch):
    """`bounded_client(trust_env=False)`, as httpx's own client given it, reads no proxy of the environment; before,
    `bounded_client` read them whatever its `trust_env` (which it passed on to the client, where it did nothing more)."""
    from pluralign.bounded_http import bounded_client

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there: a request sent to it fails
    with served(Dribbling) as root, bounded_client(trust_env=False, bound_s=BOUND_S) as client:
        Dribbling.how = None
        answer = client.post(f"{root}/tokenize", json={"model": "m", "messages": []})
    assert answer.status_code == 200 and answer.json()["count"] == 5, answer.text


@pytest.mark.parametrize("name", ["PLURALIGN_GENERATOR_API_KEY", "PLURALIGN_ENCODER_API_KEY"])
def test_an_empty_api_key_is_still_no_key(name):
    """An empty key (`PLURALIGN_GENERATOR_API_KEY=${VLLM_KEY}` in a compose file, the variable unset; a secret with an
    empty value) was taken as no key (vLLM without --api-key, TEI: the clients send a placeholder) until the review of
    session remote54, whose rule for keys no header can carry refused it too: the start stopped. Now it is taken again,
    as before; a key of spaces alone is still refused."""
    setting = name.removeprefix("PLURALIGN_").lower()
    assert getattr(Settings.load({name: ""}), setting) == ""
    with pytest.raises(ValueError, match=f"`{setting}` must be printable ASCII"):
        Settings.load({name: "  "})


class KeptAlive(TEI):
    """A server that keeps each connection open between requests (HTTP/1.1, as vLLM and TEI do): a chat, a count, an
    embeddings request answered at once (TEI's `/v1/embeddings`, no `/info`); `open` counts the connections a client
    holds open now."""

    protocol_version = "HTTP/1.1"
    open = 0

    def setup(self) -> None:
        super().setup()
        with Dribbling.lock:
            type(self).open += 1

    def finish(self) -> None:
        with Dribbling.lock:
            type(self).open -= 1
        super().finish()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/v1/embeddings":
            return super().do_POST()
        status, _, payload = Dribbling.answer_of(self, self.read_json())
        self.answer(status, json.loads(payload))


def _open_after(wait_s: float = 30.0) -> int:
    """KeptAlive.open once it is 0 or `wait_s` has passed: the server's threads see a closed connection at once, but on
    a loaded machine a thread may run seconds later (a 2 s wait failed with a 2.5 s delay put before `finish`'s count)."""
    ends = time.monotonic() + wait_s
    while KeptAlive.open and time.monotonic() < ends:
        time.sleep(0.02)
    return KeptAlive.open


def test_a_remote_generator_and_encoder_close_their_connections_and_send_nothing_after():
    """Session remote54 gave the generator two HTTP clients and the encoder one (since its review each with a pool per
    proxy too), none ever closed: `pluralign serve`'s stop, which closes its generator (a ProcessGenerator's process),
    left the servers' connections open to the process's exit, and the generator had no `close` to call. Now each has
    one: the server sees every connection closed, and a call after it is the server's error at once (the service's
    503), nothing sent and no retry."""
    KeptAlive.open = 0
    with served(KeptAlive) as root:
        generator = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=5, max_retries=2))
        assert generator.generate(MESSAGES)[0][0].text == "a plan" and generator.prompt_tokens(MESSAGES) == 5
        encoder = RemoteEncoder(f"{root}/v1", MINILM_ID, timeout=5, max_retries=2)
        assert encoder.encode(["hello"]).shape == (1, 384)
        assert KeptAlive.open >= 2, KeptAlive.open  # kept alive, each client its own
        generator.close()
        encoder.close()
        assert _open_after() == 0, KeptAlive.open
        began = time.monotonic()
        with pytest.raises(RemoteGeneratorError, match="closed"):
            generator.generate(MESSAGES)
        with pytest.raises(PromptNotCounted, match="closed"):
            generator.prompt_tokens(MESSAGES)
        with pytest.raises(RemoteEncoderError, match="closed"):
            encoder.encode(["hello"])
        assert time.monotonic() - began < 0.3  # no retry's backoff
        assert KeptAlive.open == 0
        generator.close()  # once more: nothing more
        encoder.close()


@pytest.mark.parametrize("options, named", [({"timeout": float("inf")}, "`timeout`"), ({"timeout": 0.0}, "`timeout`"),
                                            ({"timeout": 86401.0}, "`timeout`"), ({"max_retries": -1}, "`max_retries`")])
def test_a_remote_encoder_with_a_bound_no_socket_takes_is_refused_naming_its_argument(options, named):
    """The review of session remote54 bounded `RemotePolicy`'s timeouts to (0, a day], naming the field; the encoder's
    `timeout` reached `BoundedTransport` and was refused there as "`bound_s` must be ...", an argument its caller never
    gave. Now it is refused naming the encoder's own argument, before any request (`max_retries=-1`, which the `openai`
    client refused in its own words, so too)."""
    with pytest.raises(ValueError, match=named):
        RemoteEncoder("http://embeddings.invalid/v1", MINILM_ID, **options)


def test_a_client_given_its_proxy_bounds_each_request_through_it_whole(monkeypatch):
    """`bounded_client(proxy=URL)` (httpx's own argument, passed on among its `options`): httpx then made its own,
    unbounded transport for every request (`_init_proxy_transport`), so a proxy dribbling an answer held the request to
    its last byte (here DRIBBLE_CAP_S, 3 s), the whole bound silently gone. Now the proxy is reached through a bounded
    transport as an environment's is: the request ends at its bound."""
    import httpx2

    from pluralign.bounded_http import bounded_client
    from tests.unit.test_remote54_whole_bound import SLACK_S
    from tests.unit.test_reviewremote54 import Proxying

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    Dribbling.how, Proxying.asked = "body", []
    try:
        with served(Proxying) as proxy, bounded_client(bound_s=BOUND_S, proxy=proxy) as client:
            began = time.monotonic()
            with pytest.raises(httpx2.TimeoutException):
                client.post("http://generation.invalid/tokenize", json={"model": "m", "messages": []})
            took = time.monotonic() - began
    finally:
        Dribbling.how = None
    assert Proxying.asked == ["http://generation.invalid/tokenize"], Proxying.asked
    assert took < BOUND_S + SLACK_S, took
