"""benchmarks.bars: issue 17's rows of the bars table come from the results' JSON, only between
their markers, and no bar is marked met on one seed or a reduced setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bars import END, START, render
from benchmarks.intervals import summarize
from benchmarks.maxmin_policy import summarize_runs

ROOT = Path(__file__).resolve().parents[2]
OTHER_ROWS = [
    "## The bars at a glance", "", "| issue | bar | figure | met |", "|---|---|---|---|",
    "| 7 PAL | UKP seen macro acc not below single BT | 0.790 vs 0.790 | tie |", "",
]


def maxmin_result(seeds, minority_wins, steps=60, questions=48):
    """What benchmarks.maxmin_policy --out writes, from per-question win scores (ties half)."""
    rng = np.random.default_rng(0)
    results = []
    for seed in seeds:
        for objective, (maj, mino) in {"single": (1.0, 0.4), "maxmin": (1.0, minority_wins[seed])}.items():
            curve = [{"step": 0, "selected_step": 0, "test_scores": {"enthusiastic": [0.5] * questions, "concise": [0.5] * questions}}]
            for step in range(15, steps + 1, 15):
                scores = {g: rng.choice([0.0, 1.0], size=questions, p=[1 - p, p]).tolist() for g, p in (("enthusiastic", maj), ("concise", mino))}
                curve.append({"step": step, "selected_step": step, "test_scores": scores})
            results.append({"seed": seed, "majority": 0.8, "objective": objective, "curve": curve})
    setting = {"steps": steps, "limit": 0, "users": 100, "select": "validation", "questions": {"test": questions}}
    return {"benchmark": "maxmin_policy", "setting": setting, "majority": {"0.8": summarize_runs(results, list(seeds), 0.8)}}


def ukp_result(seeds, shift):
    rng = np.random.default_rng(1)
    bt = rng.uniform(0.6, 0.95, size=(len(seeds), 200))
    other = np.clip(bt + shift + rng.normal(0, 0.01, size=bt.shape), 0, 1)
    return {"benchmark": "ukp_seeds", "setting": {"seeds": list(seeds), "baseline": "bt"},
            "models": {"bt": {"seen_macro_acc": summarize(bt, seeds)},
                       "pal-a": {"seen_macro_acc": summarize(other, seeds), "vs_bt": summarize(other - bt, seeds)}}}


def run_bars(tmp_path, *extra):
    return subprocess.run([sys.executable, "-m", "benchmarks.bars", "--results", str(tmp_path / "results"), "--benchmarks", str(tmp_path / "B.md"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_rows_regenerate_between_the_markers_only(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "maxmin-80.json").write_text(json.dumps(maxmin_result([0, 1, 2], {0: 0.95, 1: 0.95, 2: 0.95})))
    (tmp_path / "results" / "maxmin-80-one-seed.json").write_text(json.dumps(maxmin_result([0], {0: 0.95})))
    (tmp_path / "results" / "ukp.json").write_text(json.dumps(ukp_result([0, 1, 2], 0.05)))
    (tmp_path / "B.md").write_text("\n".join(OTHER_ROWS + [START, "| stale row |", END, "", "## Next section", ""]))

    assert run_bars(tmp_path, "--check").returncode == 1  # the stale row
    done = run_bars(tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "B.md").read_text()
    lines = text.split("\n")
    assert lines[: len(OTHER_ROWS)] == OTHER_ROWS and lines[-3:] == ["", "## Next section", ""]
    assert "stale row" not in text
    rows = [line for line in lines if line.startswith("| 17 seeds")]
    maxmin = [r for r in rows if "MaxMin" in r]
    assert len(maxmin) == 2
    three, one = (r for r in maxmin if "seeds 0 1 2" in r), (r for r in maxmin if "seeds 0," in r)
    assert next(three).endswith("| yes on this test set; the contract line reads all five sets pooled |")  # about +55 points on every seed, majority never worse
    assert "| not decided: 1 seed(s); intervals clear the bar |" in next(one)
    ukp = next(r for r in rows if "UKP" in r)
    assert "pal-a 0." in ukp and ukp.endswith("| yes (above) |")
    assert any("FSPO" in r and "not decided" in r for r in rows)
    assert run_bars(tmp_path, "--check").returncode == 0


def test_one_failing_seed_fails_the_maxmin_bar(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "maxmin.json").write_text(json.dumps(maxmin_result([0, 1, 2], {0: 0.95, 1: 0.95, 2: 0.45})))
    (tmp_path / "B.md").write_text("\n".join([START, END]))
    assert run_bars(tmp_path).returncode == 0
    row = next(line for line in (tmp_path / "B.md").read_text().split("\n") if "MaxMin" in line)
    assert row.endswith("| no |")


def test_a_reduced_setting_is_never_marked_met(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "maxmin.json").write_text(json.dumps(maxmin_result([0, 1, 2], {0: 0.95, 1: 0.95, 2: 0.95}, steps=30)))
    (tmp_path / "B.md").write_text("\n".join([START, END]))
    assert run_bars(tmp_path).returncode == 0
    row = next(line for line in (tmp_path / "B.md").read_text().split("\n") if "MaxMin" in line)
    assert "not decided" in row and "steps 30" in row and "bar steps missing" in row


def test_the_repository_table_is_generated_from_its_results():
    done = subprocess.run([sys.executable, "-m", "benchmarks.bars", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_run_with_more_checkpoints_shows_the_bars_steps_only(tmp_path):
    result = maxmin_result([0, 1, 2], {0: 0.95, 1: 0.95, 2: 0.95})
    steps = result["majority"]["0.8"]["steps"]
    steps["5"] = steps["15"]  # an extra checkpoint (--every 5)
    (tmp_path / "maxmin.json").write_text(json.dumps(result))
    row = next(r for r in render(tmp_path) if r.startswith("| 17 seeds | MaxMin"))
    assert "step 15:" in row and "step 60:" in row and "step 45:" not in row and "step 5:" not in row


def fspo_report(seed, fspo_win, users=20, per_user=16, steps=240):
    """What benchmarks/fspo_reward.py --out writes for one seed (outcomes only at k=4 and 8)."""
    rng = np.random.default_rng(seed)
    ids = [f"s{seed}-u{u}" for u in range(users) for _ in range(per_user)]
    outcomes = {f"k{k}": {"user": ids, "base": rng.choice([0.0, 1.0], size=len(ids)).tolist(),
                          "fspo": rng.choice([0.0, 1.0], size=len(ids), p=[1 - fspo_win, fspo_win]).tolist()} for k in (4, 8)}
    config = {"shots": 4, "steps": steps, "batch_size": 32, "queries": 8, "lora_layers": 8, "lr": 1e-3, "seed": seed}
    return {"population": "persona", "groups": 2, "eval_users": users, "pairs_per_k": len(ids), "config": config, "seed": seed,
            "outcomes": outcomes, "fspo_train_seconds": 1.0}


def test_fspo_rows_come_from_per_user_outcomes_over_seeds(tmp_path):
    from benchmarks.fspo_reward import summarize_seeds

    (tmp_path / "results").mkdir()
    (tmp_path / "B.md").write_text("\n".join([START, END, ""]))
    summary = summarize_seeds([fspo_report(s, 0.9) for s in (0, 1, 2)])
    assert summary["k"]["4"]["gain"]["units"] == [20, 20, 20]
    (tmp_path / "results" / "fspo.json").write_text(json.dumps(summary))
    assert run_bars(tmp_path).returncode == 0
    row = next(r for r in (tmp_path / "B.md").read_text().split("\n") if "FSPO persona" in r)
    assert row.endswith("| yes |") and "k=4: FSPO 0.9" in row and "k=8" in row  # +40 points on every seed

    # a seed whose FSPO reads nothing from the shots fails the bar; two seeds or a shorter run decide nothing
    (tmp_path / "results" / "fspo.json").write_text(json.dumps(summarize_seeds([fspo_report(0, 0.9), fspo_report(1, 0.9), fspo_report(2, 0.5)])))
    run_bars(tmp_path)
    assert next(r for r in (tmp_path / "B.md").read_text().split("\n") if "FSPO persona" in r).endswith("| no |")
    (tmp_path / "results" / "fspo.json").write_text(json.dumps(summarize_seeds([fspo_report(s, 0.9, steps=30) for s in (0, 1)])))
    run_bars(tmp_path)
    assert "| not decided: 2 seed(s), reduced setting: steps 30 |" in (tmp_path / "B.md").read_text()


def test_fspo_reports_that_cannot_be_combined_are_refused():
    from benchmarks.fspo_reward import summarize_seeds

    with pytest.raises(ValueError, match="twice"):
        summarize_seeds([fspo_report(0, 0.9), fspo_report(0, 0.9)])
    with pytest.raises(ValueError, match="differs"):
        summarize_seeds([fspo_report(0, 0.9), fspo_report(1, 0.9, steps=30)])
    with pytest.raises(ValueError, match="outcomes"):
        summarize_seeds([{k: v for k, v in fspo_report(0, 0.9).items() if k != "outcomes"}])


def test_the_maxmin_ceiling_row_says_whether_the_objective_can_reach_the_bar():
    from benchmarks.bars import maxmin_ceiling_rows

    seeds = [0, 1, 2]

    def ceiling(gap_per_seed):
        gaps = np.array([[g] * 48 for g in gap_per_seed])
        gains = np.full((3, 48), 0.7)
        return {"benchmark": "maxmin_ceiling", "seeds": seeds, "questions": {"test": 48},
                "majority": {"0.8": {"majority_gap": summarize(gaps, seeds), "minority_gain": summarize(gains, seeds)}}}

    within = maxmin_ceiling_rows(ceiling([0.0, -0.02, 0.0]), "x.json")[0]
    assert within.endswith("| within reach |") and "80/20: majority -0.7" in within
    short = maxmin_ceiling_rows(ceiling([0.0, -0.02, -0.0625]), "x.json")[0]  # one seed below -5
    assert short.endswith("| falls short at 80/20: out of reach of a policy that writes MaxMin's compromise of the base's own answer |")


def test_the_elicitation_row_is_met_on_the_fitted_baseline_and_counts_like_for_like_apart():
    """Issue 16's offline bar compares chosen comparisons with random ones as the model fits them;
    the like-for-like form (random ones predicted by the seen users) is counted beside it."""
    from benchmarks.bars import active_shots_rows

    def row(lo):
        return {"active": 0.9, "random": 0.88, "difference": lo + 0.01, "interval": [lo, lo + 0.02], "users": 200, "met": lo >= 0}

    def result(fit_lo, like_lo):
        bar = {"2 vs 4 random_seen_users": row(like_lo), "2 vs 4 random_fit": row(fit_lo)}
        return {"populations": [{"groups": 4, "seed": 0, "unseen_users": 200, "query_size": 50, "bar": bar}]}

    met = active_shots_rows(result(0.004, -0.01), "x.json")[0]
    assert "g4 s0 (200 users, 50 queries each)" in met
    assert met.endswith("| yes against the fitted random comparisons: every lower end >= 0; like for like, 0 of 1 clear 0 |")
    short = active_shots_rows(result(-0.001, 0.002), "x.json")[0]
    assert short.endswith("| no: not every interval against the fitted random comparisons clears 0; like for like, 1 of 1 clear 0 |")


def test_the_maxmin_rows_say_when_answers_had_a_minimum_length():
    from benchmarks.bars import maxmin_rows

    result = maxmin_result([0, 1, 2], {0: 0.95, 1: 0.95, 2: 0.95})
    assert "no minimum answer length, judged by the groups' rules alone, seeds 0 1 2" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"min_new_tokens": 8, "judge": "the rules and more"}
    row = maxmin_rows(result, "x.json")[0]
    assert "every answer at least 8 tokens, judged by the rules and more, seeds 0 1 2" in row
    assert row.endswith("| yes on this test set; the contract line reads all five sets pooled |")  # a result without the key: the first set
    result["setting"] |= {"test_set": "all", "questions": {"test": 240}}
    row = maxmin_rows(result, "x.json")[0]
    assert "240 test questions of all five test sets pooled (the first, CONFIRM" in row and row.endswith("| yes |")  # what the contract line reads
    result["setting"] |= {"test_set": "main+fifth", "questions": {"test": 96}, "pool": ["runs/fifth/results.json"]}
    assert "96 test questions of the sets main+fifth pooled joined from each set's own command (--pool), MaxMin" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"pool": []}
    result["setting"] |= {"tie_break": 1e-3}
    assert "at least 8 tokens, MaxMin's ties on the worst group to EM's share-weighted mean (tie-break 0.001), judged by" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"brief_words": 4}
    assert "(tie-break 0.001), brief variants of at least 4 words, judged by" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"test_set": "confirm", "questions": {"test": 48}}
    assert "48 confirmation test questions on fresh topics (CONFIRM_TOPICS), MaxMin minus single" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"test_set": "main+confirm", "questions": {"test": 96}}
    assert "96 test questions (the first test set's and the confirmation set's on fresh topics, CONFIRM_TOPICS), MaxMin" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"test_set": "fresh", "questions": {"test": 48, "val": 48}, "select": "validation", "maxmin_rule": "floor", "majority_tolerance": 0.05, "minority_gain": 0.2}
    assert "(FRESH_TOPICS, read after the checkpoint rule was chosen) (48 validation questions chose the checkpoints), MaxMin" in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"maxmin_rule": "margin"}
    assert ("48 third test set's questions on fresh topics (FRESH_TOPICS, read after the checkpoint rule was chosen) (48 validation questions chose the checkpoints, "
            "MaxMin's by the widest margin on both halves of the bar (majority within 5 points, minority ahead by 20)), MaxMin") in maxmin_rows(result, "x.json")[0]
    result["setting"] |= {"test_set": "fourth", "maxmin_rule": "floor", "batch_size": 8}
    row = maxmin_rows(result, "x.json")[0]
    assert "(tie-break 0.001), batches of 8 pairs, brief variants of at least 4 words, judged by" in row
    assert "48 fourth test set's questions on fresh topics (FOURTH_TOPICS, read after the batch size was chosen) (48 validation" in row
    result["setting"] |= {"test_set": "fifth", "batch_size": 16, "checkpoints_from": "runs/main/results.json"}
    row = maxmin_rows(result, "x.json")[0]
    assert "(tie-break 0.001), batches of 16 pairs, brief variants of at least 4 words, judged by" in row
    assert ("48 fifth test set's questions on fresh topics (FIFTH_TOPICS, read after the batch size of 16 was chosen) answered by the checkpoints "
            "of the same training on another test set (--checkpoints-from) (48 validation") in row
    assert row.endswith("| yes on this test set; the contract line reads all five sets pooled |")  # the same figures on all five: "| yes |" (above)


def test_the_ceiling_row_names_its_split_and_tie_break():
    from benchmarks.bars import maxmin_ceiling_rows

    seeds = [0, 1, 2]
    result = {"benchmark": "maxmin_ceiling", "seeds": seeds, "questions": {"test": 48, "val": 24}, "split": "val", "tie_break": 1e-3,
              "majority": {"0.8": {"majority_gap": summarize(np.zeros((3, 24)), seeds), "minority_gain": summarize(np.full((3, 24), 0.6), seeds)}}}
    row = maxmin_ceiling_rows(result, "x.json")[0]
    assert "top style variant of the base's own val answer; MaxMin's ties on the worst group to EM's share-weighted mean (tie-break 0.001), seeds 0 1 2, 24 val questions" in row
    result["brief_words"] = 4
    assert "(tie-break 0.001), brief variants of at least 4 words, seeds 0 1 2" in maxmin_ceiling_rows(result, "x.json")[0]
    result |= {"split": "test", "test_set": "confirm", "questions": {"test": 48}}
    assert "base's own confirmation test (CONFIRM_TOPICS) answer; " in maxmin_ceiling_rows(result, "x.json")[0]
    result["test_set"] = "fresh"
    assert "base's own third test set (FRESH_TOPICS) answer; " in maxmin_ceiling_rows(result, "x.json")[0]
    result["test_set"] = "fourth"
    assert "base's own fourth test set (FOURTH_TOPICS) answer; " in maxmin_ceiling_rows(result, "x.json")[0]
    result["test_set"] = "fifth"
    assert "base's own fifth test set (FIFTH_TOPICS) answer; " in maxmin_ceiling_rows(result, "x.json")[0]
    result |= {"test_set": "all", "questions": {"test": 240}}
    assert "base's own test (all five sets) answer; " in maxmin_ceiling_rows(result, "x.json")[0] and "240 test (all five sets) questions" in maxmin_ceiling_rows(result, "x.json")[0]
