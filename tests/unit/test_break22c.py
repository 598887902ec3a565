"""Break 22c: the library used as a data scientist would, fed bad input. Each test drives a public
function the way a notebook would and checks that a docstring's promise holds: a ValueError naming
the argument and the problem, never a silent result from garbage or a crash from deep inside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, fit_user, fit_users, update_user

TINY = {"input_dim": 8, "latent_dim": 4, "hidden": 8}


def tiny_pal(variant: str = "a", k: int = 2) -> PALModel:
    torch.manual_seed(0)
    return PALModel(PALConfig(variant=variant, k=k, **TINY)).eval()


def comparisons(n: int = 3, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, dim, generator=g) for _ in range(3))  # prompt, chosen, rejected


# -- PAL's few-shot fit ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["a", "b"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_fit_user_refuses_non_finite_embeddings_naming_the_argument(variant, bad):
    # before: the objective was NaN, no step was taken, and the prior came back as the user's fit
    model = tiny_pal(variant)
    prompt, chosen, rejected = comparisons()
    chosen[1, 3] = bad
    with pytest.raises(ValueError, match=r"`chosen`.*row 1.*not finite"):
        fit_user(model, prompt, chosen, rejected)


def test_fit_user_refuses_embeddings_of_another_width():
    prompt, chosen, rejected = comparisons(dim=5)
    with pytest.raises(ValueError, match=r"`prompt`.*\(3, 5\).*input_dim=8"):
        fit_user(tiny_pal(), prompt, chosen, rejected)


def test_fit_user_refuses_different_numbers_of_comparisons():
    prompt, chosen, rejected = comparisons()
    with pytest.raises(ValueError, match=r"`chosen` has 2 rows, `prompt` has 3"):
        fit_user(tiny_pal(), prompt, chosen[:2], rejected)


@pytest.mark.parametrize(("prior", "problem"), [(torch.zeros(3), r"`prior_logits`.*3 values.*K=2"),
                                                (torch.tensor([float("nan"), 0.0]), r"`prior_logits`.*not finite")])
def test_fit_user_refuses_prior_logits_that_are_not_k_finite_numbers(prior, problem):
    with pytest.raises(ValueError, match=problem):
        fit_user(tiny_pal(), *comparisons(), prior_logits=prior)
    with pytest.raises(ValueError, match=problem.replace("prior_logits", "logits")):
        update_user(tiny_pal(), prior, *comparisons())


@pytest.mark.parametrize("strength", [0.0, -1.0, float("nan")])
def test_fit_user_refuses_a_prior_strength_that_is_not_positive(strength):
    # before: 0 raised numpy's LinAlgError (a singular Hessian), -1 returned the prior silently
    with pytest.raises(ValueError, match="`prior_strength` must be a positive number"):
        fit_user(tiny_pal(), *comparisons(), prior_strength=strength)


def test_fit_users_refuses_an_owner_outside_the_users():
    prompt, chosen, rejected = comparisons()
    with pytest.raises(ValueError, match=r"`user`.*0 \.\. 1.*5"):
        fit_users(tiny_pal(), prompt, chosen, rejected, torch.tensor([0, 1, 5]), 2)
    with pytest.raises(ValueError, match=r"`user` has 2 rows"):
        fit_users(tiny_pal(), prompt, chosen, rejected, torch.tensor([0, 1]), 2)


def test_fit_user_takes_float64_tensors_and_numpy_arrays():
    # before: float64 (numpy's default) crashed in the first Linear ("mat1 and mat2 must have the same dtype")
    model = tiny_pal()
    prompt, chosen, rejected = comparisons()
    want = fit_user(model, prompt, chosen, rejected)
    assert torch.allclose(fit_user(model, prompt.double(), chosen.double(), rejected.double()), want, atol=1e-5)
    assert torch.allclose(fit_user(model, prompt.numpy(), chosen.numpy(), rejected.numpy()), want, atol=1e-5)


def test_user_model_refuses_non_finite_embeddings_instead_of_reporting_a_fit():
    # before: the posterior was the prior, recorded as fitted on 3 comparisons
    from pluralign.user import UserModel

    model = tiny_pal()
    um = UserModel(model, population="test")
    prompt, chosen, rejected = (t.numpy() for t in comparisons())
    rejected[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"`rejected`.*row 2.*not finite"):
        um.fit_user(prompt, chosen, rejected, ["a", "b", "c"], ["d", "e", "f"], np.zeros(2))
    with pytest.raises(ValueError, match=r"`prior_logits`.*3 values.*K=2"):
        um.fit_user(prompt, chosen, chosen + 1, ["a", "b", "c"], ["d", "e", "f"], np.zeros(3))
    with pytest.raises(ValueError, match=r"`response`.*row 0.*not finite"):
        um.candidates(prompt[0], np.full((2, 8), np.nan), ["a", "b"])


def test_fit_posterior_refuses_a_non_finite_design():
    from pluralign.user import fit_posterior

    design = np.ones((2, 3))
    design[1, 1] = np.inf
    with pytest.raises(ValueError, match=r"`design`.*row 1.*not finite"):
        fit_posterior(design, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"`prior_mean`.*2 values.*D=3"):
        fit_posterior(np.ones((2, 3)), np.zeros(2), np.ones(3))


# -- training on a PairBatch: PAL, EM, the Bradley-Terry baselines -----------------------------


def pair_batch(users: int = 2, per_user: int = 6, dim: int = 8, seed: int = 0):
    from pluralign.reward.features import PairBatch

    n = users * per_user
    prompt, chosen, rejected = comparisons(n, dim, seed)
    user = torch.arange(users).repeat_interleave(per_user)
    return PairBatch(prompt, chosen, rejected, user, [f"u{i}" for i in range(users)], ["g"] * n)


def trainers():
    from pluralign.reward.bt import BTConfig, PerUserBT, SingleBT
    from pluralign.reward.em import EMConfig, EMMixture
    from pluralign.reward.pal import PALPreference, PALTrainConfig

    return {
        "pal": lambda: PALPreference(PALConfig(k=2, **TINY), PALTrainConfig(max_epochs=1)),
        "em": lambda: EMMixture(EMConfig(k=2, restarts=1, max_iter=2)),
        "bt": lambda: SingleBT(BTConfig(full_batch_steps=2, full_batch_min_steps=1)),
        "per-user-bt": lambda: PerUserBT(),
    }


@pytest.mark.parametrize("name", ["pal", "em", "bt", "per-user-bt"])
@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_training_refuses_non_finite_embeddings_naming_the_field(name, field):
    # before: PAL crashed with "Expected state_dict to be dict-like, got NoneType", EM with "value
    # cannot be converted to type float without overflow", the BT baselines trained on it and
    # reported val_acc 0.0 (bt) or 1.0 (per-user-bt)
    train, val = pair_batch(), pair_batch(seed=1)
    getattr(train, field)[4, 2] = float("nan")
    with pytest.raises(ValueError, match=rf"`train.{field}` row 4 is not finite"):
        trainers()[name]().fit(train, val)


@pytest.mark.parametrize("name", ["pal", "em", "bt", "per-user-bt"])
def test_training_refuses_no_training_pairs(name):
    # before: EM and per-user BT crashed in torch ("max(): Expected reduction dim to be specified"),
    # bt "trained" on nothing and reported val_acc nan
    empty = pair_batch(users=2, per_user=0)
    with pytest.raises(ValueError, match=r"`train` holds 0 pairs"):
        trainers()[name]().fit(empty, pair_batch())


@pytest.mark.parametrize("name", ["pal", "em"])
def test_a_mixture_refuses_more_components_than_training_users(name):
    # before: K = 3 heads / prototypes were fitted from 2 users without a word (README: "K users
    # support at most K components"; only the CLI's K search said so)
    from pluralign.reward.bt import BTConfig  # noqa: F401 (trainers() imports lazily)
    from pluralign.reward.em import EMConfig, EMMixture
    from pluralign.reward.model_selection import TooManyComponents
    from pluralign.reward.pal import PALPreference, PALTrainConfig

    model = PALPreference(PALConfig(k=3, **TINY), PALTrainConfig(max_epochs=1)) if name == "pal" \
        else EMMixture(EMConfig(k=3, restarts=1, max_iter=2))
    with pytest.raises(TooManyComponents, match=r"K = 3 is more than the 2 training users"):
        model.fit(pair_batch(users=2), pair_batch(users=2, seed=1))


@pytest.mark.parametrize("name", ["bt", "per-user-bt"])
def test_baselines_without_validation_pairs_report_no_validation_accuracy(name):
    # before: {"val_acc": nan, "val_loss": nan}: a NaN accuracy reported as a number
    metrics = trainers()[name]().fit(pair_batch(), pair_batch(per_user=0))
    assert "val_acc" not in metrics and "val_loss" not in metrics


@pytest.mark.parametrize(("make", "field"), [
    ("PALConfig(input_dim=0)", "input_dim"), ("PALConfig(latent_dim=-1)", "latent_dim"), ("PALConfig(hidden=0)", "hidden"),
    ("PALTrainConfig(batch_size=0)", "batch_size"), ("PALTrainConfig(max_epochs=0)", "max_epochs"),
    ("PALTrainConfig(patience=0)", "patience"), ("PALTrainConfig(lr_shared=-1.0)", "lr_shared"),
    ("EMConfig(restarts=0)", "restarts"), ("EMConfig(l2=-1.0)", "l2"), ("EMConfig(max_iter=-1)", "max_iter"),
    ("BTConfig(batch_size=0)", "batch_size"), ("BTConfig(l2=-1.0)", "l2"),
])
def test_training_configs_refuse_values_that_cannot_train_naming_the_field(make, field):
    # before: PALTrainConfig(batch_size=0) failed at train time with "range() arg 3 must not be
    # zero", EMConfig(restarts=0) with a bare AssertionError, EMConfig(l2=-1.0) "fitted" to J=4e57,
    # PALConfig(input_dim=0) was accepted
    from pluralign.reward.bt import BTConfig  # noqa: F401
    from pluralign.reward.em import EMConfig  # noqa: F401
    from pluralign.reward.pal import PALTrainConfig  # noqa: F401

    with pytest.raises(ValueError, match=rf"`{field}`"):
        eval(make)


@pytest.mark.parametrize("name", ["bt", "per-user-bt"])
def test_baselines_say_they_are_not_fitted(name):
    # before: a bare AssertionError
    with pytest.raises(RuntimeError, match="fit it first"):
        trainers()[name]().prob_seen(pair_batch())


# -- fairness metrics and the audit ------------------------------------------------------------


@pytest.mark.parametrize("p", [[0.7, float("nan")], [0.7, 1.5], [0.7, -0.1]])
def test_fairness_metrics_refuse_values_that_are_not_probabilities(p):
    # before: ECE raised numpy's "'list' argument must have no negative elements" on NaN and
    # returned 0.4 for 1.5; credit(nan) was a silent 0 (a wrong prediction)
    from pluralign.evaluation import accuracy
    from pluralign.fairness.metrics import credit, expected_calibration_error

    for metric in (expected_calibration_error, credit, accuracy):
        with pytest.raises(ValueError, match=r"`p` must be probabilities in \[0, 1\]: element 1 is"):
            metric(np.array(p))


def test_fairness_metrics_take_lists_and_refuse_no_bins():
    # before: a list was "AttributeError: 'list' object has no attribute 'size'"; bins=0 numpy's bincount message
    from pluralign.fairness.metrics import expected_calibration_error, win_rate

    assert expected_calibration_error([0.6, 0.9]) == pytest.approx(expected_calibration_error(np.array([0.6, 0.9])))
    assert win_rate([True, False, True]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="`bins` must be"):
        expected_calibration_error(np.array([0.6]), bins=0)


@pytest.mark.parametrize(("field", "value"), [("ece_bins", 0), ("projection_dim", 0), ("base_dim", 0),
                                              ("min_group_size", 0), ("base_l2", -1.0), ("base_max_rows", 0)])
def test_audit_config_refuses_values_that_cannot_audit_naming_the_field(field, value):
    # before: ece_bins=0 failed mid-audit with "'list' argument must have no negative elements",
    # projection_dim=0 with "max(): Expected reduction dim to be specified"
    from pluralign.fairness.audit import AuditConfig

    with pytest.raises(ValueError, match=rf"AuditConfig: `{field}`"):
        AuditConfig(**{field: value})


def test_audit_refuses_non_finite_embedding_differences():
    # before: torch's "linalg.eigh: The algorithm failed to converge" from the whitening
    from pluralign.fairness.audit import Comparisons, audit

    diff = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    diff[3, 1] = np.nan
    c = Comparisons(diff=diff, user=np.array([0, 0, 0, 1, 1, 1]), users=["a", "b"], group=np.array([0, 0, 0, 1, 1, 1]),
                    groups=["x", "y"], time=np.arange(6.0), policy_win=np.zeros(6, np.int8), encoder_id="test")
    with pytest.raises(ValueError, match=r"`diff` row 3 is not finite"):
        audit(c, "g")


# -- the LanceDB store -------------------------------------------------------------------------


def test_store_on_a_file_says_it_is_a_file(tmp_path):
    # before: FileExistsError "[Errno 17] File exists" from deep in LanceDB
    from pluralign.store import Store, StoreError

    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(StoreError, match=r"notes.txt is a file, not a folder for the store's tables"):
        Store(str(path), "test", 8)
    assert path.read_text() == "x"
    with pytest.raises(StoreError, match=r"`dim` must be"):
        Store(str(tmp_path / "s"), "test", 0)


def _stored_row(i: int):
    from pluralign.store import StoredPreference

    return StoredPreference(tenant="t", user_id="u", pref_id=f"p{i}", prompt=f"p{i}", chosen="a", rejected="b",
                            kind="comparison", created_at=float(i))


def test_store_refuses_non_finite_vectors_naming_the_column(tmp_path):
    # before: LanceDB's "lance error: LanceError(Arrow): Compute error: Vector column contains NaN values"
    from pluralign.store import Store, StoreError

    store = Store(str(tmp_path / "s"), "test", 4)
    ok = np.ones((1, 4), np.float32)
    bad = ok.copy()
    bad[0, 2] = np.inf
    with pytest.raises(StoreError, match=r"`chosen_vec` row 0 is not finite"):
        store.add_preferences([_stored_row(1)], ok, bad, ok)
    assert store.count_preferences("t", "u") == 0


@pytest.mark.parametrize(("vector", "problem"), [(np.zeros(3), r"`vector` has shape \(3,\), expected \(4,\)"),
                                                 (np.array([1.0, np.nan, 0.0, 0.0]), r"`vector` is not finite")])
def test_store_search_refuses_a_query_vector_of_another_width_or_not_finite(tmp_path, vector, problem):
    # before: a NaN query answered [] (from LanceDB) or every row at distance NaN (from a cached
    # history); another width was numpy's "matmul: Input operand 1 has a mismatch in its core dimension 0"
    from pluralign.store import Store, StoreError

    store = Store(str(tmp_path / "s"), "test", 4)
    store.add_preferences([_stored_row(1)], np.ones((1, 4)), np.ones((1, 4)), np.zeros((1, 4)))
    store.history("t", "u")  # cached: the search reads the history
    with pytest.raises(StoreError, match=problem):
        store.search("t", "u", vector, 3)


# -- embedding: the cache and embed_pairs ------------------------------------------------------


class BrokenEncoder:
    """An encoder whose output is wrong in one way: `make(n)` returns what it answers for n texts."""

    encoder_id = "broken-8"
    dim = 8

    def __init__(self, make):
        self.make = make

    def encode(self, texts):
        return self.make(len(texts))


BROKEN = {
    "another width": (lambda n: np.zeros((n, 5), np.float32), r"returned shape \(2, 5\) for 2 texts, expected \(2, 8\)"),
    "too few rows": (lambda n: np.zeros((n - 1, 8), np.float32), r"returned shape \(1, 8\) for 2 texts, expected \(2, 8\)"),
    "NaN": (lambda n: np.full((n, 8), np.nan, np.float32), r"returned a vector that is not finite"),
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_the_embedding_cache_keeps_nothing_an_encoder_got_wrong(tmp_path, broken):
    # before: the wrong vectors were written to the cache first, then encode failed with numpy's
    # "could not broadcast input array from shape (5,) into shape (8,)" or a KeyError (or returned
    # NaN); a later run with the same encoder id read the cached garbage back
    from pluralign.embed import CachedEncoder, EmbeddingCache

    make, problem = BROKEN[broken]
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match=rf"encoder 'broken-8' {problem}"):
        CachedEncoder(BrokenEncoder(make), cache).encode(["a", "b"])
    assert len(cache) == 0


@pytest.mark.parametrize("broken", list(BROKEN))
def test_embed_pairs_refuses_what_an_encoder_got_wrong(broken):
    # before: 5-wide vectors became a PairBatch an 8-wide model later choked on, NaN went through
    from pluralign.data.record import Preference
    from pluralign.reward.features import embed_pairs

    make, problem = BROKEN[broken]
    record = Preference(user_id="u", prompt="p", chosen="a", rejected="b")
    with pytest.raises(ValueError, match=rf"encoder 'broken-8' {problem.replace('2 texts', '3 texts').replace('(2,', '(3,').replace('(1,', '(2,')}"):
        embed_pairs([record], BrokenEncoder(make))


def test_embed_pairs_names_a_user_missing_from_users():
    # before: KeyError: 'u'
    from pluralign.data.record import Preference
    from pluralign.reward.features import embed_pairs

    class Zeros:
        encoder_id, dim = "zeros", 4

        def encode(self, texts):
            return np.zeros((len(texts), 4), np.float32)

    with pytest.raises(ValueError, match=r"user 'u'.*not in `users`"):
        embed_pairs([Preference(user_id="u", prompt="p", chosen="a", rejected="b")], Zeros(), users=["v"])


# -- the user-weights table --------------------------------------------------------------------


def test_user_weights_from_logits_refuses_duplicate_or_missing_users():
    # before: a duplicate id kept the last row silently (version 2), a count mismatch was
    # "zip() argument 2 is longer than argument 1", UserWeights(0) was a table of 0 logits
    from pluralign.reward.pal import UserWeights

    with pytest.raises(ValueError, match=r"`users` names 'a' twice"):
        UserWeights.from_logits(["a", "a"], torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"`users` has 2 ids, `logits` 3 rows"):
        UserWeights.from_logits(["a", "b"], torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"`k` must be"):
        UserWeights(0)


# -- ties and splits ---------------------------------------------------------------------------


class _Zeros:
    encoder_id, dim = "zeros", 4

    def encode(self, texts):
        return np.arange(len(texts) * 4, dtype=np.float32).reshape(len(texts), 4) / 100


def test_embed_pairs_refuses_ties_instead_of_training_them_as_wins():
    # before: a tie (Preference: "kept, but not used for pairwise training") became a pair whose
    # `chosen` won, and every trainer learned it as a strict preference
    from pluralign.data.record import Preference
    from pluralign.reward.features import embed_pairs

    records = [Preference(user_id="u", prompt="p", chosen="a", rejected="b"),
               Preference(user_id="u", prompt="p", chosen="c", rejected="d", tie=True)]
    with pytest.raises(ValueError, match=r"record 1 \(user 'u'\) is a tie"):
        embed_pairs(records, _Zeros())
    assert len(embed_pairs([r for r in records if not r.tie], _Zeros())) == 1


@pytest.mark.parametrize(("call", "field"), [
    ("split_seen(users, 0, val=2.0)", "val"), ("split_seen(users, 0, test=-0.1)", "test"),
    ("split_seen(users, 0, val=0.5, test=0.5)", "val"), ("split_unseen(users, 0, query_fraction=1.5)", "query_fraction"),
    ("split_unseen(users, 0, min_query=-1)", "min_query"), ("file_protocol(records, min_pairs=0)", "min_pairs"),
])
def test_splits_refuse_fractions_that_leave_no_training_pairs(call, field):
    # before: val=2.0 put every pair in val and none in train without a word; file_protocol(min_pairs=0)
    # said "no user has 0 or more strict comparisons"
    from pluralign.data.record import Preference
    from pluralign.data.splits import file_protocol, split_seen, split_unseen  # noqa: F401

    records = [Preference(user_id="u", prompt=f"p{i}", chosen="a", rejected="b") for i in range(10)]
    users = {"u": records}  # noqa: F841 (read by eval)
    with pytest.raises(ValueError, match=rf"`{field}`"):
        eval(call)


# -- scoring: a PAL user's reward, MaxMin's pick, the next question ----------------------------


@pytest.mark.parametrize(("logits", "prompt_dim", "rows", "problem"), [
    (torch.zeros(5), 8, 3, r"`user_logits` has 5 values per row, the model has K=2"),
    (torch.tensor([float("nan"), 0.0]), 8, 3, r"`user_logits` is not finite"),
    (torch.zeros(2), 5, 3, r"`prompt` has shape \(3, 5\); the model reads \(N, 8\)"),
    (torch.zeros(2), 8, 2, r"`response` has 2 rows, `prompt` has 3"),
    (torch.zeros(4, 2), 8, 3, r"`user_logits` has 4 rows, the responses 3"),
])
def test_pal_reward_names_the_argument_that_does_not_fit(logits, prompt_dim, rows, problem):
    # before: torch's "mat1 and mat2 shapes cannot be multiplied (3x5 and 2x4)", "Sizes of tensors
    # must match", or NaN rewards for NaN logits
    model = tiny_pal()
    with pytest.raises(ValueError, match=problem):
        model.reward(logits, torch.randn(3, prompt_dim), torch.randn(rows, prompt_dim))


def test_pal_reward_and_preference_prob_take_numpy_and_float64():
    # before: "softmax(): argument 'input' (position 1) must be Tensor, not numpy.ndarray"
    model = tiny_pal()
    prompt, chosen, rejected = comparisons()
    want = model.reward(torch.zeros(2), prompt, chosen)
    assert torch.allclose(model.reward(np.zeros(2), prompt.numpy().astype(np.float64), chosen.numpy()), want, atol=1e-6)
    with pytest.raises(ValueError, match=r"`user_logits` has 3 values per row, the model has K=2"):
        model.preference_prob(torch.zeros(3), prompt, chosen, rejected)


def test_most_informative_pair_refuses_non_finite_candidates():
    # before: PairChoice(first=0, second=1, bits=nan): a question chosen on NaN
    from pluralign.user.active import most_informative_pair

    x = np.random.default_rng(0).normal(size=(3, 4))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`x` row 2 is not finite"):
        most_informative_pair(x, np.zeros(4), np.eye(4))


def test_select_maxmin_refuses_non_finite_rewards():
    # before: "attempt to get argmax of an empty sequence"
    from pluralign.policy.rerank_maxmin import select_maxmin

    with pytest.raises(ValueError, match=r"`rewards` of candidate 0 is not finite"):
        select_maxmin(np.array([[np.nan, 1.0], [0.5, 0.2]]))


# -- scoring pairs with a fitted model ----------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    """Each trainer fitted once on two users (tiny and fast)."""
    out = {}
    for name, make in trainers().items():
        model = make()
        model.fit(pair_batch(), pair_batch(seed=1))
        out[name] = model
    return out


@pytest.mark.parametrize("name", ["pal", "em", "bt", "per-user-bt"])
def test_fitted_models_refuse_non_finite_pairs_to_score(fitted, name):
    # before: PAL and the baselines answered P = nan, EM's posterior put a NaN user on head 0
    # ([1, 0]) and answered nan for its queries
    model = fitted[name]
    bad = pair_batch(seed=2)
    bad.rejected[3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"`pairs.rejected` row 3 is not finite"):
        model.prob_seen(bad)
    with pytest.raises(ValueError, match=r"`query.rejected` row 3 is not finite"):
        model.prob_new_users(pair_batch(seed=3), bad)
    with pytest.raises(ValueError, match=r"`support.rejected` row 3 is not finite"):
        model.prob_new_users(bad, pair_batch(seed=3))


def test_em_names_pairs_of_other_users_or_another_width(fitted):
    # before: "IndexError: index 2 is out of bounds for dimension 0 with size 2" and
    # "mat1 and mat2 shapes cannot be multiplied (1x10 and 16x2)"
    em = fitted["em"]
    with pytest.raises(ValueError, match=r"index the users the mixture was fitted on"):
        em.prob_seen(pair_batch(users=3))
    with pytest.raises(ValueError, match=r"`support.prompt` has shape \(12, 5\); the model reads \(N, 8\)"):
        em.posterior(pair_batch(dim=5))
    with pytest.raises(ValueError, match=r"`prompt` has shape \(2, 5\); the model reads \(N, 8\)"):
        em.rewards(torch.randn(2, 5), torch.randn(2, 5))


def test_stated_preferences_refuse_a_direction_outside_more_or_less():
    # before: {"length": "sideways"} was recorded, and signs() then failed with KeyError: 'sideways'
    from pluralign.user.stated import StatedPreferences

    with pytest.raises(ValueError, match=r"`length`: direction must be 'more', 'less' or None, got 'sideways'"):
        StatedPreferences().changed({"length": "sideways"}, 0.0)


def test_a_cache_row_of_another_width_is_embedded_again_not_returned(tmp_path):
    # before: a row an earlier broken encoder left (5 floats for an 8-wide encoder) made every later
    # encode of that text fail with "could not broadcast input array from shape (5,) into shape (8,)"
    from pluralign.embed import CachedEncoder, EmbeddingCache
    from pluralign.embed.cache import text_key

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put("broken-8", [text_key("a")], np.zeros((1, 5), np.float32))
    good = BrokenEncoder(lambda n: np.ones((n, 8), np.float32))
    encoder = CachedEncoder(good, cache)
    assert np.array_equal(encoder.encode(["a", "b"]), np.ones((2, 8), np.float32))
    assert encoder.embedded == 2
    assert cache.get("broken-8", [text_key("a")])[text_key("a")].shape == (8,)


def test_online_pal_refuses_non_finite_embeddings_and_bad_prior():
    # before: built happily; every prediction was NaN (scored as a wrong answer by the audit)
    from pluralign.fairness.online import OnlinePAL

    prompt, chosen, rejected = comparisons()
    bad = chosen.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"`chosen` row 0 is not finite"):
        OnlinePAL(tiny_pal(), torch.zeros(2), prompt, bad, rejected, n_users=1)
    with pytest.raises(ValueError, match=r"`prior_logits` has 3 values"):
        OnlinePAL(tiny_pal(), torch.zeros(3), prompt, chosen, rejected, n_users=1)
    with pytest.raises(ValueError, match=r"`prior_strength` must be a positive number"):
        OnlinePAL(tiny_pal(), torch.zeros(2), prompt, chosen, rejected, n_users=1, prior_strength=0.0)
