"""Review of retract54 (DELETE /v1/users/{user_id}/preferences/{pref_id}), on the real app over HTTP and a real LanceDB
in a temp folder: what the retraction missed."""

from __future__ import annotations

from tests.service.test_retract54 import MISCLICK, give_rule, misclick


def test_an_adapter_made_before_the_misclick_was_imported_again_is_no_longer_served(serve, tiny_generator_dir, tmp_path):
    """An import of the user's export (the same rows, `already_stored`) moves each row's `received_at` to now. The
    retraction took that time for when the row arrived: the adapter registered, and the adapter job queued, between the
    misclick's first arrival and the import (both may hold it) were kept, served and left to promote."""
    from pluralign.policy.adapters import adapter_name
    from service.admin.controllers import ADMIN_HANDLERS
    from service.users.services import register_adapter
    from tests.service.test_service_adapters import random_adapter

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rt, base = svc.runtime, tiny_generator_dir.name
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_rule(acme, "ria", 2)
        oops = misclick(acme, "ria")
        register_adapter(rt, "acme", "ria", random_adapter(tiny_generator_dir, tmp_path / "trained", base, "user", 1))
        job = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "ria", "steps": 1}})
        assert job.status_code == 201, job.text  # its snapshot holds the misclick
        export = acme.get("/v1/users/ria/export?format=preferences")
        assert export.status_code == 200 and MISCLICK in export.text
        again = acme.post("/v1/users/ria/import", content=export.text)  # a nightly sync sends the same file
        assert again.status_code == 201 and oops in again.json()["already_stored"], again.text

        r = acme.delete(f"/v1/users/ria/preferences/{oops}")
        assert r.status_code == 200, r.text
        assert r.json()["adapter_dropped"] is True, r.text
        assert acme.get("/v1/users/ria").json()["adapter"] is None
        assert not rt.adapters.registry.folder("acme", "ria").exists()
        assert admin.get(f"/admin/jobs/{job.json()['id']}").status_code == 404
        chat = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "max_tokens": 1, "user": "ria"}
        assert acme.post("/v1/chat/completions", json=chat).json()["pluralign"]["adapter"] != adapter_name("acme", "ria")

