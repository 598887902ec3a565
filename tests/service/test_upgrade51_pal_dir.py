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

from pluralign.reward.em import USERS_FILE, EMMixture
from tests.service.test_break20_delete_b import logged
from tests.service.test_reviewreplicas50_upgrade import delete_as_release_49_did, em_mixture
from tests.service.tiny import start_service
from tests.unit.clitools import cli

pytestmark = pytest.mark.slow  # a replica's start (replicas=2): ~4 s on two busy cores (`make test-scaleout`)


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
