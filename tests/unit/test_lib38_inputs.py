"""The library used from a notebook, fed what a hurried user feeds it (lib38): each mistake is a
ValueError (or TypeError) at the public boundary naming the argument, never a silent wrong number,
a silent no-op or an error from deep inside torch."""

from __future__ import annotations

import pytest

from pluralign.policy.fspo import FSPOConfig
from pluralign.policy.maxmin import MaxMinConfig
from pluralign.reward.bt import BTConfig
from pluralign.reward.em import EMConfig
from pluralign.reward.pal import PALConfig, PALTrainConfig

BAD_CONFIGS = [
    # a count that is not a whole number was kept and failed later inside range() or nn.Linear
    (PALConfig, "k", 1.5), (PALConfig, "k", True), (PALConfig, "k", float("nan")), (PALConfig, "k", "2"),
    (PALConfig, "input_dim", 1.5), (PALConfig, "hidden", 0.5),
    (PALTrainConfig, "max_epochs", 1.5), (PALTrainConfig, "seed", 1.5), (PALTrainConfig, "lr_user", float("inf")),
    (PALTrainConfig, "lr_shared", "1"),
    (BTConfig, "hidden", 1.5), (BTConfig, "epochs", 1.5), (BTConfig, "lr", float("inf")), (BTConfig, "seed", 0.5),
    (EMConfig, "k", 1.5), (EMConfig, "k", True), (EMConfig, "max_iter", 2.5), (EMConfig, "k", "2"),
    # MaxMin's DPO temperature, learning rate and LoRA rank were not checked at all
    (MaxMinConfig, "beta", 0), (MaxMinConfig, "beta", -0.1), (MaxMinConfig, "lr", 0), (MaxMinConfig, "lr", float("nan")),
    (MaxMinConfig, "steps", 0), (MaxMinConfig, "batch_size", 0), (MaxMinConfig, "lora_r", 0), (MaxMinConfig, "lora_alpha", 0),
    (MaxMinConfig, "max_length", 0), (MaxMinConfig, "lora_layers", -1),
    # nor FSPO's (ipo's 1 / (2 beta) divided by zero at the first step)
    (FSPOConfig, "beta", 0), (FSPOConfig, "beta", -1.0), (FSPOConfig, "lr", 0), (FSPOConfig, "lr", -2e-4),
    (FSPOConfig, "steps", 0), (FSPOConfig, "batch_size", 0), (FSPOConfig, "lora_rank", 0), (FSPOConfig, "shots", -1),
    (FSPOConfig, "max_prompt_tokens", 0), (FSPOConfig, "max_response_tokens", 0), (FSPOConfig, "queries", 1.5),
]


@pytest.mark.parametrize(("config", "field", "value"), BAD_CONFIGS, ids=[f"{c.__name__}.{f}={v!r}" for c, f, v in BAD_CONFIGS])
def test_a_config_field_that_cannot_be_used_is_named_when_the_config_is_made(config, field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        config(**{field: value})


@pytest.mark.parametrize("config", [PALConfig, PALTrainConfig, BTConfig, EMConfig, MaxMinConfig, FSPOConfig])
def test_every_config_s_defaults_are_still_accepted(config):
    config()


def test_user_weights_refuse_one_user_id_string_and_logits_of_another_shape():
    import torch

    from pluralign.reward.pal import UserWeights

    table = UserWeights(2)
    table.set("ann", torch.tensor([1.0, -1.0]))
    # a string is a sequence of one-letter users: stack("ann") gave three prior rows, silently
    with pytest.raises(TypeError, match="`users`.*list of user ids"):
        table.stack("ann")
    assert table.stack(["ann"])[0].tolist() == [[1.0, -1.0]]
    # a user id that is not a string was stored, then saved as JSON text and read back as another key
    with pytest.raises(TypeError, match="`user_id` must be a str, got int"):
        table.set(3, torch.zeros(2))
    # a (2, 2) table of two users' logits was flattened into one user's four
    wide = UserWeights(4)
    with pytest.raises(ValueError, match=r"`logits` of 'ann' has shape \(2, 2\)"):
        wide.set("ann", torch.zeros(2, 2))
    wide.set("ann", torch.zeros(1, 4))  # one row of K is one user's logits
    with pytest.raises(ValueError, match=r"`prior` has shape \(2, 2\)"):
        UserWeights(4, torch.zeros(2, 2))


def test_user_weights_from_logits_names_logits_that_are_not_one_row_per_user():
    import numpy as np
    import torch

    from pluralign.reward.pal import UserWeights

    with pytest.raises(ValueError, match=r"`logits` has shape \(2,\); one row of K logits per user is \(U, K\) = \(2, K\)"):
        UserWeights.from_logits(["a", "b"], torch.zeros(2))  # was IndexError: tuple index out of range
    bad = torch.zeros(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="`logits` row 1 .*'b'.* not finite"):  # was "`prior` is not finite"
        UserWeights.from_logits(["a", "b"], bad)
    table = UserWeights.from_logits(["a", "b"], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # was AttributeError: detach
    assert table.k == 3 and table.get("b").tolist() == [0.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def tiny_pal():
    import torch

    from pluralign.reward.pal import PALConfig, PALModel

    torch.manual_seed(0)
    return PALModel(PALConfig(k=2, input_dim=8, latent_dim=4, hidden=8)).eval()


def test_few_shot_fit_names_a_step_budget_or_user_count_it_cannot_use(tiny_pal):
    import torch

    from pluralign.reward.features import PairBatch
    from pluralign.reward.pal import evaluate_pairs, fit_user, fit_users, update_user

    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="`max_steps` must be a whole number >= 0, got -1"):
        fit_user(tiny_pal, x, x.flip(0), x, max_steps=-1)  # was: the prior, silently, as if fitted
    with pytest.raises(ValueError, match="`max_steps` must be a whole number >= 0, got 1.5"):
        fit_user(tiny_pal, x, x.flip(0), x, max_steps=1.5)  # was TypeError from range()
    with pytest.raises(ValueError, match="`max_steps`"):
        update_user(tiny_pal, torch.zeros(2), x, x.flip(0), x, max_steps=-3)
    with pytest.raises(ValueError, match="`n_users` must be a whole number >= 0, got 1.5"):
        fit_users(tiny_pal, x, x, x, torch.zeros(3, dtype=torch.long), 1.5)  # was TypeError from np.zeros
    assert fit_user(tiny_pal, x, x.flip(0), x, max_steps=0).tolist() == [0.0, 0.0]  # no step: the prior
    pairs = PairBatch(x, x.flip(0), x, torch.zeros(3, dtype=torch.long), ["ann"], ["g"] * 3)
    for size in (0, -1):  # was ValueError: range() arg 3 must not be zero / torch.cat(): expected a non-empty list
        with pytest.raises(ValueError, match=f"`batch_size` must be a whole number >= 1, got {size}"):
            evaluate_pairs(tiny_pal, torch.zeros(1, 2), pairs, batch_size=size)


def test_embeddings_on_the_meta_device_are_named_not_a_torch_copy_error(tiny_pal):
    import torch

    from pluralign.reward.pal import fit_user

    x = torch.randn(3, 8)
    meta = x.to("meta")  # holds no numbers: what a model built under init_empty_weights hands on
    with pytest.raises(ValueError, match="`prompt` is on the meta device"):  # before: torch raised "Cannot copy out of meta tensor"
        tiny_pal.reward(torch.zeros(2), meta, x)
    with pytest.raises(ValueError, match="`chosen` is on the meta device"):
        fit_user(tiny_pal, x, meta, x)
    with pytest.raises(ValueError, match="`user_logits` is on the meta device"):
        tiny_pal.preference_prob(torch.zeros(2, device="meta"), x, x, x)


def _stored(n: int):
    import time

    from pluralign.store import StoredPreference

    now = time.time()
    return [StoredPreference(tenant="default", user_id="ann", pref_id=f"p{i}", prompt=f"q{i}", chosen=f"c{i}", rejected=f"r{i}",
                             kind="comparison", created_at=now + i) for i in range(n)]


def test_store_search_answers_alike_whether_or_not_the_user_s_history_is_cached(tmp_path):
    import numpy as np

    from pluralign.store import Store, StoreError

    rng = np.random.default_rng(0)
    vectors = [rng.random((4, 4), dtype=np.float32) for _ in range(3)]
    Store(str(tmp_path / "lance"), encoder_id="e", dim=4).add_preferences(_stored(4), *vectors)
    cached = Store(str(tmp_path / "lance"), encoder_id="e", dim=4)
    cached.preferences_for("default", "ann")  # loads the history: search answers from it
    assert cached.search("default", "ann", vectors[0][1], 2)[0][0].pref_id == "p1"
    fresh = lambda: Store(str(tmp_path / "lance"), encoder_id="e", dim=4)  # noqa: E731  one LanceDB vector search
    assert fresh().search("default", "ann", vectors[0][1], 2)[0][0].pref_id == "p1"
    # limit 0: [] from the cache, "Limit is required for ANN/KNN queries" from LanceDB before
    assert cached.search("default", "ann", vectors[0][1], 0) == fresh().search("default", "ann", vectors[0][1], 0) == []
    for store in (cached, fresh()):
        for limit in (-1, 1.5):  # -1: [] cached, LanceDB's error fresh; 1.5: TypeError from a slice
            with pytest.raises(StoreError, match=f"`limit` must be a whole number >= 0, got {limit}"):
                store.search("default", "ann", vectors[0][1], limit)
        # an all-zero vector has no cosine distance: the cache gave every row at distance 1, LanceDB none
        with pytest.raises(StoreError, match="`vector` is all zeros"):
            store.search("default", "ann", np.zeros(4), 2)


def test_store_pages_and_vectors_given_otherwise_are_named(tmp_path):
    import numpy as np
    import torch

    from pluralign.store import Store, StoreError

    store = Store(str(tmp_path / "lance"), encoder_id="e", dim=4)
    rows = _stored(3)
    # lists (or torch tensors) of vectors: AttributeError: 'list' object has no attribute 'shape' before
    store.add_preferences(rows[:1], [[0.1] * 4], torch.rand(1, 4), np.ones((1, 4)))
    with pytest.raises(StoreError, match=r"`chosen_vec` has shape \(1, 3\), expected \(1, 4\)"):
        store.add_preferences(rows[1:2], [[0.1] * 4], [[0.1] * 3], [[0.1] * 4])
    with pytest.raises(StoreError, match="`rejected_vec` is not an \\(N, 4\\) array of numbers"):
        store.add_preferences(rows[1:2], [[0.1] * 4], [[0.1] * 4], [["a"] * 4])
    store.add_preferences(rows[1:], *(np.ones((2, 4), np.float32),) * 3)
    assert [p.pref_id for p in store.preferences_for("default", "ann", offset=1, limit=1)[0]] == ["p1"]
    # a negative offset or limit sliced from the end: offset=-1 gave the newest row as page one
    for offset, limit, name in ((-1, None, "offset"), (0, -1, "limit"), (0.5, None, "offset"), (0, 2.5, "limit")):
        with pytest.raises(StoreError, match=f"`{name}` must be a whole number >= 0"):
            store.preferences_for("default", "ann", offset=offset, limit=limit)


def test_pairwise_losses_name_rewards_that_would_broadcast_and_a_beta_they_cannot_use():
    import torch

    from pluralign.losses import bradley_terry_loss, dpo_loss, ipo_loss

    r = torch.zeros(3)
    # (3,) against (3, 1) broadcast to nine pairs: the mean of a (3, 3) table, silently
    with pytest.raises(ValueError, match=r"`rejected_reward` has shape \(3, 1\), `chosen_reward` \(3,\)"):
        bradley_terry_loss(r, r[:, None])
    with pytest.raises(ValueError, match=r"`ref_rejected_logp` has shape \(2,\), `policy_chosen_logp` \(3,\)"):
        dpo_loss(r, r, r, r[:2])
    for beta in (0, -0.1, float("nan")):  # ipo: ZeroDivisionError at 0; dpo: a constant loss at 0, reversed below
        for loss in (dpo_loss, ipo_loss):
            with pytest.raises(ValueError, match=f"`beta` must be a finite number > 0, got {beta}"):
                loss(r, r, r, r, beta=beta)
    assert float(bradley_terry_loss(torch.ones(2), torch.zeros(2))) == pytest.approx(0.3133, abs=1e-4)


def test_win_rate_counts_wins_not_probabilities_and_ranking_refuses_a_nan_score():
    import numpy as np

    from pluralign.fairness.metrics import win_rate
    from pluralign.policy.rerank import ranked_by

    assert win_rate([True, False, True, True]) == 0.75
    assert win_rate(np.array([1, 0])) == 0.5
    # probabilities were cast to bool: 0.2 counted as a win, and NaN too
    for bad in ([0.2, 0.9], [float("nan"), 0.0]):
        with pytest.raises(ValueError, match="`personalized_chosen` must be booleans"):
            win_rate(bad)
    # NaN compares false with everything: a NaN score came first in the order, served as the best answer
    with pytest.raises(ValueError, match="`scores` of candidate 0 is NaN"):
        ranked_by(np.array([float("nan"), 1.0, 0.0]))
    assert ranked_by(np.array([0.0, float("inf"), -float("inf")])).order == [1, 0, 2]


def test_an_em_mixture_from_heads_checks_the_heads_against_k():
    import torch

    from pluralign.reward.em import EMConfig, EMMixture

    config = EMConfig(k=2)
    with pytest.raises(ValueError, match=r"`head_weights` has shape \(3, 8\), expected \(K, F\) = \(2, F\)"):
        EMMixture.from_heads(torch.zeros(3, 8), torch.zeros(2), config)  # was accepted: K=3 heads under K=2
    with pytest.raises(ValueError, match=r"`head_weights` has shape \(8,\)"):
        EMMixture.from_heads(torch.zeros(8), torch.zeros(2), config)
    with pytest.raises(ValueError, match="`log_mixing` has 3 values"):
        EMMixture.from_heads(torch.zeros(2, 8), torch.zeros(3), config)
    nan = torch.zeros(2, 8)
    nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match="`head_weights` row 1 is not finite"):
        EMMixture.from_heads(nan, torch.zeros(2), config)
    model = EMMixture.from_heads(torch.zeros(2, 8), torch.tensor([0.0, float("-inf")]), config)  # a head no user chose
    assert model.mixing_weights().tolist() == [1.0, 0.0]


class _Counting:
    encoder_id = "test/lib38"
    dim = 3

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        import numpy as np

        self.calls += len(texts)
        return np.array([[len(t), 1.0, 2.0] for t in texts], np.float32)


def test_a_damaged_cache_row_is_embedded_again_not_a_numpy_buffer_error(tmp_path):
    import sqlite3

    from pluralign.embed.cache import CachedEncoder, EmbeddingCache

    path = tmp_path / "embeddings.sqlite"
    CachedEncoder(_Counting(), EmbeddingCache(path)).encode(["ann", "bob"])
    db = sqlite3.connect(path)  # a torn write, or another tool's bytes: 5 bytes is no float32 vector
    db.execute("UPDATE embedding SET vector = ?", (b"\x00\x01\x02\x03\x04",))
    db.commit()
    db.close()
    encoder = _Counting()
    cached = CachedEncoder(encoder, EmbeddingCache(path))
    # was ValueError: buffer size must be a multiple of element size, on every later run
    assert cached.encode(["ann", "bob"]).tolist() == [[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]]
    assert encoder.calls == 2  # embedded again and replaced
    again = _Counting()
    CachedEncoder(again, EmbeddingCache(path)).encode(["ann", "bob"])
    assert again.calls == 0


def test_a_sqlite_file_of_another_kind_and_mismatched_keys_are_named(tmp_path):
    import sqlite3

    import numpy as np

    from pluralign.embed.cache import EmbeddingCache

    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)  # an `embedding` table of another tool's columns
    db.execute("CREATE TABLE embedding (id INTEGER, text TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="other.sqlite: not an embedding cache: its `embedding` table has columns"):
        EmbeddingCache(other)  # was accepted, then sqlite3.OperationalError: no such column: key at the first read
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="`keys` has 2 keys, `vectors` 1 rows"):
        cache.put("enc", [b"k" * 32, b"j" * 32], np.ones((1, 3), np.float32))  # zip dropped the second key silently
    assert len(cache) == 0


def test_fspo_episodes_name_counts_they_cannot_use_and_a_query_user_without_support():
    from pluralign.data.record import Preference
    from pluralign.policy.fspo import group_batches, query_episodes, training_episodes

    users = {"ann": [Preference(user_id="ann", prompt=f"p{i}", chosen=f"c{i}", rejected=f"r{i}") for i in range(5)]}
    assert [len(e.shots) for e in training_episodes(users, 2, 3)] == [2, 2, 2]
    # shots=-1 gave no episode at all, queries=0 a ZeroDivisionError, count=-1 none, silently
    for kwargs, name in ((dict(shots=-1, count=3), "shots"), (dict(shots=2, count=3, queries=0), "queries"),
                         (dict(shots=2, count=-1), "count"), (dict(shots=1.5, count=3), "shots")):
        with pytest.raises(ValueError, match=f"`{name}` must be a whole number"):
            training_episodes(users, **kwargs)
    with pytest.raises(TypeError, match="`users` must map each user id to their comparisons"):
        training_episodes(users["ann"], 2, 3)  # was AttributeError: 'list' object has no attribute 'items'
    # query_episodes(shots=-1) showed all but the last support comparison (a slice from the end)
    with pytest.raises(ValueError, match="`shots` must be a whole number >= 0, got -1"):
        query_episodes(users, users, -1)
    with pytest.raises(ValueError, match="`per_user` must be a whole number >= 0, got -1"):
        query_episodes(users, users, 1, per_user=-1)
    # a query user with no support comparisons was KeyError: 'bob'
    with pytest.raises(ValueError, match="query user 'bob' has no support comparisons"):
        query_episodes(users, {**users, "bob": users["ann"]}, 2)
    assert [len(e.shots) for e in query_episodes(users, users, 2, per_user=2)] == [2, 2]
    for size in (0, -1):  # 0: range() arg 3 must not be zero; -1: no batch, then a modulo by zero in training
        with pytest.raises(ValueError, match=f"`size` must be a whole number >= 1, got {size}"):
            group_batches([[0, 1]], size)


def test_the_user_model_names_logits_texts_and_stated_signs_it_cannot_use(tiny_pal):
    import numpy as np

    from pluralign.user import FEATURE_NAMES, UserModel

    x = np.random.default_rng(0).random((3, 8), dtype=np.float32)
    texts = ["a", "bb", "ccc"]
    # prior logits of another K, or NaN, were kept: weights (3,) for K=2 failed later in numpy, NaN scored NaN
    with pytest.raises(ValueError, match="`prior_logits` has 3 values .*K=2"):
        UserModel(tiny_pal, "p", prior_logits=np.zeros(3))
    with pytest.raises(ValueError, match="`prior_logits` is not finite"):
        UserModel(tiny_pal, "p", prior_logits=np.array([np.nan, 0.0]))
    um = UserModel(tiny_pal, "p")
    candidates = um.candidates(x[0], x, texts)
    with pytest.raises(ValueError, match="`logits` has 3 values .*K=2"):  # was numpy's could not broadcast (3,) into (2,)
        um.score(np.zeros(3), None, candidates)
    with pytest.raises(ValueError, match="`logits` is not finite"):  # was NaN scores, silently
        um.score(np.array([np.nan, 0.0]), None, candidates)
    with pytest.raises(ValueError, match="`logits` has 3 values"):  # was a state recording 3 logits for K=2
        um.fit(np.zeros(3), x, x[::-1].copy(), x, texts, texts[::-1])
    # one string is N one-letter texts: "abc" scored three answers "a", "b", "c" without a word
    with pytest.raises(TypeError, match="`texts` must be a sequence of strings"):
        um.candidates(x[0], x, "abc")
    with pytest.raises(TypeError, match="`chosen_texts` must be a sequence of strings"):
        um.fit_user(x, x[::-1].copy(), x, "abc", texts, np.zeros(2))
    named = np.zeros((3, len(FEATURE_NAMES)))
    with pytest.raises(ValueError, match=r"`rejected_named` has shape \(2, 7\), expected \(3, 7\)"):  # numpy broadcast error
        um.fit_named(np.zeros(2), x, x, x, named, named[:2])
    # a stated preference is a sign: 5 gave the prior five times the stated weight
    with pytest.raises(ValueError, match=f"stated preference on {FEATURE_NAMES[0]!r} must be \\+1 or -1 \\(more or less\\), got 5"):
        um.fit_user(x, x[::-1].copy(), x, texts, texts[::-1], np.zeros(2), stated={FEATURE_NAMES[0]: 5})


def test_a_preference_made_in_python_is_held_to_the_importer_s_rules_on_margin_and_time(tmp_path):
    import numpy as np

    from pluralign.data.record import Preference
    from pluralign.store import Store, StoreError

    row = dict(user_id="ann", prompt="p", chosen="c", rejected="r")
    # read_rows refuses these; built directly they were kept (and a NaN margin written as null)
    for margin in (float("nan"), float("inf"), -1.0, 2e6):
        with pytest.raises(ValueError, match="`margin` must be a number >= 0"):
            Preference(**row, margin=margin)
    with pytest.raises(ValueError, match="`created_at` must be a Unix time in seconds"):  # since small47b: -5 too
        Preference(**row, created_at=float("nan"))
    with pytest.raises(TypeError, match="`user_id` must be a str, got int"):  # was AttributeError: 'int' object has no attribute 'isascii'
        Preference(**{**row, "user_id": 3})
    assert Preference(**row, margin=0.0, tie=True).margin == 0.0
    # nor does the store take a time that is not one, used directly (its pages sort by it); a rating
    # without rival keeps its signed margin there, so the store does not check margins
    store = Store(str(tmp_path / "lance"), encoder_id="e", dim=4)
    vectors = (np.ones((1, 4), np.float32),) * 3
    for field, value, message in (("created_at", float("nan"), r"`created_at` of row 0 \(pref_id 'p0'\) must be a finite time"),
                                  ("received_at", float("inf"), r"`received_at` of row 0 \(pref_id 'p0'\) must be a finite time")):
        bad = _stored(1)[0]
        setattr(bad, field, value)
        with pytest.raises(StoreError, match=message):
            store.add_preferences([bad], *vectors)
    assert store.preferences_for("default", "ann") == ([], 0)


def test_a_user_weights_file_whose_prior_does_not_fit_names_the_file(tmp_path):
    import json

    from pluralign.reward.pal import UserWeights

    path = tmp_path / "user_weights.json"
    UserWeights.from_logits(["a", "b"], [[1.0, 0.0], [0.0, 1.0]]).save(path)
    data = json.loads(path.read_text())
    data["prior"] = [0.0, 0.0, 0.0]  # edited by hand, or another table's
    path.write_text(json.dumps(data))
    # was "`prior` has 3 values, expected 2 logits (the table's K)", naming no file
    with pytest.raises(ValueError, match=r"user_weights.json: its prior has 3 values, expected 2 logits"):
        UserWeights.load(path)


def test_group_accuracy_takes_credits_and_a_list_of_labels_not_probabilities_or_one_string():
    import numpy as np

    from pluralign.evaluation import group_accuracy, macro, user_accuracy
    from pluralign.fairness.metrics import credit

    p = np.array([0.9, 0.2, 0.6])
    assert group_accuracy(credit(p), ["a", "a", "b"]) == ({"a": 0.5, "b": 1.0}, {"a": 2, "b": 1})
    # probabilities where credits belong: their mean was reported as the group's accuracy (0.55 for "a")
    with pytest.raises(ValueError, match=r"`correct` must be credits \(0, 0.5 or 1: credit\(p\)\): element 0 is 0.9"):
        group_accuracy(p, ["a", "a", "b"])
    with pytest.raises(ValueError, match="`correct` must be credits"):
        macro(p, np.array([0, 0, 1]))
    # one string is three one-letter groups: "aab" gave groups a and b, silently
    with pytest.raises(TypeError, match="`groups` must be a list of labels, one per comparison, not one str"):
        group_accuracy(credit(p), "aab")
    assert user_accuracy(credit(p), np.array([0, 0, 1])) == {0: 0.5, 1: 1.0}
