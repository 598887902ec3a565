"""delete61: the checks of two slow-marked tests of test_break20_delete.py kept in the default suite without their
population job's worker (a process that imports torch and trains: ~5 CPU-s each). A population snapshot is what such a
job reads; it is made here the way the admin area makes one for a job (`AdminService.population_snapshot`), and the
DELETE comes over HTTP as a user's would."""

from __future__ import annotations

import msgspec

from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding
from tests.service.test_break20_delete import KEPT, MARKER, give_comparisons


def _rows(snapshot) -> list[dict]:
    return [msgspec.json.decode(line) for line in snapshot.read_bytes().splitlines() if line.strip()]


def test_a_delete_keeps_the_same_user_id_of_another_tenant_in_a_population_snapshot(serve):
    """acme's `zed` is deleted; globex's `zed` (another person who picked the same id) keeps their rows in the
    population snapshot and their preferences (slow: test_a_delete_leaves_the_same_user_id_of_another_tenant_in_a_
    population_model, which checks the PAL artifact's weights too)."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_comparisons(acme, "zed", "tea", MARKER, n=2)
        give_comparisons(globex, "zed", "coffee", KEPT, n=2)
        give_comparisons(globex, "ann", "tea", n=2)
        for client, user in ((acme, "zed"), (globex, "zed"), (globex, "ann")):
            assert client.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        snapshot = server.server.config.app.state.admin.population_snapshot()
        assert sorted({r["user_id"] for r in _rows(snapshot)}) == ["acme/zed", "globex/ann", "globex/zed"]
        assert acme.delete("/v1/users/zed").status_code == 200
        assert files_holding(data, MARKER) == []
        rows = _rows(snapshot)
        assert sorted({r["user_id"] for r in rows}) == ["globex/ann", "globex/zed"] and len(rows) == 4
        assert KEPT.encode() in snapshot.read_bytes()
        assert globex.get("/v1/users/zed").status_code == 200
        assert globex.get("/v1/users/zed/preferences").json()["total"] == 2
        assert acme.get("/v1/users/zed").status_code == 404


def test_an_artifact_written_after_its_users_delete_keeps_only_the_users_its_snapshot_holds(serve, tiny_pal_dir, minilm):
    """A PAL job read its snapshot before a user's DELETE and writes its artifact after it, with that user's weights:
    when it succeeds (`AdminService.keep_snapshot_users`, the runner's `on_succeed`) the artifact keeps only the users
    its snapshot holds now (slow: test_a_user_deleted_while_a_population_job_trains_is_not_in_its_artifact, which stops
    a real job's worker after it read its snapshot). The artifact is written as a job's would be (`save_pal`), on the
    served model's weights with per-user rows for the snapshot's users."""
    from types import SimpleNamespace

    import torch

    from pluralign.reward.pal_checkpoint import load_pal, save_pal
    from pluralign.reward.user_weights import UserWeights
    from tests.service.test_break20_delete import GONE

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=2)
        for user in (GONE, "ann"):
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        admin = server.server.config.app.state.admin
        snapshot = admin.population_snapshot()  # what the job read
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        assert sorted({r["user_id"] for r in _rows(snapshot)}) == ["acme/ann"]

        model, _, meta = load_pal(tiny_pal_dir, minilm.encoder_id)
        artifact = data / "jobs" / "artifacts" / "pal-trained-meanwhile"
        users = ["acme/ann", f"acme/{GONE}"]  # (sorted)
        save_pal(artifact, model, UserWeights.from_logits(users, torch.zeros(2, meta.k)), minilm.encoder_id)
        assert sorted(load_pal(artifact, minilm.encoder_id)[1].users()) == users and files_holding(data, GONE)
        admin.keep_snapshot_users(SimpleNamespace(kind="pal", artifact=str(artifact), params={"data": str(snapshot)}))
        _, weights, meta = load_pal(artifact, minilm.encoder_id)
        assert sorted(weights.users()) == ["acme/ann"] and meta.users == 1
        assert files_holding(data, MARKER, GONE) == []
