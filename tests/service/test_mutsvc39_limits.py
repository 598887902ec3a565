"""The per-tenant rate limit over real HTTP: what survived mutation testing (session 39)."""

from __future__ import annotations

import pytest

from tests.service.tiny import burst_within_one_second, start_service

TRIES = 10  # bursts sent at most: one that straddled two seconds is sent again in the next


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    tenant_requests_per_second=2)
    with server:
        yield service


def test_the_request_past_the_limit_is_the_one_refused(svc):
    """With 2 requests a second, a tenant's first two requests are answered (a 404: no such user) and the third within that
    second is a 429 with Retry-After. Litestar's window is the wall clock's whole second (`int(time())`, its reset the next
    one), and its store forgets the count a second after writing it, by its own clock (so a stopped `time` does not hold
    the window): a second that ended between the requests refilled the budget, and the third was answered (session 45's
    full run, on a loaded machine: [404, 404, 404]). So each burst starts a second, and only one that this client (on the
    service's clock: the same machine's) saw begin and end within one second is judged; another is sent again."""
    with svc.client() as c:
        answers = burst_within_one_second(lambda: c.get("/v1/users/nobody/preferences"), 3, TRIES)
    assert [a.status_code for a in answers] == [404, 404, 429], [a.text for a in answers]  # nobody is unknown: a 404
    assert int(answers[2].headers["Retry-After"]) >= 1
