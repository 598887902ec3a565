"""The per-tenant rate limit over real HTTP: what survived mutation testing (session 39)."""

from __future__ import annotations

import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    tenant_requests_per_second=2)
    with server:
        yield service


def test_the_request_past_the_limit_is_the_one_refused(svc):
    """With 2 requests a second, a tenant's first two requests are answered (a 404: no such user) and the third within that
    second is a 429 with Retry-After."""
    with svc.client() as c:
        answers = [c.get("/v1/users/nobody/preferences") for _ in range(3)]
    assert [a.status_code for a in answers] == [404, 404, 429], [a.text for a in answers]  # nobody is unknown: a 404
    assert int(answers[2].headers["Retry-After"]) >= 1
