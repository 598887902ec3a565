"""The MaxMin objective on a policy small enough to solve exactly: a softmax over four answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.losses import dpo_loss
from pluralign.policy.maxmin import PAIRINGS, all_pairs, best_vs_rest, maxmin_scores, ranked_pairs
from pluralign.policy.rerank_maxmin import normalize_rewards, select_maxmin
from pluralign.policy.style_groups import (
    GROUP_REWARDS,
    answer_features,
    feature_pairs,
    preference_pairs,
    style_variants,
    win_rate_errors,
    win_rates,
)
from pluralign.reward.em import EMConfig, EMMixture

ANSWER = "Rainbows form when sunlight bends in raindrops. Each color bends by a different angle. So we see a band."
PROMPT = "Why are there rainbows?"


def group_heads(shares: dict[str, float], k: int) -> EMMixture:
    """Reward heads learned from unlabelled users' comparisons: K=1 is the single pooled reward."""
    records = preference_pairs([PROMPT], [ANSWER], shares, users=50, pairs_per_user=8, seed=0)
    model = EMMixture(EMConfig(k=k, restarts=2))
    model.fit(feature_pairs(records), feature_pairs(records[:0]))
    return model


def base_like_reference(candidates: list[str]) -> torch.Tensor:
    """Log-probabilities of a reference that, like the base LM, mostly writes the plain detailed answer."""
    probs = torch.tensor([0.7 if c == style_variants(ANSWER)["detailed"] else 0.1 for c in candidates])
    return torch.log(probs)


def train_categorical(heads: EMMixture, pairing=best_vs_rest, steps: int = 300, beta: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """DPO-train a softmax policy over the four answers on pairs ranked by min over the heads."""
    candidates = sorted(style_variants(ANSWER).values())
    features = answer_features(candidates)
    rewards = heads.rewards(torch.ones_like(features), features).cpu().numpy()  # (4, K), on the heads' device
    pairs = ranked_pairs(PROMPT, candidates, maxmin_scores(rewards), source="test", pairing=pairing)
    index = {c: i for i, c in enumerate(candidates)}
    chosen = torch.tensor([index[p.chosen] for p in pairs])
    rejected = torch.tensor([index[p.rejected] for p in pairs])
    ref_logp = base_like_reference(candidates)
    logits = ref_logp.clone().requires_grad_(True)  # the policy starts as the reference
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        logp = torch.log_softmax(logits, 0)  # (4,)
        loss = dpo_loss(logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected], beta).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.softmax(logits.detach(), 0).numpy(), candidates


def reward_gain(pi: np.ndarray, candidates: list[str]) -> dict[str, float]:
    """Each group's true (rule) reward in expectation under pi minus under the reference, in units of
    that reward's spread over the candidates."""
    rewards = np.array([[GROUP_REWARDS[g](c) for g in sorted(GROUP_REWARDS)] for c in candidates])  # (4, G)
    ref = torch.softmax(base_like_reference(candidates), 0).numpy()
    return dict(zip(sorted(GROUP_REWARDS), (pi - ref) @ normalize_rewards(rewards), strict=True))


@pytest.mark.parametrize("pairing", sorted(PAIRINGS))
@pytest.mark.parametrize("majority", [0.8, 0.9])
def test_maxmin_raises_the_worst_group_where_single_does_not(majority, pairing):
    shares = {"enthusiastic": majority, "concise": 1 - majority}
    pi_single, candidates = train_categorical(group_heads(shares, k=1), PAIRINGS[pairing])
    pi_maxmin, _ = train_categorical(group_heads(shares, k=2), PAIRINGS[pairing])
    single = reward_gain(pi_single, candidates)
    maxmin = reward_gain(pi_maxmin, candidates)
    assert single["enthusiastic"] > 0.5  # the single reward serves the majority...
    assert single["concise"] < 0  # ...and leaves the minority worse off than the reference
    assert min(maxmin.values()) > 0.2  # MaxMin raises every group, the worst-off included
    assert min(maxmin.values()) > min(single.values()) + 0.5
    assert candidates[int(pi_maxmin.argmax())] == style_variants(ANSWER)["brief_excited"]  # the compromise


def test_pairings_order_each_pair_by_score_and_skip_ties_and_duplicates():
    scores = np.array([0.2, 1.0, -0.5, 1.0 - 1e-9])  # (n,): candidates 1 and 3 tie at the top
    assert sorted(all_pairs(scores, 1e-6)) == [(0, 2), (1, 0), (1, 2), (3, 0), (3, 2)]
    assert best_vs_rest(scores, 1e-6) == [(1, 0), (1, 2)]  # the argmax against every candidate clearly below it
    pairs = ranked_pairs("p", ["a", "b", "c", "d"], scores, source="t", pairing=best_vs_rest)
    assert [(p.chosen, p.rejected) for p in pairs] == [("b", "a"), ("b", "c")]
    assert all(p.margin > 0 for p in pairs)
    same = ranked_pairs("p", ["a", "a", "c"], np.array([1.0, 0.0, -1.0]), source="t", pairing=all_pairs)
    assert [(p.chosen, p.rejected) for p in same] == [("a", "c"), ("a", "c")]  # never ("a", "a")


def test_egalitarian_ties_go_to_the_answer_the_larger_group_prefers():
    """An answer of one unfinished sentence has two variants only, itself and its excited form, each
    one group's favourite: normalized over two candidates, both sit at -1 for one group and +1 for the
    other, so the plain minimum ties. Before, the tie went to whichever candidate rounding or the
    texts' sort order put first (and gave no training pair); now to the share-weighted mean's choice."""
    answer = "While gardening can be a rewarding hobby, it is essential to strike a balance between"
    for plain in (answer, "Zinnias " + answer.lower()):  # sorts before and after "Great question! ..."
        candidates = sorted({plain, style_variants(plain)["detailed_excited"]})
        assert len(candidates) == 2  # brief is the whole answer: no compromise among the variants
        rewards = np.array([[GROUP_REWARDS[g](c) for g in ("enthusiastic", "concise")] for c in candidates])  # (2, K)
        minimum = maxmin_scores(rewards, tie_break=0.0)
        assert minimum[0] == pytest.approx(minimum[1])  # argmax: whichever rounding or the texts' order puts first
        assert ranked_pairs(PROMPT, candidates, minimum, source="t") == []
        excited = candidates.index(style_variants(plain)["detailed_excited"])
        assert int(np.argmax(maxmin_scores(rewards, np.array([0.8, 0.2])))) == excited
        assert int(np.argmax(maxmin_scores(rewards, np.array([0.2, 0.8])))) == 1 - excited
        [pair] = ranked_pairs(PROMPT, candidates, maxmin_scores(rewards, np.array([0.8, 0.2])), source="t")
        assert pair.chosen == candidates[excited]
    # a clear maximin choice is not moved by the share-weighted mean
    clear = np.array([[10.0, -30.0], [0.0, -5.0], [8.0, -12.0], [0.0, -25.0]])  # (n, K)
    assert int(np.argmax(maxmin_scores(clear, np.array([0.99, 0.01])))) == int(np.argmax(maxmin_scores(clear, tie_break=0.0))) == 2
    # one head: the single-reward objective's order, unchanged
    single = clear[:, :1]
    assert list(np.argsort(maxmin_scores(single))) == list(np.argsort(normalize_rewards(single)[:, 0]))
    for bad in ([1.0], [0.5, -0.1], [0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0]):
        with pytest.raises(ValueError, match="shares must be 2 finite non-negative weights"):
            maxmin_scores(clear, np.array(bad))
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="tie_break must be a finite number >= 0"):
            maxmin_scores(clear, tie_break=bad)


def test_win_rate_errors_are_the_standard_error_of_the_per_prompt_wins():
    base = ["A plain answer of medium length.", "Another plain answer.", "Short.", "Medium answer here."]
    policy = ["Longer answer than the base one here!", "Another plain answer.", "Shorter.", "Med."]
    wins = np.array([0.0, 0.5, 0.0, 1.0])  # concise: longer loses, same ties, longer loses, shorter wins
    assert win_rates(policy, base)["concise"] == pytest.approx(wins.mean())
    assert win_rate_errors(policy, base)["concise"] == pytest.approx(wins.std(ddof=1) / 2)


def test_select_maxmin_picks_the_candidate_whose_worst_group_fares_best():
    rewards = np.array([[10.0, -30.0], [0.0, -5.0], [8.0, -12.0], [0.0, -25.0]])  # (n, G): "!" count, -words
    assert select_maxmin(rewards) == 2  # best for no group, good for both
    assert select_maxmin(rewards[:, :1]) == 0  # one group: its favourite
    with pytest.raises(ValueError):
        select_maxmin(np.zeros((0, 2)))


def test_select_maxmin_breaks_a_two_candidate_tie_by_the_groups_shares():
    """Two candidates, each one group's favourite: the minimum always ties. Equal weights keep the
    first (as before); shares give the larger group's favourite, wherever it stands."""
    rewards = np.array([[1.0, 5.0], [4.0, 2.0]])  # (n, G): group 0 prefers candidate 1, group 1 candidate 0
    assert select_maxmin(rewards) == 0
    assert select_maxmin(rewards, shares=np.array([0.8, 0.2])) == 1
    assert select_maxmin(rewards[::-1], shares=np.array([0.8, 0.2])) == 0
    assert select_maxmin(rewards, shares=np.array([0.2, 0.8])) == 0
    with pytest.raises(ValueError, match="shares must be 2"):
        select_maxmin(rewards, shares=np.array([1.0, np.nan]))


def test_the_inference_time_benchmark_runs_on_todays_answer_caches(tmp_path, monkeypatch, capsys):
    """benchmarks.maxmin_rerank unpacked two question lists after the validation split made three,
    and read an `eval` key the caches no longer have: it failed before printing anything."""
    import json
    import sys

    from benchmarks import maxmin_rerank
    from benchmarks.maxmin_policy import questions

    train = [f"Topic {i} is a thing people study. It has a long history and many uses. Experts keep learning." for i in range(len(questions()[0]))]
    test = ["Apples are a fruit that people grow in orchards all over the world and eat in many ways, raw or", ANSWER]
    (tmp_path / "answers.json").write_text(json.dumps({"train": train, "val": [], "test": test}))
    monkeypatch.setattr(sys, "argv", ["maxmin_rerank", "--answers", str(tmp_path / "answers.json")])
    maxmin_rerank.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 80/20") or line.startswith("| 90/10")]
    assert len(rows) == 4
    single, maxmin = (float(x) for x in rows[0].split("|")[3:5]), (float(x) for x in rows[1].split("|")[3:5])
    assert list(single) == [1.0, 0.0]  # the single reward writes the long excited answer
    majority, minority = maxmin
    assert majority == 1.0 and minority == 0.5  # the tie goes to the excited form; the rainbow answer's compromise wins both


def test_win_rates_follow_each_groups_rule():
    base = ["A plain answer with several words in it.", "Another plain answer here."]
    policy = ["Great question! Short!", "Great question! A much longer answer with many more words than before!"]
    rates = win_rates(policy, base)
    assert rates == {"enthusiastic": 1.0, "concise": 0.5}


def test_broken_text_loses_for_both_groups_whatever_their_rules_say():
    """A policy that repeats its opening ("Great question! Great question!") or a word scores under
    both rules (exclamation marks, short) but is not an answer: it loses to the base for both
    groups, ties another broken answer by the rules, and an unbroken answer beats a broken base."""
    from pluralign.policy.style_groups import repeats

    base = ["Rain is water that falls from clouds when droplets grow heavy enough to fall.", "Salt is a mineral."]
    broken = ["Great question! Great question!\nGreat Question!", "Great question! rockets! rockets! rockets!"]
    assert all(map(repeats, broken)) and not any(map(repeats, base))
    assert not repeats("Great question! The art of painting! It is very very old.")
    assert repeats("Great question, great question, great question") and repeats("the sky is blue because the sky is blue because the sky is blue")
    for fine in ("Open 9 a.m. to 5 p.m. daily.", "It is 2.5 km. Mine is 3.5 km.", "A billion is 1,000,000,000.", "No, no, no, that is wrong.",
                 "A great-great-great-grandfather.", "Origami! It is an art! Origami", "They're old. They're rare. They're fossils.",
                 "One of the best, one of the oldest, one of the most loved."):
        assert not repeats(fine), fine
    assert GROUP_REWARDS["enthusiastic"](broken[0]) > GROUP_REWARDS["enthusiastic"](base[0])  # the rule alone would prefer it
    assert GROUP_REWARDS["concise"](broken[0]) > GROUP_REWARDS["concise"](base[0])
    assert win_rates(broken, base) == {"enthusiastic": 0.0, "concise": 0.0}
    assert win_rates(base, broken) == {"enthusiastic": 1.0, "concise": 1.0}
    assert win_rates(broken[:1], broken[:1]) == {"enthusiastic": 0.5, "concise": 0.5}


def test_select_with_em_heads_picks_the_compromise_answer():
    from pluralign.policy.rerank_maxmin import select_with_heads

    heads = group_heads({"enthusiastic": 0.8, "concise": 0.2}, k=2)
    variants = style_variants(ANSWER)
    candidates = [variants[name] for name in ("detailed", "brief", "detailed_excited", "brief_excited")]
    features = answer_features(candidates).numpy()
    assert select_with_heads(heads, np.ones(2, dtype=np.float32), features) == 3


def test_first_sentence_runs_on_until_it_closes_enough_words():
    from pluralign.policy.style_groups import first_sentence

    assert first_sentence("Salt! It is a mineral. It is everywhere.") == "Salt!"
    assert first_sentence("Salt! It is a mineral. It is everywhere.", min_words=4) == "Salt! It is a mineral."
    assert first_sentence("Rain falls from clouds", min_words=4) == "Rain falls from clouds"  # no sentence end: all of it
    assert first_sentence("! Hello. World") == "! Hello."  # as the regex before min_words: a stop in front ends nothing
    assert style_variants("Salt! It is a mineral. It is everywhere.", brief_words=4)["brief_excited"] == "Great question! Salt! It is a mineral!"
    with pytest.raises(ValueError, match="min_words must be at least 1"):
        first_sentence("Salt!", min_words=0)
