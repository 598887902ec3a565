"""Replicas and upgrades (session upgrade51): a model in PLURALIGN_PAL_DIR that an older or a mismatched replica wrote.

A running replica's watch (`service.pal_dir.PalDirWatch`) takes up a newly promoted EM mixture whose users.jsonl a
release before replicas50 rewrote (a DELETE during a rolling upgrade: users.jsonl rewritten, meta.json and its digest
of the file left as they were) as a start does: under the folder's lock, the digest recorded anew, a WARNING naming
the file. Until this session the start took it up (reviewreplicas50) and the watch refused it (FilesDiffer) until the
next promotion, serving the model before."""

from __future__ import annotations

import logging
import shutil
import time

import pytest
import torch

from pluralign.reward.em import USERS_FILE, EMMixture
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from pluralign.store.clocks import served_pal
from service.rewards import checkpoint_version
from tests.service.test_break20_delete_b import logged
from tests.service.test_reviewreplicas50_upgrade import delete_as_release_49_did, em_mixture
from tests.service.tiny import start_service
from tests.unit.clitools import cli

pytestmark = pytest.mark.slow  # replicas' starts (replicas=2): ~4-20 s each on two busy cores (`make test-scaleout`)


def test_a_watching_replica_takes_up_a_promoted_em_mixture_an_older_release_deleted_a_user_from(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, capsys):
    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    artifact = em_mixture(tmp_path / "artifact", minilm.dim, minilm.encoder_id)  # an em job's artifact
    # passes only when the test makes them (the first, at the start, only notes the folder as found)
    server, svc = start_service(tmp_path / "a", tiny_generator_dir, pal, minilm, store_uri=str(tmp_path / "lancedb"),
                                replicas=2, replica_index=0, deletion_sweep_s=3600)
    watch = svc.runtime.pal_dir_watch
    with server:
        deadline = time.monotonic() + 30
        while watch._pending is None and time.monotonic() < deadline:
            time.sleep(0.02)
        before = svc.runtime.rewards.version
        code, _, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(pal))
        assert code == 0, err
        delete_as_release_49_did(pal, "acme/bob")  # the older replica's DELETE, before this one looked
        with logged("pluralign.service", logging.WARNING) as records:
            assert watch.run_once() is False  # the folder changed: let it settle for a pass
            assert watch.run_once() is True  # before: False, FilesDiffer logged, the PAL before served until a promotion
        assert svc.runtime.rewards.version != before and svc.runtime.rewards.kind == "em"
        assert svc.runtime.rewards.model.users == ["acme/ann", "acme/cid"]
        assert EMMixture.load(pal, minilm.encoder_id).users == ["acme/ann", "acme/cid"]  # the digest recorded anew
        said = [text for text in records if str(pal / USERS_FILE) in text]
        assert said and "meta.json" in said[0], records


def test_a_replica_whose_pal_dir_holds_another_model_than_the_live_replicas_serve_stops_at_start(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, capsys):
    """A replica pointed at another folder holding a different model (another deployment's, a restored copy) started
    and served it beside the others' (only an empty folder was told, trialdeploy50). Now each replica's clock row says
    which population version it serves, and a start whose model no live replica serves stops, naming
    PLURALIGN_PAL_DIR; a model promoted into the shared folder just before the start is waited for, not refused."""
    shared_pal = tmp_path / "shared" / "pal"
    shutil.copytree(tiny_pal_dir, shared_pal)
    torch.manual_seed(5)
    other = tmp_path / "other-deployment" / "pal"
    save_pal(other, PALModel(PALConfig(k=2, input_dim=minilm.dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(["zed/zoe"], torch.randn(1, 2)), minilm.encoder_id)
    shared = dict(store_uri=str(tmp_path / "shared-lancedb"), replicas=2, store_sync_ms=200, deletion_sweep_s=0.2)
    server, live = start_service(tmp_path / "b", tiny_generator_dir, shared_pal, minilm, replica_index=1, **shared)
    with server:
        deadline = time.monotonic() + 30
        while not any(served_pal(r) for r in live.runtime.store.recent_clock_rows(60)):
            assert time.monotonic() < deadline, "replica 1 never said which model it serves"
            time.sleep(0.05)
        with pytest.raises(ValueError) as refused:  # before: it started and served the other deployment's model
            start_service(tmp_path / "a", tiny_generator_dir, other, minilm, replica_index=0, **shared)
        said = str(refused.value)
        assert "PLURALIGN_PAL_DIR" in said and str(other) in said and checkpoint_version(other) in said, said
        assert f"replica 1 serves {live.runtime.rewards.version}" in said, said
        # the other model promoted into the shared folder just before replica 0 starts there: replica 1 takes it up
        # within two passes, and replica 0's start waits for it rather than refusing
        code, _, err = cli(capsys, "promote", str(other), "--pal-dir", str(shared_pal))
        assert code == 0, err
        second, started = start_service(tmp_path / "a", tiny_generator_dir, shared_pal, minilm, replica_index=0, **shared)
        with second:
            assert started.runtime.rewards.version == checkpoint_version(other)
            deadline = time.monotonic() + 30
            while live.runtime.rewards.version != checkpoint_version(other):
                assert time.monotonic() < deadline
                time.sleep(0.05)
