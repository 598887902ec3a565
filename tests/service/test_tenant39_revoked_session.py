"""Session 39: revoking an admin key closes the dashboard sessions it opened.

A dashboard session (the `pluralign_admin` cookie, POST /admin/login with an admin key) kept its
principal for `admin_session_s` (an hour) whatever became of the key: revoked, its key answered 401 at
once (docs/api.md, "Keys") while a browser signed in with it went on reading every tenant's dashboard,
stored prompts and answers included, jobs and audits until the session expired. Now a session lives only
as long as the key that opened it is an admin key."""

from __future__ import annotations

import httpx

from service.admin.controllers import ADMIN_HANDLERS
from service.auth import hash_key, key_id
from tests.unit.clitools import cli


def test_a_revoked_admin_keys_session_no_longer_reads_the_dashboard(serve, capsys):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        r = acme.post("/v1/feedback", json={"type": "comparison", "user": "ann", "prompt": "Tea?", "chosen": "Green tea, brewed short.", "rejected": "No."})
        assert r.status_code == 201, r.text
        login = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]})
        jar = {"pluralign_admin": login.cookies["pluralign_admin"]}
        assert httpx.get(svc.url + "/admin/dashboard?tenant=acme", cookies=jar).status_code == 200
        entry = svc.runtime.keys.lookup(svc.keys["admin"])
        assert entry.sha256 == hash_key(svc.keys["admin"])
        code, _, err = cli(capsys, "keys", "--data-dir", str(data), "revoke", key_id(entry))
        assert code == 0, err
        assert httpx.get(svc.url + "/admin/jobs", headers={"Authorization": f"Bearer {svc.keys['admin']}"}).status_code == 401
        page = httpx.get(svc.url + "/admin/dashboard?tenant=acme", cookies=jar)
        assert page.status_code == 401, page.text[:300]
        assert "Green tea" not in page.text
