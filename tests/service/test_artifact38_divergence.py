"""An admin PAL job whose training diverges fails naming the epoch and the loss, and the service keeps
serving the population model it served before (nothing promoted, no artifact written)."""

from __future__ import annotations

import dataclasses

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job
from tests.service.tiny import give_drink_likes, start_service
from training.jobs.kinds import KINDS


@pytest.mark.slow
def test_a_diverging_pal_job_fails_with_the_epoch_and_loss_and_the_served_model_stays(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    before = rt.rewards.version
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give_drink_likes(c, per_user=6)
        old_profile = c.get("/v1/users/ann").json()
        assert old_profile["pal"]["version"] == before
        # The job's params are bounded (lr_* <= 1), which on this data does not diverge: the worker's
        # command line gets the rates a CLI user could give (`--lr-shared 1e12`), appended after the job's own.
        pal = KINDS["pal"]
        runner = server.server.config.app.state.admin.runner
        runner.kinds["pal"] = dataclasses.replace(
            pal, command=lambda job, out: [*pal.command(job, out), "--lr-shared=1e12", "--lr-user=1e12"])
        r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 2, "epochs": 3, "latent_dim": 8, "hidden": 16}})
        assert r.status_code == 201, r.text
        job = wait_job(admin, r.json()["id"], timeout=300)
        assert job["state"] == "failed", job
        assert "PAL training diverged at epoch 1: the " in job["error"] and " loss is nan" in job["error"], job["error"]
        assert job["promoted"] is not True
        artifact = tmp_path / "data" / "jobs" / "artifacts" / job["id"]
        assert not artifact.exists() or list(artifact.iterdir()) == []  # no checkpoint, whole or part
        assert not (tmp_path / "data" / "pal-promoted").exists()
        assert rt.rewards.version == before
        assert c.get("/v1/users/ann").json()["pal"] == old_profile["pal"]
        chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]})
        assert chat.status_code == 200, chat.text
        health = c.get("/health").json()
        assert health["status"] == "ok", health
