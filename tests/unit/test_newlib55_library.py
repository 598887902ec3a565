"""A new user's trial of the library (session newlib55): what a researcher calling it from a notebook stumbled on."""

from __future__ import annotations

import re

from pluralign.data.record import Preference
from pluralign.policy.fspo import query_episodes


def _shown(episode) -> list[tuple[str, str, str]]:
    """(question, preferred, dispreferred) of each example in the system message the policy reads, in order."""
    return re.findall(r"Example \d+\nQuestion: (.*)\nPreferred: (.*)\nDispreferred: (.*)", episode.messages()[0]["content"])


def test_an_unseen_users_tie_is_never_shown_as_a_preferred_answer_in_the_fspo_context():
    """`query_episodes` takes a new user's first `shots` strict support comparisons as context: a tie (the user found
    both answers equal) is not one, as `training_episodes` and the service's chat path (which drops tied rows from the
    shots) already hold. Before, a tie among the first shots was shown as "Preferred: A / Dispreferred: B", a
    preference the user never stated, and the policy was scored on that context."""
    tie = Preference(user_id="ann", prompt="tea or coffee?", chosen="tea", rejected="coffee", tie=True)
    strict = [Preference(user_id="ann", prompt=f"question {i}?", chosen=f"liked {i}", rejected=f"disliked {i}") for i in range(3)]
    held = Preference(user_id="ann", prompt="held?", chosen="yes", rejected="no")
    (episode,) = query_episodes({"ann": [strict[0], tie, *strict[1:]]}, {"ann": [held]}, shots=2)
    assert _shown(episode) == [("question 0?", "liked 0", "disliked 0"), ("question 1?", "liked 1", "disliked 1")]
    assert [s.question for s in episode.shots] == ["question 0?", "question 1?"]


def test_fit_user_reads_one_comparison_given_as_vectors_the_way_reward_and_preference_prob_do():
    """docs/library.md: "One comparison may be given as (D,) vectors, to `fit_user`, `reward` and `preference_prob`
    alike". `reward` and `preference_prob` read each argument so; `fit_user` looked at `prompt` alone and lifted all
    three: a (D,) prompt with (1, D) answers (one row sliced `[:1]`) was refused naming a shape the caller never gave,
    "`chosen` has shape (1, 1, 8)", and a 1-D prompt of another width was named as "(1, 5)"."""
    import numpy as np
    import pytest
    import torch

    from pluralign.reward.pal import PALConfig, PALModel, fit_user

    torch.manual_seed(0)
    model = PALModel(PALConfig(variant="a", k=2, input_dim=8))
    prompt, chosen, rejected = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 8)
    rows = fit_user(model, prompt[:1], chosen[:1], rejected[:1])
    assert torch.equal(fit_user(model, prompt[0], chosen[:1], rejected[:1]), rows)
    assert torch.equal(fit_user(model, prompt[0].numpy(), chosen[0], rejected[:1].numpy()), rows)
    p_rows = model.preference_prob(rows, prompt[:1], chosen[:1], rejected[:1])
    assert torch.equal(model.preference_prob(rows, prompt[0], chosen[:1], rejected[:1]), p_rows)  # the rule reward follows
    with pytest.raises(ValueError, match=re.escape("`prompt` has shape (5,)")):
        fit_user(model, np.zeros(5), chosen[:1], rejected[:1])
    with pytest.raises(ValueError, match=re.escape("`chosen` has 3 rows, `prompt` has 1")):
        fit_user(model, prompt[0], chosen, rejected)


def test_an_audit_config_that_cannot_run_is_refused_when_it_is_made_naming_the_field():
    """docs/library.md: a config is checked when it is made. `AuditConfig(seed=-1)` and `seed=1.5` were kept and failed
    in the audit's first draw with numpy's "expected non-negative integer" (or a TypeError about SeedSequence), naming
    no field; `since=float("nan")` compared no time as later than it, so the audit scored nothing and reported an empty
    report with `since: NaN`; `OnlineLogisticConfig(prior_variance=-1.0)` made every prediction NaN."""
    import math

    import numpy as np
    import pytest

    from pluralign.fairness.audit import AuditConfig, Comparisons, audit
    from pluralign.fairness.online import OnlineLogisticConfig

    for field, value in [("seed", -1), ("seed", 1.5), ("seed", True), ("since", math.nan), ("since", math.inf), ("since", "1764000000")]:
        with pytest.raises(ValueError, match=f"AuditConfig: `{field}`"):
            AuditConfig(**{field: value})
    for field, value in [("prior_variance", -1.0), ("prior_variance", 0.0), ("base_variance", math.nan)]:
        with pytest.raises(ValueError, match=f"OnlineLogisticConfig: `{field}`"):
            OnlineLogisticConfig(**{field: value})

    rng = np.random.default_rng(0)  # two users of two groups, six comparisons each: what the fields' defaults run on
    n = 12
    comparisons = Comparisons(diff=rng.normal(size=(n, 8)).astype(np.float32), user=np.repeat([0, 1], 6), users=["ann", "bob"],
                              group=np.repeat([0, 1], 6), groups=["a", "b"], time=np.arange(n, dtype=np.float64),
                              policy_win=np.zeros(n, np.int8), encoder_id="test")
    report = audit(comparisons, "group", AuditConfig(resamples=20, seed=7, since=3.0, projection_dim=4))
    assert report.comparisons == n - 3 and report.since == 3.0


def test_ranked_pairs_refuses_scores_that_are_not_one_finite_number_per_candidate():
    """`ranked_pairs` is what train_maxmin's help points a user to for their own candidates. Scores of another count
    than the candidates were read as far as they went (three candidates, two scores: the third never paired, without a
    word) or failed with an IndexError; a NaN score gave no comparison at all (best) or some (all), silently; a
    negative (or NaN) `margin` paired candidates of equal scores, the first index 'chosen'. Each is a ValueError naming
    the argument now, as `maxmin_scores` does for its rewards."""
    import math

    import numpy as np
    import pytest

    from pluralign.policy.maxmin import all_pairs, best_vs_rest, ranked_pairs

    candidates = ["Yes.", "Here is the long answer.", "- a list"]
    for pairing in (best_vs_rest, all_pairs):
        for scores, problem in [([0.0, 1.0], "3 candidates"), ([0.0, 1.0, 2.0, 3.0], "3 candidates"), ([[0.1, 0.5, 0.2]], "3 candidates"),
                                ([math.nan, 1.0, 0.0], "candidate 0"), ([0.0, math.inf, 0.0], "candidate 1")]:
            with pytest.raises(ValueError, match=re.escape("`scores`")) as refused:
                ranked_pairs("q", candidates, np.array(scores), source="s", pairing=pairing)
            assert problem in str(refused.value)
        for margin in (-1.0, math.nan):
            with pytest.raises(ValueError, match="`margin`"):
                ranked_pairs("q", candidates, [1.0, 1.0, 1.0], source="s", pairing=pairing, margin=margin)
    pairs = ranked_pairs("q", candidates, [0.1, 0.5, 0.2], source="s")  # a list of scores, as a user writes them
    assert [(p.chosen, p.rejected) for p in pairs] == [("Here is the long answer.", "Yes."), ("Here is the long answer.", "- a list")]
    assert ranked_pairs("q", candidates, [1.0, 1.0, 1.0], source="s", pairing=all_pairs) == []  # ties: no pair


def test_per_user_accuracy_refuses_user_indices_that_are_not_whole_numbers():
    """`user_accuracy` and `macro` take each pair's user index (N,), as `PairBatch.user` holds them. Indices that were
    not whole numbers were cut by int(): users [0.5, 1.7] became users 0 and 1 (two users' pairs could merge: 1.2 and
    1.7 were one user), and user names ['ann', 'bob'] failed with "invalid literal for int() with base 10: 'ann'",
    naming no argument. A tensor of indices, a numpy array and a list of ints keep working."""
    import numpy as np
    import pytest
    import torch

    from pluralign.evaluation import macro, user_accuracy
    from pluralign.fairness.metrics import credit

    correct = credit([0.9, 0.1, 0.8])
    for users in ([0.5, 1.7, 1.2], ["ann", "bob", "ann"], np.array([0.0, 1.0, np.nan])):
        with pytest.raises(ValueError, match="`users`"):
            user_accuracy(correct, users)
        with pytest.raises(ValueError, match="`users`"):
            macro(correct, users)
    for users in ([0, 1, 0], np.array([0, 1, 0]), torch.tensor([0, 1, 0]), np.array([0.0, 1.0, 0.0])):
        assert user_accuracy(correct, users) == {0: 1.0, 1: 0.0}
    assert macro(correct, [0, 1, 0]) == 0.5


def test_a_pal_checkpoint_or_em_mixture_is_not_saved_without_the_encoder_it_was_trained_on(tmp_path):
    """Artifacts record the encoder whose vectors they read, and loading checks it (STYLE, habit 12). `save_pal` and
    `EMMixture.save` wrote whatever `encoder_id` was passed: None or a number gave a checkpoint `load_pal` and
    `EMMixture.load` then refused as "not a description of a PAL checkpoint: Expected `str`, got `null`" (the model
    trained, its save lost), and "" or blanks one that names no encoder, which no encoder's check can match. Both
    refuse such an id now, naming `encoder_id`, before anything is written, as `Store` does."""
    import pytest
    import torch

    from pluralign.reward.em import EMConfig, EMMixture
    from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal

    model = PALModel(PALConfig(variant="a", k=2, input_dim=8))
    user_weights = UserWeights.from_logits(["ann", "bob"], torch.zeros(2, 2))
    em = EMMixture(EMConfig(k=2))  # the id is checked first, before the heads are read (a fitted mixture: test_em's saves)
    for encoder_id in ("", "   ", None, 5):
        for name, save in (("pal", lambda out, e=encoder_id: save_pal(out, model, user_weights, encoder_id=e)),
                           ("em", lambda out, e=encoder_id: em.save(out, encoder_id=e))):
            out = tmp_path / f"{name}-{encoder_id!r}"
            with pytest.raises(ValueError, match="`encoder_id`"):
                save(out)
            assert not out.exists()
    save_pal(tmp_path / "pal", model, user_weights, encoder_id="test-encoder")
    assert load_pal(tmp_path / "pal", encoder_id="test-encoder")[2].encoder_id == "test-encoder"


def test_a_checkpoint_whose_meta_json_describes_no_model_this_release_builds_is_named_when_it_loads(tmp_path):
    """`load_pal` names the file for every mismatch (docstring). A meta.json of this schema whose variant this release
    does not know (a later release's "c", or a hand edit) or whose K is 0 was refused as "unknown PAL variant 'c':
    expected one of ('a', 'b')" or "PALConfig: `k` must be ...", naming no file: a service start or a notebook reading
    several checkpoints could not tell which one."""
    import json

    import pytest
    import torch

    from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal

    model = PALModel(PALConfig(variant="a", k=2, input_dim=8))
    save_pal(tmp_path / "pal", model, UserWeights.from_logits(["ann"], torch.zeros(1, 2)), encoder_id="test-encoder")
    meta_file = tmp_path / "pal" / "meta.json"
    good = json.loads(meta_file.read_text())
    for change, problem in (({"variant": "c"}, "unknown PAL variant 'c'"), ({"k": 0}, "`k` must be a whole number >= 1")):
        meta_file.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=re.escape(f"{meta_file}: ") + ".*" + re.escape(problem)):
            load_pal(tmp_path / "pal")


def test_a_text_holding_a_lone_surrogate_is_refused_by_every_encoder_naming_it(sentence_encoder, minilm, tmp_path):
    """A lone UTF-16 surrogate (text cut inside an emoji by a UTF-16 slice, as Python's json reads "\\ud83d") is no
    text: the importers refuse such a row naming its field (docs/library.md). Given to an encoder directly it failed
    deep inside: MiniLM's tokenizer with "TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence,
    InputSequence]]", the embedding cache with "'utf-8' codec can't encode character '\\ud83d' in position 4:
    surrogates not allowed", naming neither the argument nor which text. Now a ValueError naming `texts[i]`, before
    anything is embedded, loaded or cached."""
    import pytest

    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.named import LazyEncoder

    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    lazy = LazyEncoder("minilm")
    texts = ["fine 🙂", "cut \ud83d"]
    for encoder in (sentence_encoder, minilm, CachedEncoder(lazy, cache)):
        with pytest.raises(ValueError, match=re.escape("`texts[1]` holds a lone UTF-16 surrogate (U+D83D at character 5)")):
            encoder.encode(texts)
    assert not lazy.loaded and len(cache) == 0
    assert sentence_encoder.encode(texts[:1]).shape == (1, 384)


def test_maxmin_scores_of_no_group_heads_names_the_rewards():
    """`maxmin_scores` takes (n, G) rewards of n candidates under G group heads. Rewards of no group, (n, 0) (an EM
    mixture's heads selected by an empty list), were refused as "shares must be 0 finite non-negative weights, not all
    0; got []": the caller gave no shares. Now the rewards' shape is named, as for n = 0."""
    import numpy as np
    import pytest

    from pluralign.policy.maxmin import maxmin_scores

    with pytest.raises(ValueError, match=re.escape("rewards must be (n candidates, G groups) with n >= 1 and G >= 1, got shape (3, 0)")):
        maxmin_scores(np.zeros((3, 0)))
    assert maxmin_scores(np.array([[1.0], [0.0]])).shape == (2,)


def test_group_accuracy_names_a_group_label_of_another_kind():
    """`group_accuracy(correct, groups)`: labels are compared to order the groups. A label of another kind among them
    (None where a record had no group: a pandas column's missing value) failed with "'<' not supported between
    instances of 'NoneType' and 'str'", naming neither `groups` nor the label. Now a ValueError naming both."""
    import pytest

    from pluralign.evaluation import group_accuracy
    from pluralign.fairness.metrics import credit

    with pytest.raises(ValueError, match=re.escape("`groups` element 1 is None, a NoneType among str labels")):
        group_accuracy(credit([0.9, 0.1, 0.8]), ["a", None, "b"])
    assert group_accuracy(credit([0.9, 0.1, 0.8]), ["b", "a", "b"]) == ({"a": 0.0, "b": 1.0}, {"a": 1, "b": 2})
    assert group_accuracy(credit([0.9, 0.1]), [10, 9]) == ({9: 0.0, 10: 1.0}, {9: 1, 10: 1})
