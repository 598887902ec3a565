"""The service's PAL wrapper: loading, the population prior, refits, bootstrap and its fallback."""

from __future__ import annotations

import numpy as np
import pytest

from service.rewards import UserRewards
from tests.service.tiny import SHARED_DATA


def test_fit_moves_a_user_toward_their_comparisons(tiny_pal_dir, minilm):
    rewards = UserRewards.load(tiny_pal_dir, minilm.encoder_id)
    assert rewards.trained and rewards.k == 2 and len(rewards.version) == 16
    prompt, liked, disliked = minilm.encode(["Which would you say?", "I love modern art.", "Art bores me."])
    n = 6
    logits = rewards.fit(np.tile(prompt, (n, 1)), np.tile(liked, (n, 1)), np.tile(disliked, (n, 1)))
    assert logits.shape == (2,)
    pair = np.stack([liked, disliked])
    prompts = np.tile(prompt, (2, 1))
    fitted = rewards.score(logits, prompts, pair)
    prior = rewards.score(rewards.prior(), prompts, pair)
    assert fitted[0] - fitted[1] >= prior[0] - prior[1]
    with pytest.raises(ValueError):
        UserRewards.load(tiny_pal_dir, "another-encoder")


def test_without_persona_data_the_model_is_untrained_and_says_so(tmp_path, minilm):
    rewards = UserRewards.load_or_bootstrap(tmp_path / "pal", minilm, tmp_path / "no-data")
    described = rewards.describe()
    assert described["trained"] is False and "UNTRAINED" in described["note"]
    assert rewards.score(rewards.prior(), np.zeros((2, 384), np.float32), np.ones((2, 384), np.float32)).shape == (2,)


WEEKEND = ["Hike on Saturday.", "- Saturday: hike\n- Sunday: rest",
           "Saturday: a long hike in the hills. Sunday: brunch with friends, then a film."]


@pytest.mark.slow
def test_first_start_bootstraps_a_checkpoint_from_persona_data(tmp_path, minilm, tiny_generator_dir, monkeypatch):
    """(`make test-all`.) Served, the bootstrapped checkpoint asks a new user docs/api.md's onboarding question
    (trial48a corrected it by hand, against a fresh `pluralign serve`: the list against the long answer)."""
    from tests.service.tiny import start_service

    rewards = UserRewards.load_or_bootstrap(tmp_path / "pal", minilm, SHARED_DATA)
    assert rewards.trained and "bootstrapped" in rewards.note and any((tmp_path / "pal").iterdir())
    again = UserRewards.load_or_bootstrap(tmp_path / "pal", minilm, SHARED_DATA)
    assert again.version == rewards.version and "loaded" in again.note

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tmp_path / "pal", minilm)
    with server, svc.client() as c:
        pool = [{"prompt": "Suggest a weekend plan.", "answers": WEEKEND}]
        first = c.post("/v1/users/bob/next-comparison", json={"pool": pool}).json()
        assert first["answers"] == WEEKEND[1:] and round(first["bits"], 2) == 0.84 and first["pairs"] == 3, first
        assert first["worth_asking"] is True and first["pool"] == "supplied" and first["criterion"] == "coefficients"
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "bob", "prompt": "Suggest a weekend plan.",
                                         "chosen": WEEKEND[1], "rejected": WEEKEND[2]})
        assert r.status_code == 201, r.text
        again = c.post("/v1/users/bob/next-comparison", json={"pool": pool}).json()  # that pair is answered: another one
        assert again["answers"] != WEEKEND[1:] and again["pairs"] == 2, again


def test_a_bootstrap_killed_part_way_is_trained_again_at_the_next_start(tmp_path, tiny_pal_dir, minilm, monkeypatch):
    """A first start killed while saving leaves the weights (or a temp file of one) but no meta.json:
    the next start trains again instead of refusing to start, and the temp files go."""
    import service.rewards as rewards_module
    from pluralign.reward.pal import load_pal, save_pal

    folder = tmp_path / "pal"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((tiny_pal_dir / "model.safetensors").read_bytes()[:100])
    (folder / ".user_weights.json.k2j3h4").write_bytes(b"{")
    calls = []

    def bootstrap(target, encoder, shared_data):  # the real trainer takes a minute; this saves the tiny checkpoint
        calls.append(target)
        model, user_weights, meta = load_pal(tiny_pal_dir)
        save_pal(target, model, user_weights, meta.encoder_id)

    monkeypatch.setattr(rewards_module, "bootstrap", bootstrap)
    rewards = UserRewards.load_or_bootstrap(folder, minilm, SHARED_DATA)
    assert calls == [folder] and rewards.trained and "bootstrapped" in rewards.note
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors", "user_weights.json"]
    (folder / "notes.txt").write_text("mine")  # anything but the checkpoint's own files: loaded as before, never trained over
    assert "loaded" in UserRewards.load_or_bootstrap(folder, minilm, SHARED_DATA).note and calls == [folder]
