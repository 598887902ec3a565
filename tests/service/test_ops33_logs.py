"""Session 33 (operations): the access log of a 405 (a route asked with a method it does not take)
names the route template, never the raw path with the user id in it. The real app over HTTP."""

from __future__ import annotations

import httpx

from tests.service.test_obs30_request_ids import collect, lines_of  # noqa: F401 (a fixture)
from tests.service.test_stop_chats import serve  # noqa: F401 (a fixture)

USER = "user-marker-405-Qx9"


def test_a_405_is_logged_under_the_route_template(serve, collect):  # noqa: F811
    _, server, svc = serve()
    logs = collect()
    with server:
        headers = {"Authorization": f"Bearer {svc.keys['acme']}", "X-Request-Id": "ops33-405"}
        r = httpx.put(f"{svc.url}/v1/users/{USER}", headers=headers, json={})
        assert r.status_code == 405, r.text
        assert r.headers["X-Request-Id"] == "ops33-405"
    (line,) = [rec for rec in logs.records if rec.name == "pluralign.access" and rec.request_id == "ops33-405"]
    assert line.access["status"] == 405 and line.access["route"] == "/v1/users/{user_id}", line.access
    written = "\n".join(lines_of(logs))
    assert USER not in written, [x for x in lines_of(logs) if USER in x]
