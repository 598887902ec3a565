"""A researcher's degenerate data through the library (breakE63): comparisons a model cannot tell apart, a duplicated
file, a reference scale that is not one. Tiny tensors, no encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.data.record import Preference
from pluralign.fairness.metrics import credit
from pluralign.policy.fspo import training_episodes
from pluralign.policy.rerank_maxmin import normalize_rewards, select_maxmin
from pluralign.reward.bt import PerUserBT, SingleBT
from pluralign.reward.em import EMConfig, EMMixture
from pluralign.reward.features import PairBatch
from pluralign.reward.pal import PALConfig, PALModel, evaluate_pairs

D = 4


def alike_pairs(seed: int = 0, users: int = 2, per_user: int = 4) -> PairBatch:
    """Comparisons whose two answers have one embedding (an encoder reads two long answers alike when they differ
    only past its window; UKP holds 5 non-tie rows of one argument against itself): no model can prefer either."""
    gen = torch.Generator().manual_seed(seed)
    n = users * per_user
    prompt, answer = torch.randn(n, D, generator=gen), torch.randn(n, D, generator=gen)
    user = torch.arange(users).repeat_interleave(per_user)
    return PairBatch(prompt, answer, answer.clone(), user, [f"u{i}" for i in range(users)], ["g"] * n)


def strict_pairs(seed: int = 1, users: int = 2, per_user: int = 6) -> PairBatch:
    gen = torch.Generator().manual_seed(seed)
    n = users * per_user
    prompt, a, b = (torch.randn(n, D, generator=gen) for _ in range(3))
    user = torch.arange(users).repeat_interleave(per_user)
    return PairBatch(prompt, a, b, user, [f"u{i}" for i in range(users)], ["g"] * n)


def test_pal_accuracy_credits_a_tie_half_as_the_evaluation_does():
    """`evaluate_pairs` (and PAL's val_acc, which it computes) counted a comparison the model scores exactly even as
    wrong, 0.0, where `credit` (what `pluralign eval` reports) gives it 0.5: one model, two accuracies."""
    torch.manual_seed(0)
    model = PALModel(PALConfig(variant="a", k=2, input_dim=D))
    pairs = alike_pairs()
    logits = torch.zeros(len(pairs.users), 2)
    p = model.preference_prob(logits[pairs.user], pairs.prompt, pairs.chosen, pairs.rejected)
    assert credit(p).mean() == 0.5
    assert evaluate_pairs(model, logits, pairs)[1] == 0.5  # before: 0.0


@pytest.mark.parametrize("make", [lambda: EMMixture(EMConfig(k=1, restarts=1, max_iter=2, lbfgs_iter=5, init="random")),
                                  lambda: SingleBT(), PerUserBT], ids=["em", "bt", "per-user-bt"])
def test_val_acc_credits_a_tie_half(make):
    """val_acc of a validation set the model cannot tell apart is chance, 0.5, as `credit` gives it (before: 0.0)."""
    model = make()
    if isinstance(model, SingleBT):
        from pluralign.reward.bt import BTConfig

        model = SingleBT(BTConfig(full_batch_steps=2, full_batch_min_steps=1))
    metrics = model.fit(strict_pairs(), alike_pairs())
    assert metrics["val_acc"] == 0.5


def test_training_episodes_never_hold_out_a_comparison_shown_among_its_shots():
    """A file read twice (each row given again) let an episode draw one comparison as a shot and as its held-out
    question: the policy was trained to copy the answer from its context (82 of 200 episodes, before)."""
    rows = [Preference(user_id="ann", prompt=f"q{i}", chosen=f"a{i}", rejected=f"b{i}") for i in range(3)]
    episodes = training_episodes({"ann": rows + rows}, shots=2, count=60, seed=0)
    assert len(episodes) == 60
    for e in episodes:
        shown = {(s.question, s.preferred, s.dispreferred) for s in e.shots}
        assert (e.question, e.chosen, e.rejected) not in shown
        assert len(shown) == 2  # the shots are two comparisons, not one twice
    with pytest.raises(ValueError, match="no user has 4 comparisons"):  # 3 different ones, however many rows
        training_episodes({"ann": rows + rows}, shots=3, count=1)


@pytest.mark.parametrize("given, named", [
    ({"mean": np.array([np.nan, 0.0])}, r"`mean`.*not finite"),  # before: "attempt to get argmax of an empty sequence"
    ({"scale": np.array([np.nan, 1.0])}, r"`scale`.*not finite"),  # before: taken as 1, without a word
    ({"scale": np.array([-2.0, 1.0])}, r"`scale`.*>= 0"),  # before: taken as 1, without a word
    ({"mean": np.zeros(3)}, r"`mean` has shape \(3,\).*\(2,\)"),  # before: numpy's "could not be broadcast"
])
def test_a_reference_mean_or_scale_that_is_not_one_per_group_is_named(given, named):
    rewards = np.array([[1.0, 0.0], [0.6, 0.6], [0.0, 1.0]])
    with pytest.raises(ValueError, match=named):
        select_maxmin(rewards, **given)


def test_a_reference_scale_of_zero_leaves_the_group_unscaled():
    """A group whose reference rewards were all equal (scale 0) is shifted, not divided by 0 (kept behaviour)."""
    rewards = np.array([[1.0, 0.0], [0.6, 0.6]])
    z = normalize_rewards(rewards, mean=np.array([0.5, 0.5]), scale=np.array([0.0, 2.0]))
    assert z.tolist() == [[0.5, -0.25], [0.09999999999999998, 0.04999999999999999]]


def test_own_episodes_show_other_comparisons_than_the_held_out_one():
    """`pluralign train adapter`'s episodes: each comparison held out with shots of the user's others; a repeated row
    (another object, the same comparison) was one of the "others" (before: 2 of these 12 episodes showed it)."""
    from pluralign.policy.fspo import distinct_comparisons, own_episodes

    rows = [Preference(user_id="ann", prompt=f"q{i}", chosen=f"a{i}", rejected=f"b{i}") for i in range(3)]
    rows = rows + [Preference(user_id="ann", prompt=f"q{i}", chosen=f"b{i}", rejected=f"a{i}") for i in range(3)]  # judged again
    assert distinct_comparisons(rows) == 3
    episodes = own_episodes(rows, shots=2, rounds=2, seed=0)
    assert len(episodes) == 12
    for e in episodes:
        assert e.question not in {s.question for s in e.shots} and len({s.question for s in e.shots}) == 2
    with pytest.raises(ValueError, match=r"`shots` 3: .* 3 different comparisons"):
        own_episodes(rows, shots=3, rounds=1)


def test_fspo_on_a_file_read_twice_names_the_different_comparisons(tmp_path, monkeypatch, capsys):
    """`train fspo --population file` on users of 3 comparisons, each line given twice: 6 rows passed the check of
    --shots 4 + --queries 1, and the run trained on episodes of 5 drawn from 3 comparisons, each holding one out among
    its own shots (before: it loaded the base model and trained)."""
    import json

    from tests.unit.test_newuser31_cli import in_this_process, one_error_line

    path = tmp_path / "twice.jsonl"
    lines = "".join(json.dumps({"user_id": f"u{i % 4}", "prompt": f"Question {i}?", "chosen": f"Yes {i}.",
                                "rejected": f"No {i}."}) + "\n" for i in range(12))
    path.write_text(lines + lines)
    line = one_error_line(in_this_process(monkeypatch, capsys, tmp_path, "train", "fspo", "--population", "file", "--data",
                                          str(path), "--out", str(tmp_path / "fs")))
    assert line.startswith("pluralign: error: --shots 4 + --queries 1: "), line
    assert "different strict comparisons" in line and "at most 3" in line, line


def test_a_head_no_user_chose_is_no_worst_off_group():
    """EM with K above the population's groups leaves a head no user chose (pi_k = 0: K = 3 on two planted groups
    did), its weights 0, its rewards 0 for every candidate. Taken into the minimum, that constant capped every
    candidate's MaxMin score at 0, and the majority's tie-break chose: here candidate 1 (minority standardized
    reward 0.07) over candidate 0 (0.34), which the two groups alone choose."""
    from pluralign.policy.maxmin import maxmin_scores
    from pluralign.policy.rerank_maxmin import select_with_heads

    rewards = np.array([[10.0, 7.0], [12.0, 6.0], [0.0, 0.0], [1.0, 10.0]])  # (candidates, groups): majority, minority
    assert select_maxmin(rewards, shares=[0.75, 0.25]) == 0
    with_empty = np.c_[np.zeros(4), rewards]
    assert select_maxmin(with_empty, shares=[0.0, 0.75, 0.25]) == 0  # before: 1
    assert np.allclose(maxmin_scores(with_empty, np.array([0.0, 0.75, 0.25])), maxmin_scores(rewards, np.array([0.75, 0.25])))
    # through a mixture: heads over [y; x * y] read the response alone here (the prompt's half of the weights is 0)
    heads = torch.zeros(3, 4, dtype=torch.float64)
    heads[1, 0], heads[2, 1] = 1.0, 1.0  # the majority's reward is y[0], the minority's y[1]; head 0 chosen by no one
    mixture = EMMixture.from_heads(heads, torch.log(torch.tensor([0.0, 0.75, 0.25])), EMConfig(k=3))
    assert select_with_heads(mixture, np.ones(2), rewards) == 0  # before: 1
