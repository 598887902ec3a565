"""Validation-only checkpoint selection of the MaxMin policy benchmark: the majority floor that keeps
worst-group selection from trading the majority away, and what each step then reports."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.maxmin_policy import TEST_SETS, apply_selection, select_checkpoint


def bench_command(*argv: str):
    """The benchmark's command line run in this process (`main`, as `python -m benchmarks.maxmin_policy
    ARGV` would): its exit code and what it wrote to stderr. The usage errors tested here come before
    any model loads, so a subprocess per case (about 3 s each, mostly imports) buys nothing."""
    import contextlib
    import io
    import sys
    from types import SimpleNamespace

    import torch

    import benchmarks.maxmin_policy as bench

    argv_before, threads, err = sys.argv, torch.get_num_threads(), io.StringIO()
    sys.argv = ["maxmin_policy", *argv]
    try:
        with contextlib.redirect_stderr(err):
            bench.main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = argv_before
        torch.set_num_threads(threads)  # main sets --threads for the process
    return SimpleNamespace(returncode=code, stderr=err.getvalue())

SHARES = {"enthusiastic": 0.8, "concise": 0.2}


def rates(majority: float, minority: float) -> dict[str, float]:
    return {"enthusiastic": majority, "concise": minority}


def test_single_picks_the_earliest_best_population_win():
    val = [rates(0.5, 0.5), rates(1.0, 0.6), rates(1.0, 0.4), rates(1.0, 0.6)]
    assert select_checkpoint("single", val, SHARES) == 1  # 0.92, 0.88, 0.92: the earliest of the best
    assert select_checkpoint("single", val, SHARES, majority_floor=0.99) == 1  # the floor is MaxMin's only


def test_maxmin_without_a_floor_takes_the_worst_group_even_when_it_costs_the_majority():
    val = [rates(0.5, 0.5), rates(0.96, 0.80), rates(0.83, 0.90)]
    assert select_checkpoint("maxmin", val, SHARES) == 2  # worst group 0.83 beats 0.80


def test_maxmin_floor_keeps_the_majority_and_then_maximizes_the_worst_group():
    val = [rates(0.5, 0.5), rates(0.96, 0.80), rates(0.83, 0.90), rates(0.98, 0.85)]
    assert select_checkpoint("maxmin", val, SHARES, majority_floor=0.95) == 3
    assert select_checkpoint("maxmin", val[:3], SHARES, majority_floor=0.95) == 1


def test_maxmin_floor_nobody_meets_falls_back_to_the_highest_majority():
    val = [rates(0.5, 0.5), rates(0.73, 0.98), rates(0.90, 0.80), rates(0.90, 0.85)]
    assert select_checkpoint("maxmin", val, SHARES, majority_floor=0.95) == 3  # majority 0.90, then the better worst group


def test_empty_history_is_an_error():
    with pytest.raises(ValueError, match="no checkpoint"):
        select_checkpoint("maxmin", [], SHARES)


def checkpoint(step: int, majority: float, minority: float) -> dict:
    """A curve point as the benchmark records it: validation rates, and the test scores of those weights."""
    return {"step": step, "val": rates(majority, minority), "last_test_scores": {"enthusiastic": [majority] * 4, "concise": [minority] * 4},
            "last_chars": 100.0 - step, "last_exclaims": step / 10, "last_sample": f"answer at {step}"}


def test_apply_selection_floors_maxmin_at_the_single_policys_reported_majority_minus_tolerance():
    single = apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 1.0, 0.6), checkpoint(10, 0.96, 0.4)], "single", SHARES, "validation")
    assert [p["selected_step"] for p in single] == [0, 5, 5]
    maxmin = [checkpoint(0, 0.5, 0.5), checkpoint(5, 0.92, 0.95), checkpoint(10, 0.96, 0.85)]
    apply_selection(maxmin, "maxmin", SHARES, "validation", reference=single, tolerance=0.05)
    # the floor is 1.0 - 0.05 at steps 5 and 10 (the single reports step 5's weights at both)
    assert [p["majority_floor"] for p in maxmin] == pytest.approx([0.45, 0.95, 0.95])
    assert [p["selected_step"] for p in maxmin] == [0, 5, 10]  # step 5: nobody clears 0.95, so the best majority
    assert maxmin[2]["test_scores"] == maxmin[2]["last_test_scores"]
    assert maxmin[2]["sample"] == "answer at 10" and maxmin[2]["chars"] == 90.0

    for short in (single[:2], []):  # not silently unfloored, an empty reference included
        with pytest.raises(ValueError, match="to measure MaxMin's majority floor against"):
            apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 0.92, 0.95), checkpoint(10, 0.96, 0.85)], "maxmin", SHARES, "validation",
                            reference=short, tolerance=0.05)

    plain = apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 0.92, 0.95), checkpoint(10, 0.96, 0.85)], "maxmin", SHARES, "validation")
    assert [p["selected_step"] for p in plain] == [0, 5, 5]  # worst group 0.92 over 0.85: the majority's 4 points traded away
    assert plain[2]["test_scores"]["enthusiastic"] == [0.92] * 4


def test_bar_margin_is_the_smaller_of_the_two_halves_margins():
    from benchmarks.maxmin_policy import bar_margin

    single = rates(1.0, 0.40)
    assert bar_margin(rates(0.98, 0.90), single, SHARES) == pytest.approx(0.03)  # majority -2 of -5 allowed; minority +50 of +20
    assert bar_margin(rates(1.00, 0.65), single, SHARES) == pytest.approx(0.05)  # minority +25: 5 over
    assert bar_margin(rates(0.90, 0.95), single, SHARES) == pytest.approx(-0.05)  # majority -10 misses by 5
    assert bar_margin(rates(0.90, 0.95), single, SHARES, tolerance=0.10, gain=0.50) == pytest.approx(0.0)


def test_margin_rule_keeps_the_checkpoint_that_clears_both_halves_widest():
    """The floor rule takes the best worst group among checkpoints within 5 points of the single's
    majority, so it sits on the floor's edge; the margin rule takes the one with room on both halves."""
    single = apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 1.0, 0.4), checkpoint(10, 1.0, 0.4)], "single", SHARES, "validation")
    def maxmin():
        return [checkpoint(0, 0.5, 0.5), checkpoint(5, 1.0, 0.7), checkpoint(10, 0.96, 0.95)]
    floor = apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single, tolerance=0.05)
    assert [p["selected_step"] for p in floor] == [0, 5, 10]  # worst group 0.96 over 0.70: one point above the floor
    margin = apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single, tolerance=0.05, rule="margin")
    assert [p["selected_step"] for p in margin] == [0, 5, 5]  # margins 0.05 and 0.01 at step 10
    assert margin[2]["test_scores"]["enthusiastic"] == [1.0] * 4 and margin[2]["majority_floor"] is None
    assert margin[2]["bar_margin"] == pytest.approx(0.05)
    # the single policy itself, or MaxMin without a reference, is chosen as before; "last" reports each step's weights
    assert [p["selected_step"] for p in apply_selection(maxmin(), "maxmin", SHARES, "validation", rule="margin")] == [0, 5, 10]
    alone = [checkpoint(0, 0.5, 0.5), checkpoint(5, 1.0, 0.6), checkpoint(10, 0.96, 0.4)]
    assert [p["selected_step"] for p in apply_selection(alone, "single", SHARES, "validation", rule="margin")] == [0, 5, 5]
    assert [p["selected_step"] for p in apply_selection(maxmin(), "maxmin", SHARES, "last", reference=single, tolerance=0.05, rule="margin")] == [0, 5, 10]
    with pytest.raises(ValueError, match="rule must be one of"):
        apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single, tolerance=0.05, rule="best")
    with pytest.raises(ValueError, match="no step 10"):
        apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single[:2], tolerance=0.05, rule="margin")
    with pytest.raises(ValueError, match="no step 0 to measure MaxMin's margin against"):  # an empty reference names the rule in use
        apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=[], tolerance=0.05, rule="margin")


def test_margin_rule_keeps_the_earliest_of_checkpoints_whose_majority_margin_is_capped():
    """Session 12's failure, pinned: once MaxMin wins every majority question, as the single policy
    does, every later checkpoint ties on the majority's margin, and the earliest is kept however much
    more a later one wins the minority (the floor rule takes the later one)."""
    single = apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 1.0, 0.4), checkpoint(10, 1.0, 0.4)], "single", SHARES, "validation")
    def maxmin():
        return [checkpoint(0, 0.5, 0.5), checkpoint(5, 1.0, 0.7), checkpoint(10, 1.0, 0.9)]
    margin = apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single, tolerance=0.05, rule="margin")
    assert [p["selected_step"] for p in margin] == [0, 5, 5]
    floor = apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single, tolerance=0.05)
    assert [p["selected_step"] for p in floor] == [0, 5, 10]
    again = apply_selection(margin, "maxmin", SHARES, "validation", reference=single, tolerance=0.05)  # a stored curve chosen again
    assert [p["selected_step"] for p in again] == [0, 5, 10] and not any("bar_margin" in p for p in again)
    # a wider minority gain asked for moves the choice: 0.9 - 0.4 - 0.45 = 0.05 ties 0.05, 0.7 - 0.4 - 0.45 < 0
    wide = apply_selection(maxmin(), "maxmin", SHARES, "validation", reference=single, tolerance=0.05, rule="margin", gain=0.45)
    assert [p["selected_step"] for p in wide] == [0, 5, 10]


def test_margin_rule_measures_each_step_against_the_single_policys_checkpoint_reported_there():
    """The reference at step S is the single policy's checkpoint reported at S, not the one at each candidate's step."""
    single = apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 0.9, 0.4), checkpoint(10, 1.0, 0.4)], "single", SHARES, "validation")
    assert [p["selected_step"] for p in single] == [0, 5, 10]
    maxmin = [checkpoint(0, 0.5, 0.5), checkpoint(5, 0.9, 0.9), checkpoint(10, 0.93, 0.7)]
    apply_selection(maxmin, "maxmin", SHARES, "validation", reference=single, tolerance=0.05, rule="margin")
    # at step 10, against the single's 1.0: step 5's majority margin is 0.9 - 1.0 + 0.05 = -0.05, step 10's is -0.02 (its minority's 0.1)
    assert maxmin[2]["selected_step"] == 10 and maxmin[2]["bar_margin"] == pytest.approx(-0.02)
    assert maxmin[1]["selected_step"] == 5 and maxmin[1]["bar_margin"] == pytest.approx(0.05)


def test_bar_margin_needs_a_majority_and_a_minority():
    from benchmarks.maxmin_policy import bar_margin

    with pytest.raises(ValueError, match="equal shares"):
        bar_margin(rates(1.0, 0.5), rates(1.0, 0.5), {"enthusiastic": 0.5, "concise": 0.5})


def test_apply_selection_last_reports_each_steps_own_weights():
    curve = apply_selection([checkpoint(0, 0.5, 0.5), checkpoint(5, 0.9, 0.9), checkpoint(10, 0.2, 0.2)], "maxmin", SHARES, "last")
    assert [p["selected_step"] for p in curve] == [0, 5, 10]
    assert curve[2]["test_scores"]["concise"] == [0.2] * 4


def test_more_samples_give_the_objectives_more_candidates_to_pick_from():
    """--samples N: each training question's candidates are the style variants of all N sampled
    answers, so MaxMin's argmax can be a shorter excited answer than the first sample allows."""
    import numpy as np
    import torch

    from benchmarks.maxmin_policy import candidates_and_rewards
    from pluralign.policy.maxmin import maxmin_scores

    class TrueHeads:  # the groups' own rules over answer_features [!, -chars/50]: enthusiastic, concise
        def rewards(self, prompt, features):
            return torch.stack([features[:, 0] - features[:, 1], features[:, 1]], dim=1)

    long = "Rainbows form when sunlight bends through raindrops and splits into colours. They need sun behind you."
    short = "Light splits in rain. That is all."
    [(_, one, _)] = list(candidates_and_rewards(["Tell me about rainbows."], [long], TrueHeads()))
    [(_, both, rewards)] = list(candidates_and_rewards(["Tell me about rainbows."], [long], TrueHeads(), [[short]]))
    assert len(one) == 4 and len(both) == 8 and set(one) < set(both)
    assert rewards.shape == (8, 2)
    best = both[int(np.argmax(maxmin_scores(rewards)))]
    assert best.startswith("Great question! Light splits in rain!")  # excited, from the second, shorter sample
    assert one[int(np.argmax(maxmin_scores(rewards[[both.index(c) for c in one]])))].startswith("Great question! Rainbows")


def test_runs_are_found_by_the_pairs_they_trained_on(tmp_path):
    """--reuse: a stored run matches by seed, objective, training setting and the digest of its
    pairs; a run stored before digests were kept gets it from its pairs file."""
    from benchmarks.maxmin_policy import pairs_digest, runs_by_pairs
    from pluralign.data.io import write_jsonl
    from pluralign.data.record import Preference

    pairs = [Preference(user_id="maxmin-2-heads", prompt="Tell me about owls.", chosen="Great question! Owls hunt!", rejected="Owls hunt at night.")]
    training = {"samples": 4, "steps": 60}
    (tmp_path / "seed-1").mkdir()
    write_jsonl(pairs, tmp_path / "seed-1" / "pairs-maxmin-80.jsonl")
    runs = [{"seed": 1, "majority": 0.8, "objective": "maxmin", "training": training, "curve": []},  # no digest: from the file
            {"seed": 1, "majority": 0.8, "objective": "single", "training": training, "curve": [], "pairs_digest": "abc"},
            {"seed": 2, "majority": 0.8, "objective": "maxmin", "training": {"samples": 1, "steps": 60}, "curve": [], "pairs_digest": "abc"}]
    (tmp_path / "results.json").write_text(json.dumps(runs))
    found = runs_by_pairs([tmp_path / "results.json"], training)
    assert set(found) == {(1, "maxmin", pairs_digest(pairs)), (1, "single", "abc")}  # seed 2 trained otherwise
    other = [Preference(user_id="x", prompt="Tell me about owls.", chosen="Owls hunt at night.", rejected="Great question! Owls hunt!")]
    assert pairs_digest(other) != pairs_digest(pairs)


def test_the_argmax_ceiling_shows_where_the_compromise_loses_the_majority():
    """`--ceiling`: each objective answers with its top style variant of the base's own answer. The
    single reward writes the long excited answer (the majority always wins, the minority never);
    MaxMin writes the brief excited one, which the minority always prefers but which loses the
    majority to a base answer that is already excited and long (the second question)."""
    from benchmarks.maxmin_policy import argmax_scores

    answers = {
        "train": [f"Topic {i} is a thing people study. It has a long history and many uses in daily life. Experts keep learning more about it." for i in range(12)],
        "test": ["Salt is a mineral. It is found in the sea and in rocks deep underground.",
                 "Salt! It is a mineral found in the sea and in rocks deep underground, and people eat it every day!"],
    }
    splits = {"train": [f"Question {i}?" for i in range(12)], "test": ["Tell me about salt.", "What should I know about salt?"]}
    scores = argmax_scores(splits, answers, seed=0, majority=0.8, users=40)
    assert scores["single"] == {"enthusiastic": [1.0, 1.0], "concise": [0.0, 0.0]}
    assert scores["maxmin"] == {"enthusiastic": [1.0, 0.0], "concise": [1.0, 1.0]}


def test_the_ceiling_breaks_egalitarian_ties_by_the_groups_shares():
    """Test answers of one unfinished sentence: their only variants are the answer and its excited
    form, tied on the worst group. With the plain minimum the choice fell to rounding or the texts'
    order: here MaxMin kept some of the six base answers (a tie for both groups: two with torch on
two threads, three on one, so the count is not asserted). With the tie broken
    by EM's mixing weights it writes the excited form every time, as the single reward does: the
    majority wins, the minority loses to both."""
    from benchmarks.maxmin_policy import argmax_scores

    answers = {
        "train": [f"Topic {i} is a thing people study. It has a long history and many uses in daily life. Experts keep learning more about it." for i in range(12)],
        "test": ["Apples are a fruit that people grow in orchards all over the world and eat in many ways, raw or",
                 "While apples can be a rewarding crop to grow, it is essential to strike a balance between",
                 "Bananas grow in warm places and people ship them across the oceans to reach shops in cold",
                 "Kites fly when the wind lifts them over fields and beaches, and children hold the long strings of",
                 "A good overview of pears can be found in many books about gardens, orchards and the trees that",
                 "Cherries ripen in early summer on trees that need cold winters, and birds like to eat them before"],
    }
    splits = {"train": [f"Question {i}?" for i in range(12)], "test": [f"Tell me about thing {i}." for i in range(6)]}
    plain = argmax_scores(splits, answers, seed=0, majority=0.8, users=40, tie_break=0.0)
    kept = plain["maxmin"]["enthusiastic"].count(0.5)
    assert kept >= 1 and plain["maxmin"]["concise"].count(0.5) == kept
    broken = argmax_scores(splits, answers, seed=0, majority=0.8, users=40, tie_break=1e-3)
    assert broken["maxmin"] == broken["single"] == {"enthusiastic": [1.0] * 6, "concise": [0.0] * 6}


def test_brief_variants_of_an_opening_exclamation_run_on_to_a_sentence():
    """`--brief-words 4`: an answer that opens with a one-word exclamation ("Salt!") gave MaxMin the
    compromise "Great question! Salt!", shorter than the base answer is long and excited, so the
    majority lost it (the ceiling test above). With the brief variant running on to the first
    sentence end that closes four words, MaxMin's compromise wins both groups on that question; on
    answers whose first sentence is long enough nothing changes."""
    from benchmarks.maxmin_policy import argmax_scores

    answers = {
        "train": [f"Topic {i} is a thing people study. It has a long history and many uses in daily life. Experts keep learning more about it." for i in range(12)],
        "test": ["Salt is a mineral. It is found in the sea and in rocks deep underground.",
                 "Salt! It is a mineral. It is found in the sea and in rocks deep underground."],
    }
    splits = {"train": [f"Question {i}?" for i in range(12)], "test": ["Tell me about salt.", "What should I know about salt?"]}
    first = argmax_scores(splits, answers, seed=0, majority=0.8, users=40, tie_break=1e-3)
    assert first["maxmin"] == {"enthusiastic": [1.0, 0.0], "concise": [1.0, 1.0]}  # "Great question! Salt!" loses the majority
    four = argmax_scores(splits, answers, seed=0, majority=0.8, users=40, tie_break=1e-3, brief_words=4)
    assert four["maxmin"] == {"enthusiastic": [1.0, 1.0], "concise": [1.0, 1.0]}  # "Great question! Salt! It is a mineral!"
    assert four["single"] == first["single"] == {"enthusiastic": [1.0, 1.0], "concise": [0.0, 0.0]}


def test_runs_with_one_word_briefs_are_reused_only_with_brief_words_1(tmp_path):
    """Runs stored before `--brief-words` took the first sentence however short: they count as 1."""
    from benchmarks.maxmin_policy import TRAINING_KEYS, stored_runs, training_setting

    now = training_setting(argparse.Namespace(**{k: 0 for k in TRAINING_KEYS} | {"brief_words": 4}))
    first = training_setting(argparse.Namespace(**{k: 0 for k in TRAINING_KEYS} | {"brief_words": 1}))
    old = {k: v for k, v in first.items() if k != "brief_words"}
    (tmp_path / "results.json").write_text(json.dumps([{"seed": 0, "majority": 0.8, "objective": "maxmin", "training": old}]))
    assert stored_runs(tmp_path / "results.json", now) == {}
    assert list(stored_runs(tmp_path / "results.json", first)) == [(0, 0.8, "maxmin")]


def test_runs_stored_before_the_confirmation_set_count_as_tested_on_the_first(tmp_path):
    from benchmarks.maxmin_policy import TRAINING_KEYS, stored_runs, training_setting

    main = training_setting(argparse.Namespace(**{k: 0 for k in TRAINING_KEYS} | {"test_set": "main"}))
    confirm = training_setting(argparse.Namespace(**{k: 0 for k in TRAINING_KEYS} | {"test_set": "confirm"}))
    old = {k: v for k, v in main.items() if k != "test_set"}
    (tmp_path / "results.json").write_text(json.dumps([{"seed": 0, "majority": 0.8, "objective": "single", "training": old}]))
    assert list(stored_runs(tmp_path / "results.json", main)) == [(0, 0.8, "single")]
    assert stored_runs(tmp_path / "results.json", confirm) == {}


def test_rejudge_leaves_runs_on_the_other_test_set(tmp_path, monkeypatch):
    import benchmarks.maxmin_policy as bench

    monkeypatch.setattr(bench, "base_answers", lambda *a, **k: pytest.fail("base answers read for a run on other test questions"))
    point = {"step": 5, "val": {"enthusiastic": 0.9, "concise": 0.5}, "last_val_answers": ["a"] * 48, "last_test_answers": ["b"] * 48}
    run = {"seed": 0, "majority": 0.8, "objective": "maxmin", "curve": [point],
           "training": {"max_new_tokens": 24, "judge": "old", "validation_topics": 24, "test_set": "confirm"}}
    (tmp_path / "results.json").write_text(json.dumps([run]))
    assert bench.rejudge(tmp_path, {"val": ["q"] * 48, "test": ["t"] * 48}, validation_topics=24, test_set="main") == 0


@pytest.mark.parametrize("flags, says", [
    (["--pool", "/nonexistent/results.json", "--test-set", "main"], "--pool (/nonexistent/results.json): "),
    (["--pool", "MAIN_RUNS", "--test-set", "main"], "runs tested on ['main']: each file must hold one test set's runs, neither this command's ('main')"),
    (["--pool", "CONFIRM_RUNS", "CONFIRM_RUNS", "--test-set", "main", "--seeds", "0", "--majority", "0.8", "--objectives", "maxmin"], "as those of"),
    (["--pool", "CONFIRM_RUNS", "--test-set", "main", "--seeds", "0", "1", "--majority", "0.8", "--objectives", "maxmin"], "it has no run seed 1 maxmin-80"),
    (["--pool", "OTHER_RUNS", "--test-set", "main", "--seeds", "0", "--majority", "0.8", "--objectives", "maxmin"], "trained otherwise than this command's (they differ in lr)"),
    (["--pool", "CONFIRM_RUNS"], "it needs one --test-set other than 'all'"),  # the default pools nothing more
    (["--pool", "NOT_RUNS", "--test-set", "main"], "not a results.json"),
    (["--maxmin-rule", "margin", "--majority-tolerance", "-1"], "--maxmin-rule margin measures from a majority and a minority"),
    (["--maxmin-rule", "margin", "--majority", "0.5"], "no --majority 0.5"),
])
def test_pool_flags_are_usage_errors_before_any_work(tmp_path, flags, says):

    from benchmarks.maxmin_policy import build_parser, training_setting

    training = training_setting(build_parser().parse_args(["--test-set", "confirm"]))  # the training of the commands below
    run = {"seed": 0, "majority": 0.8, "objective": "maxmin", "curve": []}
    (tmp_path / "main.json").write_text(json.dumps([run | {"training": training | {"test_set": "main"}}]))
    (tmp_path / "confirm.json").write_text(json.dumps([run | {"training": training}]))
    (tmp_path / "not.json").write_text(json.dumps([run]))  # no training setting
    (tmp_path / "other.json").write_text(json.dumps([run | {"training": training | {"test_set": "fresh", "lr": 0.5}}]))
    files = {"MAIN_RUNS": "main.json", "CONFIRM_RUNS": "confirm.json", "NOT_RUNS": "not.json", "OTHER_RUNS": "other.json"}
    flags = [str(tmp_path / files[f]) if f in files else f for f in flags]
    done = bench_command("--work", str(tmp_path / "never-written"), *flags)
    assert done.returncode == 2 and says in done.stderr, done.stderr[-800:]
    assert not (tmp_path / "never-written").exists()


def test_a_policy_without_a_loss_is_a_usage_error():

    done = bench_command("--dpo", "0", "--nll", "0")
    assert done.returncode == 2 and "--dpo (0.0) and --nll (0.0)" in done.stderr


@pytest.mark.parametrize("flags, named", [
    (["--majority", "1.5"], "--majority"),  # a share above 1 printed a "150/-50" row of figures
    (["--majority", "0.8", "1.0"], "--majority"),  # a minority of no users: its "gain" means nothing
    (["--majority", "0.2"], "--majority"),  # the enthusiastic side would be the minority, mislabelled
    (["--users", "0"], "--users"),  # an IndexError from the BT fit
    (["--max-new-tokens", "0"], "--max-new-tokens"),  # a ValueError from transformers after loading the base
    (["--limit", "-1"], "--limit"),  # silently dropped each split's last question
    (["--seeds", "0", "0"], "--seeds"),  # one seed counted twice in the interval over seeds
    (["--min-new-tokens", "-1"], "--min-new-tokens"),
    (["--min-new-tokens", "30"], "--min-new-tokens"),  # above --max-new-tokens (24): transformers would fail after loading
    (["--brief-words", "0"], "--brief-words"),  # a brief variant of no words
])
def test_odd_ceiling_flags_are_usage_errors_before_any_work(flags, named):

    done = bench_command("--ceiling", "--work", "/nonexistent/never-written", *flags)
    assert done.returncode == 2, done.stderr[-800:]
    assert named in done.stderr


def test_runs_judged_by_another_judge_are_never_reused(tmp_path):
    """A stored run keeps its checkpoints' scores; one scored by the rules alone (before
    `style_groups.repeats`) must not join a summary of runs scored with it."""

    from benchmarks.maxmin_policy import JUDGE, TRAINING_KEYS, stored_runs, training_setting

    args = argparse.Namespace(**{k: 0 for k in TRAINING_KEYS})
    now = training_setting(args)
    assert now["judge"] == JUDGE
    before = {k: v for k, v in now.items() if k != "judge"}
    runs = [{"seed": 0, "majority": 0.8, "objective": "single", "training": before},
            {"seed": 1, "majority": 0.8, "objective": "single", "training": now}]
    (tmp_path / "results.json").write_text(json.dumps(runs))
    assert list(stored_runs(tmp_path / "results.json", now)) == [(1, 0.8, "single")]


def test_runs_that_answered_other_validation_questions_are_not_rejudged(tmp_path, monkeypatch):
    """`--rejudge` scores kept answers against the base's answers to the same questions: a run stored
    before the validation set was doubled (no `validation_topics`: the first 12) is left as it was,
    and the base model is never loaded to answer the new questions."""
    import benchmarks.maxmin_policy as bench

    monkeypatch.setattr(bench, "base_answers", lambda *a, **k: pytest.fail("base answers read for a run on other questions"))
    point = {"step": 5, "val": {"enthusiastic": 0.9, "concise": 0.5}, "last_val_answers": ["a"] * 24, "last_test_answers": ["b"] * 48}
    run = {"seed": 0, "majority": 0.8, "objective": "maxmin", "curve": [point], "training": {"max_new_tokens": 24, "judge": "old"}}
    (tmp_path / "results.json").write_text(json.dumps([run]))
    assert bench.rejudge(tmp_path, {"val": ["q"] * 48, "test": ["t"] * 48}, validation_topics=24) == 0
    assert json.loads((tmp_path / "results.json").read_text())[0]["training"]["judge"] == "old"


def test_runs_ranked_without_the_tie_break_are_reused_only_without_it(tmp_path):
    """Runs stored before `--tie-break` ranked by the plain minimum: they count as --tie-break 0."""
    from benchmarks.maxmin_policy import TRAINING_KEYS, stored_runs, training_setting

    now = training_setting(argparse.Namespace(**{k: 0 for k in TRAINING_KEYS} | {"tie_break": 1e-3}))
    plain = training_setting(argparse.Namespace(**{k: 0 for k in TRAINING_KEYS} | {"tie_break": 0.0}))
    old = {k: v for k, v in plain.items() if k != "tie_break"}
    (tmp_path / "results.json").write_text(json.dumps([{"seed": 0, "majority": 0.8, "objective": "maxmin", "training": old}]))
    assert stored_runs(tmp_path / "results.json", now) == {}
    assert list(stored_runs(tmp_path / "results.json", plain)) == [(0, 0.8, "maxmin")]


def test_the_reported_answers_summary_comes_from_the_kept_answers():
    """Runs that keep each checkpoint's answers report their mean length, '!' and first answer
    from them (runs stored before keep their recorded figures, as above)."""
    point = {**checkpoint(5, 1.0, 0.6), "last_test_answers": ["Great question! Salt!", "Rain falls."]}
    for key in ("last_chars", "last_exclaims", "last_sample"):
        point.pop(key)
    reported = apply_selection([checkpoint(0, 0.5, 0.5), point], "single", SHARES, "validation")[1]
    assert reported["selected_step"] == 5 and reported["sample"] == "Great question! Salt!"
    assert reported["chars"] == pytest.approx((21 + 11) / 2) and reported["exclaims"] == pytest.approx(1.0)


def test_pooling_joins_one_trainings_test_sets_and_refuses_two_trainings():
    """`--pool`: a run's test scores joined to its twins' on other test sets, per reported step, in
    `TEST_SETS` order whatever order the lists come in (all five: what `--test-set all` reports),
    each set at the checkpoint this command's selection reports; a twin trained otherwise, or whose
    checkpoints scored validation otherwise, is refused, and so is a list on the command's own set,
    on two sets, or a set given twice."""
    from benchmarks.maxmin_policy import pool_test_sets, summarize_runs

    def run(objective, test_set, scores, selected=5, lr=2e-3, val=0.9):
        point = {"step": 5, "selected_step": selected, "val": rates(val, 0.8), "test_scores": {"enthusiastic": scores, "concise": scores},
                 "last_test_scores": {"enthusiastic": scores, "concise": scores}}
        return {"seed": 0, "majority": 0.8, "objective": objective, "training": {"lr": lr, "test_set": test_set}, "curve": [point]}

    main = [run("single", "main", [1.0, 1.0]), run("maxmin", "main", [1.0, 0.0])]
    confirm = [run("single", "confirm", [1.0, 1.0, 1.0]), run("maxmin", "confirm", [0.5, 0.5, 1.0])]
    pooled, name = pool_test_sets(main, [confirm])
    assert name == "main+confirm"
    assert pooled[1]["curve"][0]["test_scores"]["enthusiastic"] == [1.0, 0.0, 0.5, 0.5, 1.0]
    assert main[1]["curve"][0]["test_scores"]["enthusiastic"] == [1.0, 0.0]  # the inputs are left as they were
    summary = summarize_runs(pooled, [0], 0.8)["steps"]["5"]
    assert summary["majority_gap"]["mean"] == pytest.approx(-0.4)  # (0 - 1 - 0.5 - 0.5 + 0) / 5
    # from the confirmation set's command, the first set's scores still come first
    assert pool_test_sets(confirm, [main])[0][1]["curve"][0]["test_scores"]["enthusiastic"] == [1.0, 0.0, 0.5, 0.5, 1.0]
    later = {t: [run("single", t, [1.0]), run("maxmin", t, [float(i)])] for i, t in enumerate(("fresh", "fourth", "fifth"), 2)}
    every, name = pool_test_sets(confirm, [later["fifth"], main, later["fourth"], later["fresh"]])
    assert name == "all" and every[1]["curve"][0]["test_scores"]["concise"] == [1.0, 0.0, 0.5, 0.5, 1.0, 2.0, 3.0, 4.0]
    # the confirmation set's command selected step 0 at step 5 (--select, say): this command's step 5 is pooled
    at_zero = run("maxmin", "confirm", [0.0], selected=0)
    at_zero["curve"].insert(0, {"step": 0, "selected_step": 0, "val": rates(0.5, 0.5), "test_scores": {"enthusiastic": [0.0], "concise": [0.0]},
                                "last_test_scores": {"enthusiastic": [0.0], "concise": [0.0]}})
    at_zero["curve"][1] |= {"last_test_scores": {"enthusiastic": [1.0], "concise": [1.0]}}
    two_steps = [{**r, "curve": [{**at_zero["curve"][0], "selected_step": 0}, r["curve"][0]]} for r in main]
    reselected, _ = pool_test_sets(two_steps, [[{**confirm[0], "curve": [at_zero["curve"][0], confirm[0]["curve"][0]]}, at_zero]])
    assert reselected[1]["curve"][1]["test_scores"]["enthusiastic"] == [1.0, 0.0, 1.0]  # the confirmation set's step-5 checkpoint, not its step 0
    with pytest.raises(ValueError, match="on 'confirm' has other checkpoints or scored validation otherwise"):
        pool_test_sets(main, [[confirm[0], run("maxmin", "confirm", [1.0], val=0.5)]])
    with pytest.raises(ValueError, match="on 'confirm' was trained otherwise: lr"):
        pool_test_sets(main, [[confirm[0], run("maxmin", "confirm", [1.0], lr=1e-3)]])
    with pytest.raises(ValueError, match="on 'confirm' trained on other pairs or kept other checkpoint files"):
        pool_test_sets([{**main[0], "pairs_digest": "a"}], [[{**confirm[0], "pairs_digest": "b"}]])
    hashed = [{**main[0], "curve": [{**main[0]["curve"][0], "checkpoint_sha256": "a"}]}]
    with pytest.raises(ValueError, match="on 'confirm' trained on other pairs or kept other checkpoint files"):
        pool_test_sets(hashed, [[{**confirm[0], "curve": [{**confirm[0]["curve"][0], "checkpoint_sha256": "b"}]}]])
    with pytest.raises(ValueError, match="two lists of runs tested on 'main'"):
        pool_test_sets(main, [main])
    with pytest.raises(ValueError, match="two lists of runs tested on 'confirm'"):
        pool_test_sets(main, [confirm, confirm])
    with pytest.raises(ValueError, match="no run seed 0 maxmin-80 in the 'confirm' results"):
        pool_test_sets(main, [confirm[:1]])
    with pytest.raises(ValueError, match="is in the 'confirm' results twice"):
        pool_test_sets(main, [confirm + confirm[:1]])
    with pytest.raises(ValueError, match=r"tested on \['confirm', 'main'\]"):
        pool_test_sets(main, [confirm + main])
    with pytest.raises(ValueError, match=r"tested on \['all'\]"):
        pool_test_sets(main, [[run("single", "all", [1.0])]])


@pytest.mark.parametrize("name", [name for name in TEST_SETS if name != "main"])
def test_each_later_test_set_shares_no_topic_with_any_other_set(name):
    """Every `--test-set` but the first: 48 questions on 24 topics of no other split and of no other
    test set, with the same training and validation questions as the first test set's."""
    from benchmarks import maxmin_policy

    lists = maxmin_policy.TEST_SETS
    train, val, _ = maxmin_policy.questions()
    own_train, own_val, own = maxmin_policy.questions(test_set=name)
    assert (own_train, own_val) == (train, val)
    others = [q for other in lists if other != name for q in maxmin_policy.questions(test_set=other)[2]]
    assert len(own) == len(set(own)) == 48 and not set(own) & set(train + val + others)
    topics = set(lists[name])
    assert len(topics) == 24 and not topics & set(maxmin_policy.TOPICS[:40] + maxmin_policy.VALIDATION_TOPICS + [t for o in lists if o != name for t in lists[o]])


def test_an_unknown_test_set_is_refused_by_name():
    from benchmarks import maxmin_policy

    with pytest.raises(ValueError, match="test_set must be one of .*'fifth'.*, got 'no such set'"):
        maxmin_policy.questions(test_set="no such set")


def test_a_work_folder_holding_another_test_sets_runs_is_refused_before_any_work(tmp_path):
    """Training with the default `--test-set all` in a folder whose results.json holds the same
    training on the first set (a command recorded before the default changed) would replace that
    run's checkpoints and results: a usage error instead, which names the set and the flag."""

    from benchmarks.maxmin_policy import build_parser, training_setting

    training = training_setting(build_parser().parse_args([])) | {"test_set": "main"}
    stored = json.dumps([{"seed": 0, "majority": 0.8, "objective": "maxmin", "curve": [], "training": training}])
    (tmp_path / "results.json").write_text(stored)
    done = bench_command("--work", str(tmp_path))
    assert done.returncode == 2 and "holds runs of this training tested on main: give --test-set all its own --work" in done.stderr, done.stderr[-800:]
    assert (tmp_path / "results.json").read_text() == stored and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_an_unreadable_results_file_in_the_work_folder_is_a_usage_error(tmp_path):
    """A command killed while writing WORK/results.json can leave it truncated: the next command in
    that folder says so, naming --work, instead of a traceback."""

    (tmp_path / "results.json").write_text('[{"seed": 0, "tra')
    done = bench_command("--work", str(tmp_path))
    assert done.returncode == 2 and f"--work ({tmp_path}): its results.json cannot be read" in done.stderr, done.stderr[-800:]


def test_checkpoints_from_a_command_without_every_run_is_refused_before_any_seed(tmp_path):
    """--checkpoints-from names each run it lacks (seed, objective, share) before answering any."""

    from benchmarks.maxmin_policy import build_parser, training_setting

    training = training_setting(build_parser().parse_args(["--test-set", "main"]))
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "results.json").write_text(json.dumps([{"seed": 0, "majority": 0.8, "objective": "maxmin", "curve": [], "training": training}]))
    done = bench_command("--test-set", "confirm", "--seeds", "0", "1", "--majority", "0.8",
                           "--checkpoints-from", str(tmp_path / "main" / "results.json"), "--work", str(tmp_path / "confirm"), "--out", str(tmp_path / "out.json"))
    assert done.returncode == 2 and "has no run seed 0 single-80, seed 1 maxmin-80, seed 1 single-80 trained with this command's setting" in done.stderr, done.stderr[-800:]
    assert not (tmp_path / "confirm").exists() and not (tmp_path / "out.json").exists()
