"""Session trial47b: pluralign used from Python as a researcher uses it (docs/library.md, the public
docstrings), each test a call that the library took silently, or answered with a traceback from deep
inside, where its docstring promised a ValueError naming the argument. Tiny inputs: well under a second
each (the persona and UKP ones read one or two of the real data set's files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pluralign.data.persona import PersonaConfig, build_persona
from pluralign.data.record import Preference
from pluralign.data.ukp import load_ukp
from pluralign.reward.em import EMConfig, EMMixture, fit_em
from pluralign.reward.features import PairBatch, embed_pairs
from pluralign.reward.pal import PALConfig, PALModel
from pluralign.user.features import response_features
from pluralign.user.model import UserModel, fit_posterior


class _Unused:
    """An encoder the checks below must refuse before calling."""

    encoder_id, dim = "unused-4", 4

    def encode(self, texts):
        raise AssertionError("encoded before the arguments were checked")


def _pairs(users: list[str], per_user: int = 2, dim: int = 3, seed: int = 0) -> PairBatch:
    rng = np.random.default_rng(seed)
    n = len(users) * per_user
    return PairBatch(prompt=rng.normal(size=(n, dim)), chosen=rng.normal(size=(n, dim)), rejected=rng.normal(size=(n, dim)),
                     user=torch.arange(len(users)).repeat_interleave(per_user), users=users, group=["g"] * n)


# EM (MaxMin-RLHF's first half)

def test_an_em_mixture_from_heads_refuses_mixing_weights_that_are_not_a_distribution():
    config = EMConfig(k=2)
    heads = torch.randn(2, 6, generator=torch.Generator().manual_seed(0)) * 3
    # before: accepted; mixing_weights() said [1, 1] ("summing to 1", its docstring says), and a new user
    # without support pairs was given P(chosen) = 1.99 (the heads mixed by weights summing to 2)
    for log_mixing in (torch.zeros(2), torch.tensor([0.5, 0.5]), torch.tensor([-math.inf, -math.inf])):
        with pytest.raises(ValueError, match=r"`log_mixing` must be log mixing weights.*sums to"):
            EMMixture.from_heads(heads, log_mixing, config)
    model = EMMixture.from_heads(heads, np.log([0.25, 0.75]), config)
    assert model.mixing_weights().sum() == pytest.approx(1.0)
    assert EMMixture.from_heads(heads, torch.tensor([0.0, -math.inf]), config).mixing_weights().tolist() == [1.0, 0.0]
    support, query = _pairs(["new"]).select([]), _pairs(["new"])  # no support pairs: the mixing weights stand in
    p = model.prob_new_users(support, query)
    assert ((p >= 0) & (p <= 1)).all()


def test_an_em_mixture_saved_with_unnormalized_mixing_weights_is_refused_naming_the_file(tmp_path):
    from safetensors.torch import load_file, save_file

    model = EMMixture.from_heads(torch.zeros(2, 6), np.log([0.5, 0.5]), EMConfig(k=2))
    model.users = []
    model.fit_result.responsibilities = torch.zeros(0, 2)
    out = model.save(tmp_path / "em", encoder_id="enc")
    tensors = load_file(out / "heads.safetensors")
    save_file({**tensors, "log_mixing": torch.zeros(2)}, out / "heads.safetensors")  # pi = (1, 1)
    with pytest.raises(ValueError, match=r"heads\.safetensors: `log_mixing`"):
        EMMixture.load(out, encoder_id="enc", device="cpu")


def test_fit_em_names_a_user_index_outside_the_users():
    diff = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # before: IndexError "index 5 is out of bounds for dimension 0 with size 2" from the E-step
    with pytest.raises(ValueError, match=r"`user` must index the users 0 \.\. 1 \(n_users=2\), got 5"):
        fit_em(diff, torch.tensor([0, 1, 5]), 2, EMConfig(k=2, restarts=1))
    with pytest.raises(ValueError, match=r"`user` has 2 rows"):
        fit_em(diff, torch.tensor([0, 1]), 2, EMConfig(k=2, restarts=1))


# embedding pairs

def test_embed_pairs_refuses_a_user_listed_twice_or_one_str_for_the_list():
    records = [Preference(user_id="ann", prompt="p", chosen="a", rejected="b"),
               Preference(user_id="bob", prompt="p", chosen="b", rejected="a")]
    # before: both taken; ann's pairs indexed row 2 of 3, row 0 never trained, and the user table
    # refused the list only after training ("`users` names a user twice")
    with pytest.raises(ValueError, match=r"`users` names 'ann' twice"):
        embed_pairs(records, _Unused(), users=["ann", "bob", "ann"])
    with pytest.raises(TypeError, match=r"`users` must be a list of user ids, not one str"):
        embed_pairs(records[:1], _Unused(), users="ann")  # before: "a record of user 'ann' is not in `users` (3 ids)"


# the persona population

@pytest.mark.parametrize("fields, error, problem", [
    ({"test_fraction": 0.0}, ValueError, r"test_fraction must be a number in \(0, 1\)"),  # before: IndexError
    ({"test_fraction": 1.0}, ValueError, r"test_fraction must be a number in \(0, 1\)"),  # before: IndexError
    ({"test_fraction": 1e-6}, ValueError, r"test_fraction 1e-06 holds out 0 of trait"),  # before: IndexError
    ({"group_weights": (0.0, 0.0)}, ValueError, r"group_weights must have one weight above 0"),  # ZeroDivisionError
    ({"group_weights": (1.0, -0.5)}, ValueError, r"group_weights must be finite numbers >= 0.*-0\.5"),  # taken
    ({"group_weights": (math.nan, 1.0)}, ValueError, r"group_weights must be finite numbers >= 0.*nan"),
    ({"comparisons_per_user": 2}, ValueError, r"comparisons_per_user 2 leaves a seen user no comparison to train on"),
    ({"comparisons_per_user": 0}, ValueError, r"comparisons_per_user must be >= 1, a whole number"),  # taken: 1 val pair
    ({"groups": 2.0}, ValueError, r"groups must be >= 1, a whole number, got 2\.0"),  # before: TypeError from range()
    ({"seed": -1}, ValueError, r"seed must be a whole number >= 0"),
    ({"traits": "narcissism"}, TypeError, r"traits must be a tuple of trait names, not one str"),  # "no file n.jsonl"
    ({"traits": ("narcissism", "narcissism")}, ValueError, r"traits names 'narcissism' twice"),  # taken
])
def test_build_persona_names_the_config_field_that_cannot_build_a_population(shared_data, fields, error, problem):
    config = PersonaConfig(**{"groups": 2, "users_per_group": 2, "unseen_users_per_group": 1, "comparisons_per_user": 10,
                              "support_size": 3, "query_size": 2, **fields})
    with pytest.raises(error, match=rf"PersonaConfig\.{problem}"):
        build_persona(config, shared_data)


def test_load_trait_takes_the_folder_as_a_str(shared_data):
    from pluralign.data.persona import load_trait

    folder = shared_data / "anthropic_persona"
    statements = load_trait(str(folder), "narcissism")  # before: TypeError, unsupported operand type(s) for /
    assert statements == load_trait(folder, "narcissism") and len(statements) > 0


def test_build_persona_still_builds_small_and_weighted_populations(shared_data):
    config = PersonaConfig(groups=2, users_per_group=2, unseen_users_per_group=1, comparisons_per_user=3,
                           support_size=3, query_size=2, group_weights=(1, 0), seed=np.int64(1))
    protocol = build_persona(config, shared_data)
    train_users = {r.user_id for r in protocol.seen.train}
    assert train_users == set(protocol.true_groups) - set(protocol.unseen.support)  # every seen user trains


# the user model (Laplace posterior)

def test_fit_posterior_refuses_a_prior_precision_that_is_no_gaussians():
    design = np.random.default_rng(0).normal(size=(5, 3))
    # before: a negative precision came back as a "covariance" with negative variances
    with pytest.raises(ValueError, match=r"`prior_precision` must be > 0.*element 1 is -1\.0"):
        fit_posterior(design, np.zeros(3), np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"`prior_precision` \(D, D\) is not positive definite"):
        fit_posterior(design, np.zeros(3), -np.eye(3))
    with pytest.raises(ValueError, match=r"`steps` must be a whole number >= 0"):
        fit_posterior(design, np.zeros(3), np.ones(3), steps=-1)
    mean, cov = fit_posterior(design, np.zeros(3), np.ones(3))
    assert mean.shape == (3,) and (np.diag(cov) > 0).all()


def test_user_model_candidates_need_texts_or_named_features_of_the_right_width():
    model = PALModel(PALConfig(variant="a", k=2, input_dim=8, latent_dim=4, hidden=8))
    um = UserModel(model, population="trial47b")
    rng = np.random.default_rng(0)
    prompt, response = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    with pytest.raises(TypeError, match=r"give the answers' `texts`"):  # before: "object of type 'NoneType' has no len()"
        um.candidates(prompt, response)
    with pytest.raises(ValueError, match=r"`named` has shape \(3, 2\)"):  # before: taken, (3, 9) coordinates of a D=14 model
        um.candidates(prompt, response, named=np.zeros((3, 2)))
    texts = ["Yes.", "No, not at all!", "- a\n- list"]
    assert np.array_equal(um.candidates(prompt, response, named=response_features(texts)).x, um.candidates(prompt, response, texts).x)


# PAL's simplex weights

def test_pal_weights_take_numpy_and_refuse_nan():
    weights = PALModel.weights(np.array([[0, 0], [1, 3]]))  # before: TypeError from torch.softmax on numpy
    assert weights.shape == (2, 2) and torch.allclose(weights.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match=r"`user_logits` is not finite"):  # before: a row of NaN weights
        PALModel.weights(torch.tensor([math.nan, 0.0]))


# UKPConvArg1

def test_load_ukp_reads_one_file_and_refuses_xml_without_argument_pairs(shared_data, tmp_path):
    one = sorted((shared_data / "ukp_convarg1" / "UKPConvArg1-full-XML").glob("*.xml"))[0]
    records, pairs = load_ukp(one)  # before: "no UKPConvArg1 XML files under <that file>"
    assert pairs > 0 and len(records) >= pairs and {r.source for r in records} == {"ukp_convarg1"}
    (tmp_path / "report.xml").write_text('<?xml version="1.0"?><testsuites><testsuite name="x"/></testsuites>')
    with pytest.raises(ValueError, match=r"hold no UKPConvArg1 argument pair"):  # before: ([], 0), an empty data set
        load_ukp(tmp_path)


# saving and loading

def test_a_pal_checkpoint_saved_with_a_nan_metric_loads(tmp_path):
    from pluralign.reward.pal import load_pal, save_pal
    from pluralign.reward.user_weights import UserWeights

    model = PALModel(PALConfig(variant="a", k=2, input_dim=8, latent_dim=4, hidden=8))
    users = UserWeights.from_logits(["ann", "bob"], np.zeros((2, 2)))
    # evaluate_pairs gives NaN for no pairs; msgspec wrote it as null, and load_pal refused the checkpoint it had
    # just saved: "meta.json: not a description of a PAL checkpoint: Expected `float`, got `null`"
    save_pal(tmp_path / "pal", model, users, encoder_id="enc",
             metrics={"test_acc": math.nan, "val_acc": np.float32(0.5), "epochs": 3, "note": "text"})
    _, loaded, meta = load_pal(tmp_path / "pal", encoder_id="enc", device="cpu")
    assert meta.metrics == {"val_acc": 0.5, "epochs": 3.0} and loaded.users() == ["ann", "bob"]


# choosing K

def test_the_one_standard_error_rule_refuses_scores_of_other_users_per_k():
    from pluralign.reward.model_selection import one_standard_error

    # before: K=1 scored on one user and K=2 on two: the one user's score was broadcast against both,
    # and K=1 "won" (-1.0 beside -1.5); three users against two was numpy's broadcasting error
    with pytest.raises(ValueError, match=r"K=2's held-out log-likelihoods have shape \(2,\), K=1's \(1,\)"):
        one_standard_error({1: np.array([-1.0]), 2: np.array([-0.5, -1.0])})
    with pytest.raises(ValueError, match=r"K=1's held-out log-likelihoods have shape \(2, 2\)"):
        one_standard_error({1: np.ones((2, 2)), 2: np.ones((2, 2))})
    assert one_standard_error({1: [-1.0, -2.0], 2: [-0.5, -1.0]}).k_selected == 2


# asking the right question (pluralign.user.active)

def test_the_active_criteria_refuse_nan_posteriors_and_weights_that_are_no_distribution():
    from pluralign.user.active import (
        group_information,
        most_informative_pair,
        particle_posterior,
        sample_predictive_information,
        select_by_group,
    )

    x = np.random.default_rng(0).normal(size=(4, 3))
    # before: a NaN posterior gave NaN bits, np.argmax took the first NaN, and the pair was offered: bits=nan
    with pytest.raises(ValueError, match=r"`mean` is not finite"):
        most_informative_pair(x, np.full(3, math.nan), np.eye(3))
    with pytest.raises(ValueError, match=r"`cov` is not finite"):
        most_informative_pair(x, np.zeros(3), np.full((3, 3), math.nan), target="best")
    prob, groups = np.full((2, 3), 0.5), np.array([0, 1, 1])
    prob[0] = [0.9, 0.2, 0.3]
    # before: weights (2, 3, 5) gave 0 bits for every comparison; probabilities of 1.8 were taken
    with pytest.raises(ValueError, match=r"`weights` must be weights >= 0 summing to 1, got sum 10"):
        group_information(prob, np.array([2.0, 3.0, 5.0]), groups)
    with pytest.raises(ValueError, match=r"`prob` must be probabilities in \[0, 1\]: it holds 1\.8"):
        group_information(prob * 2, np.full(3, 1 / 3), groups)
    with pytest.raises(ValueError, match=r"`prob_observed` must be probabilities"):  # before: NaN weights for every user
        particle_posterior(np.full((1, 3), math.nan))
    with pytest.raises(ValueError, match=r"`weights` must be weights >= 0 summing to 1, got sum 4"):  # before: 1 bit each
        sample_predictive_information(np.full((4, 2), 0.3), np.full((4, 3), 0.6), np.ones(4))
    with pytest.raises(ValueError, match=r"`k` must be a whole number >= 0, got -1"):  # before: [] (select_active refused it)
        select_by_group(prob, groups, -1)
    assert group_information(prob, np.full(3, 1 / 3), groups)[0] > 0 and select_by_group(prob, groups, 1) == [0]


def test_a_user_state_names_the_coefficient_it_does_not_have():
    model = PALModel(PALConfig(variant="a", k=2, input_dim=8, latent_dim=4, hidden=8))
    um = UserModel(model, population="trial47b")
    rng = np.random.default_rng(0)
    _, state = um.fit_user(rng.normal(size=(2, 8)), rng.normal(size=(2, 8)), rng.normal(size=(2, 8)),
                           ["Yes.", "Sure!"], ["No, I would not.", "- a\n- b"], np.zeros(2))
    mean, sd = state.coefficient("length")
    assert math.isfinite(mean) and sd > 0
    with pytest.raises(ValueError, match=r"no coefficient named 'lenght' in this state; it has pal_origin, prototype_0, "
                                         r"prototype_1, length, .*latent_0 \.\. latent_3"):  # before: "'lenght' is not in list"
        state.coefficient("lenght")


# the embedding cache

def test_the_embedding_cache_takes_array_likes_and_names_vectors_of_another_shape(tmp_path):
    from pluralign.embed.cache import EmbeddingCache, text_key

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    keys = [text_key(t) for t in ("a", "b", "c")]
    cache.put("enc", keys[:1], [[1.0, 2.0, 3.0]])  # before: AttributeError, 'list' object has no attribute 'astype'
    assert cache.get("enc", keys[:1])[keys[0]].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"`vectors` has shape \(3,\): one row per key"):
        cache.put("enc", keys, np.ones(3))  # before: stored as three one-number vectors
    assert cache.get("enc", keys[1:]) == {}
    with pytest.raises(TypeError, match=r"`text` must be a str, got int"):  # before: AttributeError
        text_key(5)


# the user table

def test_the_user_table_refuses_a_non_str_id_on_lookup_as_it_does_on_set():
    from pluralign.reward.pal import user_logits
    from pluralign.reward.user_weights import UserWeights

    users = UserWeights.from_logits(["5", "6"], np.array([[3.0, 0.0], [0.0, 3.0]]))
    assert users.lookup("5")[1] is False
    # before: set(5, ...) was a TypeError, but lookup(5) gave the population prior with is_prior=True for the
    # user set as "5" (a DataFrame's integer ids), stack([5, "6"]) a prior row, version(5) 0, remove(5) False
    for call in (lambda: users.lookup(5), lambda: users.get(5), lambda: users.stack([5, "6"]), lambda: users.version(5),
                 lambda: users.remove(5), lambda: user_logits(users, 5)):
        with pytest.raises(TypeError, match=r"`user_id` must be a str, got int"):
            call()
    assert users.users() == ["5", "6"]


def test_pair_batch_select_takes_a_boolean_mask_as_a_mask():
    pairs = _pairs(["ann", "bob", "cat"], per_user=2)
    bob = pairs.select(pairs.user == 1)  # before: 6 pairs, rows 0, 0, 0, 0, 1, 1 (the mask read as positions 0 and 1)
    assert len(bob) == 2 and bob.user.tolist() == [1, 1] and torch.equal(bob.prompt, pairs.prompt[2:4])
    assert pairs.select(np.array([False] * 6)).user.tolist() == [] and len(pairs.select([])) == 0
    assert pairs.select([5, -1, 0]).user.tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match=r"`index` is a mask of shape \(2,\)"):
        pairs.select([True, False])
    with pytest.raises(ValueError, match=r"`index` holds position 6: these pairs are 0 \.\. 5"):  # before: IndexError
        pairs.select([6])
    with pytest.raises(ValueError, match=r"`index` holds float64"):  # before: truncated to positions 0 and 1
        pairs.select([0.5, 1.5])
