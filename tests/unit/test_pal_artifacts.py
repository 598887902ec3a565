"""User weights and checkpoints round-trip, carry their versions and refuse what does not match."""

from __future__ import annotations

import msgspec
import pytest
import torch

from pluralign.reward.pal import (
    PALConfig,
    PALModel,
    UserWeights,
    load_pal,
    reward_for_user,
    save_pal,
    user_logits,
)

DIM = 8


def tiny_model(variant: str = "a", k: int = 3) -> PALModel:
    torch.manual_seed(0)
    return PALModel(PALConfig(variant=variant, k=k, input_dim=DIM, latent_dim=4, hidden=8)).eval()


def table() -> UserWeights:
    weights = UserWeights.from_logits(["alice", "bob"], torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))
    weights.set("bob", torch.tensor([0.0, 3.0, 0.0]))  # bob's row is now at version 2
    return weights


def test_user_weights_round_trip(tmp_path):
    weights = table()
    weights.save(tmp_path / "w.json")
    loaded = UserWeights.load(tmp_path / "w.json", k=3)
    assert loaded.k == 3 and loaded.users() == ["alice", "bob"]
    for user, logits in weights.items():
        assert torch.equal(loaded.get(user), logits)
        assert loaded.version(user) == weights.version(user)
    assert loaded.version("bob") == 2
    assert torch.equal(loaded.prior(), weights.prior())
    assert loaded.remove("alice") and "alice" not in loaded and not loaded.remove("alice")


def test_prior_is_the_mean_of_centred_training_logits():
    weights = UserWeights.from_logits(["a", "b"], torch.tensor([[3.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(weights.prior(), torch.tensor([0.5, -0.5]))


def test_unknown_user_falls_back_to_the_prior_and_says_so():
    weights = table()
    logits, is_prior = user_logits(weights, "carol")
    assert is_prior and torch.equal(logits, weights.prior())
    logits, is_prior = user_logits(weights, "alice")
    assert not is_prior and torch.equal(logits, torch.tensor([2.0, 0.0, -1.0]))
    stacked, fell_back = weights.stack(["alice", "carol"])
    assert fell_back.tolist() == [False, True] and torch.equal(stacked[1], weights.prior())
    assert weights.version("carol") == 0
    model, prompt, response = tiny_model(), torch.randn(3, DIM), torch.randn(3, DIM)
    rewards, is_prior = reward_for_user(model, weights, "carol", prompt, response)
    assert is_prior and torch.equal(rewards, model.reward(weights.prior(), prompt, response).detach())
    rewards, is_prior = reward_for_user(model, weights, "alice", prompt, response)
    assert not is_prior and rewards.shape == (3,)


def test_user_weights_refuse_another_k_or_schema(tmp_path):
    weights = table()
    weights.save(tmp_path / "w.json")
    with pytest.raises(ValueError, match="K=3, the model has K=4"):
        UserWeights.load(tmp_path / "w.json", k=4)
    raw = msgspec.json.decode((tmp_path / "w.json").read_bytes())
    raw["schema_version"] = 99
    (tmp_path / "w.json").write_bytes(msgspec.json.encode(raw))
    with pytest.raises(ValueError, match="schema 99"):
        UserWeights.load(tmp_path / "w.json")
    with pytest.raises(ValueError, match="expected 3 logits"):
        weights.set("dave", torch.zeros(4))


@pytest.mark.parametrize("variant", ["a", "b"])
def test_checkpoint_round_trip_scores_the_same(tmp_path, variant):
    model, weights = tiny_model(variant), table()
    save_pal(tmp_path / "ckpt", model, weights, encoder_id="enc-1", metrics={"val_acc": 0.9})
    loaded, loaded_weights, meta = load_pal(tmp_path / "ckpt", encoder_id="enc-1", device="cpu")
    assert (meta.variant, meta.k, meta.input_dim, meta.encoder_id, meta.users) == (variant, 3, DIM, "enc-1", 2)
    assert meta.metrics == {"val_acc": 0.9}
    assert not any("alice" in name or "bob" in name for name in loaded.state_dict())
    prompt, response = torch.randn(5, DIM), torch.randn(5, DIM)
    with torch.no_grad():
        for user in ("alice", "bob"):
            expected = model.reward(weights.get(user), prompt, response)
            assert torch.equal(loaded.reward(loaded_weights.get(user), prompt, response), expected)


def test_checkpoint_refuses_an_incompatible_encoder(tmp_path):
    save_pal(tmp_path / "ckpt", tiny_model(), table(), encoder_id="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="trained on embeddings from 'sentence-transformers/all-MiniLM-L6-v2', not 'smollm2'"):
        load_pal(tmp_path / "ckpt", encoder_id="smollm2")
    load_pal(tmp_path / "ckpt")  # no encoder named: no check


def test_checkpoint_refuses_another_schema_or_mismatched_k(tmp_path):
    with pytest.raises(ValueError, match="K=3, the model has K=2"):
        save_pal(tmp_path / "bad", tiny_model(k=2), table(), encoder_id="enc")
    save_pal(tmp_path / "ckpt", tiny_model(), table(), encoder_id="enc")
    meta_path = tmp_path / "ckpt" / "meta.json"
    raw = msgspec.json.decode(meta_path.read_bytes())
    meta_path.write_bytes(msgspec.json.encode({**raw, "schema_version": 7}))
    with pytest.raises(ValueError, match="schema 7"):
        load_pal(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="not a PAL checkpoint"):
        load_pal(tmp_path / "nothing-here")


def test_model_rewards_accept_one_user_or_one_per_row():
    model = tiny_model("b")
    prompt, response = torch.randn(4, DIM), torch.randn(4, DIM)
    logits = torch.tensor([1.0, 0.0, -1.0])
    with torch.no_grad():
        one = model.reward(logits, prompt, response)
        per_row = model.reward(logits.expand(4, 3), prompt, response)
    assert one.shape == (4,) and torch.allclose(one, per_row)
    with pytest.raises(ValueError, match="unknown PAL variant"):
        PALConfig(variant="c")
