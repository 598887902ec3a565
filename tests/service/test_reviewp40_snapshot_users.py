"""Review of privacy session 40's users files beside the population snapshots (`comparisons-<ms>.jsonl.users`): a DELETE
reads only the snapshots whose users file names its user, so a users file out of step with its snapshot (a snapshot
restored from a backup or copied in over one, a users file cut short by a partial copy) left a deleted user's rows in
a snapshot for good. Now a users file records its snapshot's size, and one that does not match (or records none) is not
trusted: the snapshot is read whole, as one without a users file is, and its users file drawn again."""

from __future__ import annotations

from service.admin import services as admin_services
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE
from tests.service.test_privacy40_snapshot_users import snapshots_with_and_without


def test_a_snapshot_out_of_step_with_its_users_file_is_still_read_by_a_delete(serve):
    """Before: `without`'s users file named ann alone, the snapshot copied over it held GONE too, and GONE's DELETE
    skipped it: their rows stayed."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        admin, without, holding = snapshots_with_and_without(server, acme)
        without.write_bytes(holding.read_bytes())  # restored from a backup, copied in by hand: its users file is older
        cut = admin_services.snapshot_users_path(holding)
        cut.write_bytes(b"")  # and one cut short by a partial copy
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert GONE not in without.read_text() and GONE not in holding.read_text()
        assert "acme/ann" in without.read_text() and "acme/ann" in holding.read_text()
