"""What a researcher using pluralign from Python (a notebook, a script; docs/library.md) hands the
public functions by mistake, and the clear error each must give: the argument named and what is
wrong, not a torch shape error from deep inside, a silent NaN or a wrong answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.data.record import Preference
from pluralign.data.splits import file_protocol, split_seen
from pluralign.evaluation import group_accuracy, macro
from pluralign.fairness.metrics import credit, expected_calibration_error
from pluralign.reward.bt import BTConfig, PerUserBT, SingleBT
from pluralign.reward.em import EMConfig, EMMixture
from pluralign.reward.features import PairBatch
from pluralign.reward.pal import (
    PALConfig,
    PALModel,
    PALTrainConfig,
    UserWeights,
    evaluate_pairs,
    load_pal,
    save_pal,
    train_pal,
)
from pluralign.reward.pal_preference import PALPreference

DIM, USERS, PER_USER = 8, 4, 10


def pairs(seed: int = 0, users: int = USERS, per_user: int = PER_USER) -> PairBatch:
    """Two groups of users who prefer opposite directions of the embedding space: (N, DIM) float32."""
    g = torch.Generator().manual_seed(seed)
    n = users * per_user
    user = torch.arange(users).repeat_interleave(per_user)
    prompt, a, b = (torch.randn(n, DIM, generator=g) for _ in range(3))
    flip = (user % 2 == 1)[:, None]
    chosen, rejected = torch.where(flip, b, a), torch.where(flip, a, b)
    return PairBatch(prompt, chosen, rejected, user, [f"u{i}" for i in range(users)],
                     ["odd" if i % 2 else "even" for i in user.tolist()])


def as_numpy64(batch: PairBatch) -> PairBatch:
    """The same pairs as a researcher's own arrays: numpy float64 embeddings, numpy int user indices."""
    return PairBatch(batch.prompt.double().numpy(), batch.chosen.double().numpy(), batch.rejected.double().numpy(),
                     batch.user.numpy(), batch.users, batch.group)


def tiny_pal() -> tuple[PALConfig, PALTrainConfig]:
    return PALConfig(variant="a", k=2, input_dim=DIM, latent_dim=4, hidden=8), PALTrainConfig(max_epochs=2, batch_size=16)


def test_pairs_of_numpy_float64_train_and_score_as_float32_tensors_do():
    train, val = pairs(0), pairs(1)
    config, train_config = tiny_pal()
    ours = train_pal(train, val, config, train_config)
    theirs = train_pal(as_numpy64(train), as_numpy64(val), config, train_config)  # before: a dtype or `.to` error
    assert ours.metrics["val_loss"] == pytest.approx(theirs.metrics["val_loss"], rel=1e-5)
    logits = theirs.user_weights.stack(train.users)[0]
    assert evaluate_pairs(theirs.model, logits, as_numpy64(val)) == pytest.approx(evaluate_pairs(ours.model, logits, val), rel=1e-5)
    bt = SingleBT(BTConfig(epochs=2, full_batch_steps=5, full_batch_min_steps=1))
    bt.fit(as_numpy64(train), as_numpy64(val))
    assert bt.prob_seen(as_numpy64(val)).dtype == np.float32
    em = EMMixture(EMConfig(k=2, restarts=1, max_iter=3))
    em.fit(as_numpy64(train), as_numpy64(val))
    np.testing.assert_allclose(em.prob_seen(as_numpy64(val)), em.prob_seen(val), rtol=1e-5)


def test_a_pair_batch_that_is_not_numbers_is_refused_naming_its_field():
    with pytest.raises(ValueError, match=r"`PairBatch.chosen`"):
        PairBatch(np.zeros((2, DIM)), [["a"] * DIM] * 2, np.zeros((2, DIM)), np.zeros(2, int), ["u"], ["g", "g"])


def test_user_indices_or_group_labels_of_another_length_are_refused_not_trained_on():
    train, val = pairs(0), pairs(1)
    config, train_config = tiny_pal()
    short_user = PairBatch(train.prompt, train.chosen, train.rejected, train.user[:-3], train.users, train.group)
    with pytest.raises(ValueError, match=r"`train.user` has 37 rows .* the comparisons 40"):
        train_pal(short_user, val, config, train_config)  # before: trained on 37 of 40 pairs, silently
    short_group = PairBatch(train.prompt, train.chosen, train.rejected, train.user, train.users, train.group[:-3])
    with pytest.raises(ValueError, match=r"`val.group` has 37 labels, the comparisons 40"):
        EMMixture(EMConfig(k=2, restarts=1, max_iter=3)).fit(train, short_group)
    with pytest.raises(ValueError, match=r"`train.user` has 37 rows"):
        EMMixture(EMConfig(k=2, restarts=1, max_iter=3)).fit(short_user, val)  # before: a torch size error


def test_evaluate_pairs_names_logits_that_are_not_one_row_per_user_and_pairs_of_another_width():
    config, train_config = tiny_pal()
    result = train_pal(pairs(0), pairs(1), config, train_config)
    val, prior = pairs(1), result.user_weights.prior()
    with pytest.raises(ValueError, match=r"`logits` .*\(U, K\) = \(4, 2\)"):
        evaluate_pairs(result.model, prior, val)  # one user's (K,): before an IndexError
    with pytest.raises(ValueError, match=r"`logits` .*\(U, K\) = \(4, 2\)"):
        evaluate_pairs(result.model, prior[None], val)
    wide = PairBatch(torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), ["u"], ["g"] * 3)
    with pytest.raises(ValueError, match=r"`pairs.prompt` has shape \(3, 5\); the model reads \(N, 8\)"):
        evaluate_pairs(result.model, prior[None], wide)  # before: mat1 and mat2 shapes cannot be multiplied


def test_single_bt_reward_checks_what_it_is_given():
    bt = SingleBT(BTConfig(epochs=2, full_batch_steps=5, full_batch_min_steps=1))
    bt.fit(pairs(0), pairs(1))
    prompt, response = pairs(2).prompt[:5], pairs(2).chosen[:5]
    with pytest.raises(ValueError, match=r"`prompt` has shape \(5, 3\); the model reads \(N, 8\)"):
        bt.reward(prompt[:, :3], response)  # before: mat1 and mat2 shapes cannot be multiplied
    with pytest.raises(ValueError, match=r"`prompt` has shape \(8,\)"):
        bt.reward(prompt[0], response[0])  # before: a scalar reward, silently
    nan = response.clone()
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"`response` row 2 is not finite"):
        bt.reward(prompt, nan)  # before: a NaN reward in row 2
    ours = bt.reward(prompt, response)
    torch.testing.assert_close(bt.reward(prompt.double().numpy(), response.double()), ours)  # before: a dtype error
    assert ours.shape == (5,) and not ours.requires_grad


def test_ideal_points_name_logits_of_another_k():
    model = PALModel(tiny_pal()[0])
    with pytest.raises(ValueError, match=r"`user_logits` has 3 values per row, the model has K=2"):
        model.ideal_points(torch.zeros(4, 3))  # before: mat1 and mat2 shapes cannot be multiplied
    assert model.ideal_points(np.zeros((4, 2))).shape == (4, 4)


def test_load_pal_onto_a_device_this_machine_lacks_says_so(tmp_path):
    config, train_config = tiny_pal()
    result = train_pal(pairs(0), pairs(1), config, train_config)
    save_pal(tmp_path / "pal", result.model, result.user_weights, encoder_id="test")
    with pytest.raises(ValueError, match=r"`device` 'cuda:99' .*not available on this machine.*device='cpu'"):
        load_pal(tmp_path / "pal", device="cuda:99")  # before (CUDA-less torch): AssertionError from torch
    with pytest.raises(ValueError, match=r"`device` 'gpu' is not a torch device"):
        load_pal(tmp_path / "pal", device="gpu")
    model, _, _ = load_pal(tmp_path / "pal", device="cpu")
    assert next(model.parameters()).device.type == "cpu"


def test_fairness_metrics_take_the_models_probabilities_as_they_come():
    config, train_config = tiny_pal()
    result = train_pal(pairs(0), pairs(1), config, train_config)
    val = pairs(1)
    p = result.model.preference_prob(result.user_weights.prior(), val.prompt, val.chosen, val.rejected)
    correct = credit(p)  # before: Can't call numpy() on Tensor that requires grad
    assert correct.shape == (len(val),) and expected_calibration_error(p) is not None
    by_group, counts = group_accuracy(correct, val.group)
    assert counts == {"even": 20, "odd": 20}
    with pytest.raises(ValueError, match=r"`groups` has 39 labels, `correct` 40"):
        group_accuracy(correct, val.group[:-1])  # before: the last comparison silently left out
    with pytest.raises(ValueError, match=r"`users` has 39 entries, `correct` 40"):
        macro(correct, val.user[:-1].numpy())


def test_an_encoder_given_one_string_asks_for_a_list(sentence_encoder):
    with pytest.raises(TypeError, match=r"`texts` must be a sequence of strings, not one str"):
        sentence_encoder.encode("Suggest a weekend plan")  # before: 22 vectors, one per character
    with pytest.raises(TypeError, match=r"`texts\[1\]` is int, not str"):
        sentence_encoder.encode(["a", 3])
    assert sentence_encoder.encode(("Suggest a weekend plan",)).shape == (1, 384)


def comparisons(user: str, n: int) -> list[Preference]:
    return [Preference(user_id=user, prompt=f"q{i}", chosen=f"short {i}", rejected=f"a long answer {i}") for i in range(n)]


def test_a_seen_user_too_small_to_train_on_is_named_not_left_untrained():
    users = {"ann": comparisons("ann", 12), "bob": comparisons("bob", 2)}
    with pytest.raises(ValueError, match=r"user 'bob' has 2 comparisons.*at least 3 needed"):
        split_seen(users, seed=0)  # before: bob's 2 pairs went to test and val, none to train, silently
    split = split_seen({"ann": users["ann"], "cat": comparisons("cat", 3)}, seed=0)
    assert sum(r.user_id == "cat" for r in split.train) == 1
    with pytest.raises(ValueError, match=r"`min_pairs` must be >= 3"):
        file_protocol(users["ann"] + users["bob"], min_pairs=2)


def test_new_users_query_pairs_indexed_otherwise_than_their_support_are_refused():
    """A query PairBatch embedded on its own indexes its users in another order than the support's:
    each user would be scored with another user's fit."""
    support, query = pairs(3, users=2), pairs(4, users=2)
    swapped = PairBatch(query.prompt, query.chosen, query.rejected, 1 - query.user, ["u1", "u0"], query.group)
    em = EMMixture(EMConfig(k=2, restarts=1, max_iter=3))
    em.fit(pairs(0), pairs(1))
    per_user = PerUserBT()
    per_user.fit(pairs(0), pairs(1))
    pal = PALPreference(*tiny_pal())
    pal.fit(pairs(0), pairs(1))
    for model in (em, per_user, pal):
        with pytest.raises(ValueError, match=r"`query.users` \['u1', 'u0'\] are not `support.users` \['u0', 'u1'\]"):
            model.prob_new_users(support, swapped)  # before: each user scored with the other's fit
        assert model.prob_new_users(support, query).shape == (len(query),)


def test_user_weights_name_the_user_whose_logits_do_not_fit():
    weights = UserWeights.from_logits(["ann", "bob"], torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"`logits` of 'eve' has 3 values, expected 2 logits"):
        weights.set("eve", torch.zeros(3))  # before: "expected 2 logits, got 3", no argument, no user
    with pytest.raises(ValueError, match=r"`logits` of 'eve' is not finite \(NaN or inf\)"):
        weights.set("eve", np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"`prior` has 3 values, expected 2 logits"):
        weights.set_prior([0.0, 0.0, 0.0])
    assert weights.set("eve", np.array([1.0, -1.0])) == 1 and weights.get("eve").dtype == torch.float32
