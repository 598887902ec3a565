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


def test_a_delete_keeps_the_same_user_id_of_another_tenant_in_a_population_snapshot(serve, tiny_pal_dir, minilm):
    """acme's `zed` is deleted; globex's `zed` (another person who picked the same id) keeps their rows in the
    population snapshot, their fitted weights in a PAL job's artifact, and their preferences (slow: test_a_delete_leaves_
    the_same_user_id_of_another_tenant_in_a_population_model, whose artifact a real job trained). review delete61: the
    artifact, written as a job's would be (`save_pal`) with a row for each of the three users. review speed63: an EM job's
    artifact too (`EMMixture.save`, as an EM job's worker writes it), rewritten without acme's `zed` alone (the EM
    artifact's check was the slow test_nothing_of_a_deleted_user_is_left_after_population_jobs's only)."""
    import torch

    from pluralign.reward.em import EMConfig, EMMixture
    from pluralign.reward.pal_checkpoint import load_pal, save_pal
    from pluralign.reward.user_weights import UserWeights

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_comparisons(acme, "zed", "tea", MARKER, n=2)
        give_comparisons(globex, "zed", "coffee", KEPT, n=2)
        give_comparisons(globex, "ann", "tea", n=2)
        for client, user in ((acme, "zed"), (globex, "zed"), (globex, "ann")):
            assert client.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        snapshot = server.server.config.app.state.admin.population_snapshot()
        assert sorted({r["user_id"] for r in _rows(snapshot)}) == ["acme/zed", "globex/ann", "globex/zed"]
        model, _, meta = load_pal(tiny_pal_dir, minilm.encoder_id)
        artifact = data / "jobs" / "artifacts" / "pal-of-both-tenants"
        users = ["acme/zed", "globex/ann", "globex/zed"]
        save_pal(artifact, model, UserWeights.from_logits(users, torch.zeros(3, meta.k)), minilm.encoder_id)
        mixture = EMMixture.from_heads(torch.zeros(2, 2 * minilm.dim), torch.log(torch.tensor([0.5, 0.5])), EMConfig(k=2))
        mixture.users = list(users)
        mixture.fit_result.responsibilities = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
        em = mixture.save(data / "jobs" / "artifacts" / "em-of-both-tenants", minilm.encoder_id)
        assert acme.delete("/v1/users/zed").status_code == 200
        assert files_holding(data, MARKER) == []
        _, weights, meta = load_pal(artifact, minilm.encoder_id)
        assert sorted(weights.users()) == ["globex/ann", "globex/zed"] and meta.users == 2
        mixture = EMMixture.load(em, minilm.encoder_id)  # each kept user's row is theirs still
        assert mixture.users == ["globex/ann", "globex/zed"]
        assert mixture.fit_result.responsibilities.tolist() == [[0.0, 1.0], [0.5, 0.5]]
        rows = _rows(snapshot)
        assert sorted({r["user_id"] for r in rows}) == ["globex/ann", "globex/zed"] and len(rows) == 4
        assert KEPT.encode() in snapshot.read_bytes()
        assert globex.get("/v1/users/zed").status_code == 200
        assert globex.get("/v1/users/zed/preferences").json()["total"] == 2
        assert acme.get("/v1/users/zed").status_code == 404


def test_an_artifact_written_after_its_users_delete_keeps_only_the_users_its_snapshot_holds(serve, tiny_pal_dir, minilm):
    """A PAL job read its snapshot before a user's DELETE and writes its artifact after it, with that user's weights:
    when it succeeds (the runner's `on_succeed`: `AdminService.keep_snapshot_users`) the artifact keeps only the users
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
        # what the job runner calls on a succeeded job, before promotion (review delete61: not `keep_snapshot_users`
        # itself, so the hook's wiring is checked too)
        admin.runner.on_succeed(SimpleNamespace(kind="pal", artifact=str(artifact), params={"data": str(snapshot)}))
        _, weights, meta = load_pal(artifact, minilm.encoder_id)
        assert sorted(weights.users()) == ["acme/ann"] and meta.users == 1
        assert files_holding(data, MARKER, GONE) == []


def test_a_legacy_tenant_named_population_deletes_only_its_user_and_what_a_crash_left_goes(serve, tiny_pal_dir, minilm):
    """A key issued before tenant `population` was reserved: its user `comparisons` is deleted, and the population
    snapshot (whose name matched that user's snapshot pattern) is rewritten, not removed. Then what a crash left beside
    population files (a swap's `.pal-promoted.staged` and `.pal-promoted.retired`, a snapshot's temp file), each holding
    a user, goes with that user's DELETE, and the promoted model (`pal-promoted`) is rewritten without them, its weights
    file's temp file gone (slow: test_break20_tenants.py's test of both, on a PAL job's snapshot and promoted model).
    review delete61: the promoted model and its temp file, written here as a promotion would leave them."""
    import httpx
    import torch

    from pluralign.reward.pal_checkpoint import load_pal, save_pal
    from pluralign.reward.user_weights import UserWeights
    from service.auth import ApiKey, hash_key
    from service.runtime import PROMOTED_PAL
    from tests.service.test_break20_delete import GONE

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    key = "pk-legacy-population-tenant-key-0061"
    keys = msgspec.json.decode((data / "api_keys.json").read_bytes(), type=list[ApiKey])
    keys.append(ApiKey(sha256=hash_key(key), tenant="population", admin=False, name="legacy", created_at=0.0))
    (data / "api_keys.json").write_bytes(msgspec.json.encode(keys))
    with server, svc.client("acme") as acme, httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"},
                                                           timeout=120) as legacy:
        give_comparisons(legacy, "comparisons", "tea", n=2)
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=2)
        for client, user in ((legacy, "comparisons"), (acme, GONE), (acme, "ann")):
            assert client.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        snapshot = server.server.config.app.state.admin.population_snapshot()
        r = legacy.delete("/v1/users/comparisons")
        assert r.status_code == 200, r.text
        assert snapshot.is_file(), "a DELETE removed the population snapshot"
        assert {r["user_id"] for r in _rows(snapshot)} == {"acme/ann", f"acme/{GONE}"}

        model, _, meta = load_pal(tiny_pal_dir, minilm.encoder_id)
        users = ["acme/ann", f"acme/{GONE}"]
        for leftover in (PROMOTED_PAL, ".pal-promoted.staged", ".pal-promoted.retired"):  # whole copies of a population checkpoint
            save_pal(data / leftover, model, UserWeights.from_logits(users, torch.zeros(2, meta.k)), minilm.encoder_id)
        served = data / PROMOTED_PAL  # the promoted model (as a swap leaves it) and a weights write's temp file in it
        (served / ".user_weights.json.k3j9x").write_bytes((served / "user_weights.json").read_bytes())
        temp = snapshot.with_name(f".{snapshot.name}.q8w2e")
        temp.write_bytes(snapshot.read_bytes())
        assert {line.split("/")[0] for line in files_holding(data, MARKER, GONE)} >= {".pal-promoted.staged", "jobs"}
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert files_holding(data, MARKER, GONE) == []
        assert not (data / ".pal-promoted.staged").exists() and not (data / ".pal-promoted.retired").exists()
        assert not temp.exists() and snapshot.is_file() and b"acme/ann" in snapshot.read_bytes()
        assert not (served / ".user_weights.json.k3j9x").exists()
        _, weights, meta = load_pal(served, minilm.encoder_id)  # the promoted model still loads, without the user
        assert sorted(weights.users()) == ["acme/ann"] and meta.users == 1
