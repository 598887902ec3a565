"""Tenant names reach file paths (the admin area's comparison snapshots live under
`jobs/data/<tenant>/`, population snapshots under `jobs/data/population/`): a tenant named
`population` deleting a user named `comparisons` removed every population snapshot, and a tenant
name with a `/` wrote outside its folder. Tenant names are now ids, `population` is reserved, and a
DELETE never removes population snapshots by name."""

from __future__ import annotations

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.auth import ApiKey, hash_key
from tests.service.test_break20_delete import give_comparisons, run_job
from tests.service.tiny import start_service
from tests.unit.clitools import cli


@pytest.mark.slow  # make test-deletion (~9.5 CPU-s: a PAL job's worker); test_delete61_population.py keeps its checks without a job
def test_a_legacy_tenant_named_population_deletes_only_its_user_never_the_population_snapshots(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
):
    """A key issued before the rule for tenant `population` (written into api_keys.json as an
    older version wrote it): its user `comparisons` is deleted; the population snapshot, whose name
    matched the user's snapshot pattern, is rewritten without them, not removed.

    Then, on the same population job (one job's worker costs seconds), what a crash left beside
    population files: a process killed mid-swap leaves `.pal-promoted.staged` or
    `.pal-promoted.retired` (whole copies of a population checkpoint); one killed mid-write leaves a
    snapshot's or a weights file's temp file (`.comparisons-<ms>.jsonl.<random>`,
    `.user_weights.json.<random>`). Each holds every training user. Under the population lock no
    swap or write is in progress, so a DELETE removes them; the promoted model and the snapshot
    themselves are rewritten as before."""
    import shutil

    from pluralign.reward.pal_checkpoint import load_pal
    from service.runtime import PROMOTED_PAL
    from tests.service.test_break20_delete import GONE, MARKER, files_holding

    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    key = "pk-legacy-population-tenant-key-0001"
    keys = msgspec.json.decode((data / "api_keys.json").read_bytes(), type=list[ApiKey])
    keys.append(ApiKey(sha256=hash_key(key), tenant="population", admin=False, name="legacy", created_at=0.0))
    (data / "api_keys.json").write_bytes(msgspec.json.encode(keys))
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        import httpx

        legacy = httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        give_comparisons(legacy, "comparisons", "tea")
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        assert run_job(admin, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})["promoted"]
        snapshots = sorted((data / "jobs" / "data" / "population").glob("comparisons-*.jsonl"))
        assert len(snapshots) == 1
        r = legacy.delete("/v1/users/comparisons")
        assert r.status_code == 200, r.text
        assert snapshots[0].is_file(), "a DELETE removed the population snapshot"
        users = {msgspec.json.decode(line)["user_id"] for line in snapshots[0].read_bytes().splitlines()}
        assert users == {"acme/ann", f"acme/{GONE}"}  # the deleted user's rows went; acme's users stayed
        legacy.close()

        # what a crash left beside population files goes with the next deleted user
        served = data / PROMOTED_PAL
        for leftover in (".pal-promoted.staged", ".pal-promoted.retired"):
            shutil.copytree(served, data / leftover)
        shutil.copy(served / "user_weights.json", served / ".user_weights.json.k3j9x")
        (snapshot,) = snapshots
        shutil.copy(snapshot, snapshot.with_name(f".{snapshot.name}.q8w2e"))
        assert files_holding(data, MARKER, GONE)
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert files_holding(data, MARKER, GONE) == []
        assert not (data / ".pal-promoted.staged").exists() and not (data / ".pal-promoted.retired").exists()
        _, weights, _ = load_pal(served)  # the promoted checkpoint still loads, without the user
        assert sorted(weights.users()) == ["acme/ann"]
        assert snapshot.is_file() and b"acme/ann" in snapshot.read_bytes()


@pytest.mark.parametrize("tenant", ["population", "acme/../x", "../x", ".hidden", "a b", "x" * 129, "tenant\n"])
def test_keys_create_refuses_a_tenant_name_that_is_not_an_id_or_is_reserved(tmp_path, capsys, tenant):
    code, out, err = cli(capsys, "keys", "--data-dir", str(tmp_path), "create", "--tenant", tenant)
    assert code == 2 and "--tenant" in err and not out, (code, out, err)
    assert not (tmp_path / "api_keys.json").exists() or tenant not in (tmp_path / "api_keys.json").read_text()


def test_keyring_refuses_them_too_and_keeps_the_names_in_use(tmp_path):
    from service.auth import KeyRing

    ring = KeyRing(tmp_path / "api_keys.json")
    for tenant in ("acme", "tea-house", "ops", "default", "a.b@c:d+e"):
        assert ring.lookup(ring.issue(tenant)).tenant == tenant
    for tenant in ("population", "x/y", ""):
        with pytest.raises(ValueError, match="tenant"):
            ring.issue(tenant)
