"""The admin HTML pages send the headers a browser needs to keep them to themselves."""

from __future__ import annotations

import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    from service.admin.controllers import ADMIN_HANDLERS

    server, service = start_service(tmp_path_factory.mktemp("pages"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server:
        yield service


def test_admin_pages_cannot_be_framed_sniffed_or_cached(svc):
    """The sign-in form and the dashboard (users' stored answers) were sent with no framing,
    sniffing, caching or referrer policy: another site could frame the sign-in (clickjacking) and a
    shared or back-button cache could keep the dashboard."""
    with svc.client("admin") as admin:
        pages = [admin.get("/admin/dashboard"), admin.get("/admin/login"), admin.post("/admin/login", data={"key": "pk-nope"})]
    assert [p.status_code for p in pages] == [200, 200, 401]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "default-src 'none'" in page.headers["content-security-policy"]  # no script, nothing fetched
        assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
