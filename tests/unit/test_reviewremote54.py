"""Review of session remote54 (requests to generation and embeddings servers bounded whole, `pluralign.bounded_http`):
bounds that no socket can take, taken at start and failing every chat later."""

from __future__ import annotations

import pytest

from pluralign.bounded_http import BoundedTransport
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.settings import Settings
from tests.stub_openai import served
from tests.unit.test_remote54_whole_bound import MESSAGES, Dribbling


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
