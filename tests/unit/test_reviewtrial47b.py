"""Review of session trial47b (the library trial): what it left that a user of the library or the service
still meets. Tiny inputs, well under a second each."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pluralign.reward.pal import PALConfig, PALModel, load_pal, save_pal
from pluralign.reward.user_weights import UserWeights


def _tiny_pal() -> PALModel:
    return PALModel(PALConfig(variant="a", k=2, input_dim=8, latent_dim=4, hidden=8))


def test_a_pal_checkpoint_a_release_before_trial47b_saved_with_a_nan_metric_loads_and_forgets(tmp_path):
    """trial47b made save_pal leave a NaN metric out; a checkpoint saved before it holds the NaN as null
    (msgspec's JSON for NaN: `pluralign train-pal` wrote test_macro_acc NaN for a protocol with no seen
    test pairs), and load_pal, read_meta and forget_users (a user's DELETE) still refused it: "meta.json:
    not a description of a PAL checkpoint: Expected `float`, got `null`"."""
    from pluralign.reward.pal_checkpoint import forget_users, read_meta

    folder = tmp_path / "pal"
    save_pal(folder, _tiny_pal(), UserWeights.from_logits(["ann", "bob"], np.zeros((2, 2))), encoder_id="enc",
             metrics={"val_acc": 0.5})
    meta = json.loads((folder / "meta.json").read_text())
    meta["metrics"]["test_macro_acc"] = None  # what msgspec wrote for NaN before trial47b
    (folder / "meta.json").write_text(json.dumps(meta))
    _, users, loaded = load_pal(folder, encoder_id="enc", device="cpu")
    assert loaded.metrics == {"val_acc": 0.5} and users.users() == ["ann", "bob"]
    assert forget_users(folder, lambda u: u == "ann") == 1
    assert read_meta(folder).users == 1 and read_meta(folder).metrics == {"val_acc": 0.5}
    assert "null" not in (folder / "meta.json").read_text()


def test_the_user_table_answers_in_for_a_non_str_id_as_it_does_lookup():
    users = UserWeights.from_logits(["5"], np.zeros((1, 2)))
    assert "5" in users and "6" not in users
    # trial47b made lookup(5) a TypeError ("lookup(5) gave the prior for a user set as "5""), but `5 in users`
    # still said False of that user, and `users.lookup(5) if 5 in users else fit(...)` refitted them
    with pytest.raises(TypeError, match=r"`user_id` must be a str, got int"):
        _ = 5 in users


def test_posterior_samples_refuse_a_nan_posterior():
    from pluralign.user.active import posterior_samples

    # trial47b's checks here had no test: removing `_finite("mean", mean)` left the suite green, and the
    # draws came back all NaN
    with pytest.raises(ValueError, match=r"`mean` is not finite"):
        posterior_samples(np.array([0.0, math.nan]), np.eye(2), samples=4)
    with pytest.raises(ValueError, match=r"`cov` is not finite"):
        posterior_samples(np.zeros(2), np.array([[1.0, math.inf], [math.inf, 1.0]]), samples=4)
    assert np.isfinite(posterior_samples(np.zeros(2), np.eye(2), samples=4)).all()


# the readable summary (a user's profile: GET /v1/users/{id})

@pytest.mark.parametrize("p", [math.nan, 2.0, -0.5, math.inf])
def test_the_summary_words_refuse_a_probability_that_is_none(p):
    from pluralign.user.summary import leaning, level

    # before: leaning(nan) was "less", level(2.0) and level(inf) "confident", leaning(-0.5) "less" and level(nan) "uncertain"
    with pytest.raises(ValueError, match=r"`p_more` must be a probability in \[0, 1\]"):
        leaning(p)
    with pytest.raises(ValueError, match=r"`p` must be a probability in \[0, 1\]"):
        level(p)


def test_the_summary_words_still_read_probabilities_and_their_rounding():
    from pluralign.user.summary import leaning, level

    assert [leaning(p) for p in (0.0, 0.3, 0.5, 0.9, 1.0)] == ["less", "less", None, "more", "more"]
    assert [level(p) for p in (0.5, 0.9, 0.99, 1.0)] == ["uncertain", "likely", "confident", "confident"]
    # a probability integrated along a path can land an ulp past 1 (a part of a sum above the whole)
    assert leaning(1.0 + 2e-16) == "more" and level(1.0 + 2e-16) == "confident" and leaning(-1e-17) == "less"


def test_prototypes_are_described_by_the_answers_they_score_not_by_nan():
    from pluralign.user.summary import describe_prototypes

    answers = ["one", "two", "three", "four", "five"]
    scores = np.array([[1.0, 0.0], [math.nan, 1.0], [3.0, math.inf], [2.0, 3.0], [0.5, -math.inf]])
    # before: the NaN row sorted anywhere and scrambled the order of the rest (prototype 0's highest were
    # "one" and "two": NaN, then 1.0 above 3.0), and it was shown with score NaN, which JSON writes as null
    described = describe_prototypes(scores, ["p"] * 5, answers, per_side=2)
    assert [e.answer for e in described[0].highest] == ["three", "four"] and [e.answer for e in described[0].lowest] == ["five", "one"]
    assert [e.answer for e in described[1].highest] == ["four"] and [e.answer for e in described[1].lowest] == ["one"]
    assert all(math.isfinite(e.score) for d in described for e in d.highest + d.lowest)
    assert describe_prototypes(np.full((2, 1), math.nan), ["p", "q"], ["a", "b"])[0].highest == []


def test_a_user_state_holding_nan_or_no_probability_is_not_readable():
    import msgspec

    from pluralign.user.model import UserModel

    um = UserModel(_tiny_pal(), population="reviewtrial47b")
    rng = np.random.default_rng(0)
    _, state = um.fit_user(rng.normal(size=(2, 8)), rng.normal(size=(2, 8)), rng.normal(size=(2, 8)),
                           ["Yes.", "Sure!"], ["No, I would not.", "- a\n- b"], np.zeros(2))
    assert state.readable() and state.p_more
    rounded = msgspec.structs.replace(state, p_more={**state.p_more, "length": 1.0 + 2e-16})  # an ulp past 1: stored so
    assert rounded.readable()
    mean = list(state.mean)
    mean[3] = math.nan
    for damaged in (msgspec.structs.replace(state, p_more={**state.p_more, "length": math.nan}),
                    msgspec.structs.replace(state, p_more={**state.p_more, "length": 2.0}),
                    msgspec.structs.replace(state, mean=mean),
                    msgspec.structs.replace(state, cov=state.cov[:-1])):  # cov_array cannot reshape it
        assert not damaged.readable()


@pytest.mark.parametrize("k", [1.5, True, -1])
def test_select_active_names_a_k_that_is_no_whole_number_as_select_by_group_does(k):
    from pluralign.user.active import select_active

    design = np.random.default_rng(0).normal(size=(5, 3))
    # trial47b's select_by_group docstring says it refuses such a k "as `select_active`"; select_active took True
    # as 1 and answered 1.5 with range()'s TypeError ("'float' object cannot be interpreted as an integer")
    with pytest.raises(ValueError, match=r"`k` must be a whole number >= 0"):
        select_active(design, np.zeros(3), np.ones(3), k)
