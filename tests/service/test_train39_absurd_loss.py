"""An admin PAL job whose loss stays finite but absurd (lr 1e8) fails with the reason, writes no artifact,
and the service keeps serving the population model it served.

Before: only a NaN or inf loss failed the job; at lr 1e8 (loss ~1e34) the worker saved the epoch with the
lowest validation loss and the job was promoted whenever that epoch's validation accuracy (a coin flip on a
few pairs) was not below the served model's.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job
from tests.service.tiny import start_service
from training.jobs.kinds import KINDS


@pytest.mark.slow
def test_a_pal_job_with_an_absurd_finite_loss_fails_naming_it_and_nothing_is_served(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    before = rt.rewards.version
    rng = random.Random(0)
    words = "tea coffee rain sun river stone cloud music book garden winter summer bread salt ocean hill lamp road".split()
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        for user in ("ann", "ben", "cy"):
            for i in range(8):
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Say something about {rng.choice(words)} {i}",
                                                  "chosen": " ".join(rng.sample(words, 4)), "rejected": " ".join(rng.sample(words, 4))})
                assert r.status_code == 201, r.text
        # a job's own params are bounded (lr_* <= 1): the worker gets the rates a CLI user could give, after its own
        pal = KINDS["pal"]
        runner = server.server.config.app.state.admin.runner
        runner.kinds["pal"] = dataclasses.replace(pal, command=lambda job, out: [*pal.command(job, out), "--lr-shared=1e8", "--lr-user=1e8"])
        r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 2, "epochs": 3, "latent_dim": 8, "hidden": 16}})
        assert r.status_code == 201, r.text
        job = wait_job(admin, r.json()["id"], timeout=300)
        assert job["state"] == "failed", job
        assert job["error"].startswith("exit code 2: pluralign: error: PAL training diverged at epoch "), job["error"]
        assert "nats/pair on its training pairs" in job["error"], job["error"]
        assert job["error"].endswith("embeddings not normalized, or validation pairs with chosen and rejected swapped"), job["error"]
        assert job["promoted"] is not True
        artifact = tmp_path / "data" / "jobs" / "artifacts" / job["id"]
        assert not artifact.exists() or list(artifact.iterdir()) == []
        assert not (tmp_path / "data" / "pal-promoted").exists()
        assert rt.rewards.version == before
