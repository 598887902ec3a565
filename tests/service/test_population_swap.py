"""A population model retrained on the service's own feedback is swapped in while serving."""

from __future__ import annotations

import threading

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job
from tests.service.tiny import give_drink_likes, start_service

CHAT_PAUSE_S = 0.05  # between the chats a chatter sends while a population job trains


def test_a_promoted_pal_job_serves_the_next_request_without_a_restart(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    before = rt.rewards.version
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give_drink_likes(c, per_user=8)
        old_profile = c.get("/v1/users/ann").json()
        assert old_profile["pal"]["version"] == before and len(old_profile["pal"]["logits"]) == 2

        # chats keep being served while the job trains and its model is swapped in: one at a time, each after a pause
        # of `CHAT_PAUSE_S` (back to back, they took a core from the job's training for its whole run, suite48)
        failures, served, stop = [], [], threading.Event()

        def chatter():
            with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {svc.keys['acme']}"}, timeout=60) as cc:
                while not stop.wait(CHAT_PAUSE_S):
                    r = cc.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                              "messages": [{"role": "user", "content": "Morning drink?"}]})
                    if r.status_code != 200:
                        failures.append(r.text)
                    served.append(rt.rewards.version)  # the population model in service once it was answered

        thread = threading.Thread(target=chatter)
        thread.start()
        try:
            r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 3, "epochs": 3, "latent_dim": 8, "hidden": 16}})
            assert r.status_code == 201, r.text
            job = wait_job(admin, r.json()["id"], timeout=300)
            assert job["state"] == "succeeded", job
            assert job["promoted"] is True, job
        finally:
            stop.set()
            thread.join()
        assert failures == [] and before in served, served  # chats were answered while the job trained
        assert rt.rewards.version != before and rt.rewards.k == 3
        body = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]}).json()
        assert body["pluralign"]["prior"] is False
        profile = c.get("/v1/users/ann").json()  # refitted against the new prototypes
        assert profile["pal"]["version"] == rt.rewards.version and len(profile["pal"]["logits"]) == 3
        assert profile["user_model"]["population"] == rt.rewards.version
    # a restart serves the promoted model, not the checkpoint it started from
    from pluralign.policy.generator import Generator
    from service.runtime import Runtime

    again = Runtime.build(rt.settings, generator=Generator.from_folder(tiny_generator_dir), encoder=minilm)
    assert again.rewards.version == rt.rewards.version


@pytest.mark.slow  # a service and an EM job of its own (~7 CPU-s; make test-cli); EM promoted over HTTP: test_break20_delete.py's first test
def test_a_promoted_em_mixture_is_served_too(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """EM (K Bradley-Terry heads) retrained on the service's feedback replaces the PAL population:
    users get logits over its heads and their own model on top, without a restart."""
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give_drink_likes(c, per_user=8, likers=(("ann", "tea"), ("ben", "coffee")))
        r = admin.post("/admin/jobs", json={"kind": "em", "params": {"k": 2, "restarts": 1}})
        assert r.status_code == 201, r.text
        job = wait_job(admin, r.json()["id"], timeout=300)
        assert job["state"] == "succeeded" and job["promoted"] is True, job
        assert rt.rewards.kind == "em" and rt.rewards.k == 2
        scores = {}
        for user in ("ann", "ben"):
            out = c.post("/v1/rewards/score", json={"user": user, "prompt": "A drink for the morning?",
                                                     "responses": ["Some tea, please.", "Some coffee, please."]}).json()
            assert out["prior"] is False
            scores[user] = out["best_index"]
        assert scores == {"ann": 0, "ben": 1}
        profile = c.get("/v1/users/ann").json()
        assert profile["pal"]["version"] == rt.rewards.version and len(profile["user_model"]["prototypes"]) == 2
        body = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3, "n": 2,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]})
        assert body.status_code == 200, body.text
