"""speedA63: the checks of test_break20_delete_b.py's slow-marked
test_an_unreadable_population_artifact_fails_the_delete_after_every_other_file_is_rewritten kept in the default suite
without its PAL job's worker (a process that imports torch and trains: ~10 CPU-s). The job's artifact is written as a
job's would be (`save_pal`, as test_delete61_population.py does), its copy of another schema beside it, and the
DELETE comes over HTTP as a user's would."""

from __future__ import annotations

import shutil

import msgspec

from service.admin.controllers import ADMIN_HANDLERS
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, files_holding, give_comparisons
from tests.service.test_break20_delete_b import logged


def test_an_artifact_of_another_schema_fails_the_delete_after_the_other_artifacts_are_rewritten(serve, tiny_pal_dir, minilm):
    import torch

    from pluralign.reward.pal_checkpoint import load_pal, save_pal
    from pluralign.reward.user_weights import UserWeights
    from pluralign.store.deletions import user_hash

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=2)
        for user in (GONE, "ann"):
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        model, _, meta = load_pal(tiny_pal_dir, minilm.encoder_id)
        artifacts = data / "jobs" / "artifacts"
        users = ["acme/ann", f"acme/{GONE}"]
        save_pal(artifacts / "pal-job", model, UserWeights.from_logits(users, torch.zeros(2, meta.k)), minilm.encoder_id)
        old = artifacts / "0-older-schema"  # sorts before the job's folder
        shutil.copytree(artifacts / "pal-job", old)
        described = msgspec.json.decode((old / "meta.json").read_bytes())
        (old / "meta.json").write_bytes(msgspec.json.encode({**described, "schema_version": 0}))
        before = {p.name: p.read_bytes() for p in old.iterdir()}
        assert files_holding(data, GONE)

        with logged("pluralign.service") as records:
            r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 500, r.text
        assert "older-schema" not in r.text  # the path is in the log only
        assert any("0-older-schema" in text for text in records)
        holding = {line.split(": ")[0] for line in files_holding(data, MARKER, GONE)}
        entry = f"{JOURNAL_FOLDER}/{user_hash('acme', GONE)}.json"
        assert entry in holding and files_holding(data / JOURNAL_FOLDER, MARKER) == [], holding
        assert all(path.startswith("jobs/artifacts/0-older-schema/") for path in holding - {entry}), holding
        _, weights, meta = load_pal(artifacts / "pal-job", minilm.encoder_id)
        assert sorted(weights.users()) == ["acme/ann"] and meta.users == 1
        assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # left as it was
        assert acme.get(f"/v1/users/{GONE}").status_code == 404

        assert acme.delete(f"/v1/users/{GONE}").status_code == 500  # not reported done while it is there
        shutil.rmtree(old)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 404  # nothing of them is left
        assert files_holding(data, MARKER, GONE) == []
        assert acme.get("/v1/users/ann").status_code == 200
