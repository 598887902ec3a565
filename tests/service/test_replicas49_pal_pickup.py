"""Replicas sharing PLURALIGN_PAL_DIR serve a population model an operator put there while they run (`service.pal_dir`).

Before session 49 each replica served the model it had loaded at start until it was restarted: a job's artifact
copied into PLURALIGN_PAL_DIR reached a replica only through its restart, so a rolling restart fitted users against
two population models meanwhile. Now each replica takes it up within two `deletion_sweep_s` passes once the copy has
settled; one it cannot serve leaves the served model in place and every request answered."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from service.rewards import checkpoint_version
from tests.service.tiny import start_replicas, wait_passes

pytestmark = pytest.mark.slow  # two replica starts and a few passes: ~12 s on two busy cores (`make test-scaleout`)

SWEEP_S = 0.2


def chat(client) -> int:
    return client.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]}).status_code


def served(service) -> str:
    return service.client("acme").get("/health").json()["pal"]["version"]


def test_both_replicas_serve_a_model_copied_into_the_shared_pal_dir_and_keep_theirs_for_one_they_cannot_read(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    torch.manual_seed(1)  # a job's artifact: another model of the same encoder and K
    artifact = tmp_path / "artifact"
    save_pal(artifact, PALModel(PALConfig(k=2, input_dim=minilm.dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(["u1", "u2"], torch.randn(2, 2)), minilm.encoder_id)
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, pal, minilm, sync_ms=200, deletion_sweep_s=SWEEP_S)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        old = served(a)
        assert served(b) == old and chat(acme_a) == chat(acme_b) == 200
        for path in sorted(artifact.iterdir()):  # `cp artifact/* $PLURALIGN_PAL_DIR/`
            shutil.copy(path, pal / path.name)
        new = checkpoint_version(pal)
        assert new != old
        deadline = time.monotonic() + 20 * SWEEP_S + 5  # two passes and a load, with room for two busy cores
        while {served(a), served(b)} != {new}:  # before: both served `old` until restarted
            assert time.monotonic() < deadline, (served(a), served(b), new)
            time.sleep(0.05)
        assert chat(acme_a) == chat(acme_b) == 200

        meta = json.loads((pal / "meta.json").read_text())  # an earlier release's checkpoint put there
        (pal / "meta.json").write_text(json.dumps({**meta, "schema_version": 0, "metrics": {"val_acc": 0.5}}))
        for service in (a, b):  # taken up by the second pass to look at the change (the first to find it
            # unchanged): 3 from now, one maybe under way
            wait_passes(service.runtime.pal_dir_watch, 3)
        assert served(a) == served(b) == new and chat(acme_a) == chat(acme_b) == 200
