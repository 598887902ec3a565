"""A population model retrained on the service's own feedback is swapped in while serving."""

from __future__ import annotations

import threading

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job
from tests.service.tiny import give_drink_likes, start_service

CHAT_PAUSE_S = 0.05  # between the chats a chatter sends while a population job trains


def test_a_pal_model_put_into_service_serves_the_next_request_and_a_restart(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """The slow-marked test below's checks past its PAL job (the job's worker: ~8 CPU-s; test_break20_delete.py's first
    test runs PAL and EM jobs over HTTP to their promotion in the default suite): a K=3 PAL checkpoint put into service as
    the runner puts a promoted PAL job's artifact (`Admin.put_into_service`) while a chatter's chats are answered; the
    next chat, the user's profile (refitted against the new prototypes) and a restart serve it."""
    import time

    import torch

    from pluralign.policy.generator import Generator
    from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
    from service.runtime import Runtime
    from training.jobs.record import Job

    torch.manual_seed(3)
    artifact = tmp_path / "artifact"  # what a PAL job with k=3 leaves
    save_pal(artifact, PALModel(PALConfig(k=3, input_dim=minilm.dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(["acme/ann"], torch.randn(1, 3)), minilm.encoder_id)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    before = rt.rewards.version
    with server, svc.client("acme") as c:
        give_drink_likes(c, per_user=8)
        old_profile = c.get("/v1/users/ann").json()
        assert old_profile["pal"]["version"] == before and len(old_profile["pal"]["logits"]) == 2
        failures, served, stop = [], [], threading.Event()

        def chatter():
            with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {svc.keys['acme']}"}, timeout=60) as cc:
                while not stop.wait(CHAT_PAUSE_S):
                    r = cc.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                              "messages": [{"role": "user", "content": "Morning drink?"}]})
                    if r.status_code != 200:
                        failures.append(r.text)
                    served.append(rt.rewards.version)

        def until(done, what):
            deadline = time.monotonic() + 60
            while not done():
                assert time.monotonic() < deadline and thread.is_alive(), (what, failures, served)
                time.sleep(0.02)

        thread = threading.Thread(target=chatter)
        thread.start()
        try:
            until(lambda: before in served, "a chat answered before the swap")
            admin = server.server.config.app.state.admin
            admin.put_into_service(Job(id="pal-by-hand", kind="pal", params={}, state="succeeded", created_at=time.time(),
                                       artifact=str(artifact)), "population")
            until(lambda: served[-1] != before, "a chat answered after the swap")
        finally:
            stop.set()
            thread.join()
        assert failures == [] and before in served, served  # chats were answered before and after the swap
        assert rt.rewards.version != before and rt.rewards.k == 3
        body = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]}).json()
        assert body["pluralign"]["prior"] is False
        profile = c.get("/v1/users/ann").json()  # refitted against the new prototypes
        assert profile["pal"]["version"] == rt.rewards.version and len(profile["pal"]["logits"]) == 3
        assert profile["user_model"]["population"] == rt.rewards.version
    # a restart serves the model put into service, not the checkpoint it started from
    again = Runtime.build(rt.settings, generator=Generator.from_folder(tiny_generator_dir), encoder=minilm)
    assert again.rewards.version == rt.rewards.version


@pytest.mark.parametrize(("kind", "params", "trained"), [
    ("pal", {"k": 3, "epochs": 3, "latent_dim": 8, "hidden": 16}, {"k": [3], "epochs": 3, "latent_dim": 8, "hidden": 16}),
    ("em", {"k": 2, "restarts": 1}, {"k": [2], "restarts": 1}),
])
def test_a_population_jobs_params_are_what_its_worker_trains(tmp_path, kind, params, trained):
    """Review jobs61: the slow-marked job tests (a PAL job asked for `k` 3 serves K=3; an EM job asked for 2 serves 2)
    were the default suite's only check that a population job's `k` reaches its worker: test_break20_delete.py's jobs ask
    for the K the data also gives. The job's command, read by `pluralign`'s own parser, trains what the job asked for."""
    from training.cli import make_parser
    from training.jobs.kinds import KINDS
    from training.jobs.record import Job

    argv = KINDS[kind].command(Job(id="j", kind=kind, params=params, created_at=0.0), tmp_path / "artifact")
    args = make_parser().parse_args(argv[argv.index("training.cli") + 1 :])
    assert argv[argv.index("training.cli") + 1 : argv.index("training.cli") + 3] == ["train", kind], argv
    assert {name: getattr(args, name) for name in trained} == trained, argv
    assert args.out == str(tmp_path / "artifact"), argv


@pytest.mark.slow  # a PAL job's worker (~8 CPU-s) beside chats (make test-cli): the test above keeps its checks past the job
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


def test_an_em_mixture_put_into_service_is_served_to_each_user(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """The slow-marked EM test's checks past its job (the job's worker: ~7 CPU-s): an EM mixture (two Bradley-Terry heads)
    put into service as the runner puts a promoted EM job's artifact replaces the PAL population without a restart: its
    kind and K are served, each user's scores follow their own feedback, their profile is over its two heads."""
    import time

    from tests.service.test_reviewreplicas50_upgrade import em_mixture
    from training.jobs.record import Job

    artifact = em_mixture(tmp_path / "artifact", minilm.dim, minilm.encoder_id)  # what an EM job with k=2 leaves
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("acme") as c:
        give_drink_likes(c, per_user=8, likers=(("ann", "tea"), ("ben", "coffee")))
        admin = server.server.config.app.state.admin
        admin.put_into_service(Job(id="em-by-hand", kind="em", params={}, state="succeeded", created_at=time.time(),
                                   artifact=str(artifact)), "population")
        assert_em_mixture_served(c, rt)


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
        assert_em_mixture_served(c, rt)


def assert_em_mixture_served(c, rt) -> None:
    """An EM mixture with K=2 put into service over ann (tea) and ben (coffee), through `c` (acme's client): each user
    scored by their own model on its heads, the profile on the new version's two prototypes, a chat of n=2 answered."""
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
