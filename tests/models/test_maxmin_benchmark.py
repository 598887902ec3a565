"""The MaxMin policy benchmark's contract, on a tiny random Llama: `--seeds ... --json` trains both
objectives per seed and prints, last, {"steps": {STEP: {"majority_gap": [lo, hi], "minority_gain": [lo, hi]}}}."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.maxmin_policy import questions
from tests.service.tiny import save_tiny_generator

ROOT = Path(__file__).resolve().parents[2]

# each test runs the benchmark 4 or 5 times as a subprocess (about 40 and 60 s on two cores): slow-marked
# to keep the default suite under 10 minutes; `make test-bench` runs them
pytestmark = pytest.mark.slow


def test_seeds_json_prints_the_interval_contract_last(tmp_path):
    model = save_tiny_generator(tmp_path / "tiny")
    # the base's answers come from the benchmark's per-seed cache: a random tiny model writes no
    # sentences, so its four style variants would collapse to two and MaxMin would rank no pair
    for seed in (0, 1, 2):
        cached = {}
        for part, asked in zip(("train", "val", "test"), questions(test_set="all", limit=6), strict=True):  # the default: 6 of each test set
            cached[part] = [f"Here is answer {i % 6} about it. It goes on for a while, seed {seed}." for i in range(len(asked))]
            cached[f"{part}_questions"] = asked
        (tmp_path / "work" / f"seed-{seed}").mkdir(parents=True)
        (tmp_path / "work" / f"seed-{seed}" / f"base-answers-4-min2-seed{seed}.json").write_text(json.dumps(cached))  # 2 to 4 new tokens
    out = tmp_path / "summary.json"
    command = [
        sys.executable, "-m", "benchmarks.maxmin_policy", "--majority", "0.8", "--seeds", "0", "1", "2", "--json",
        "--base-model", str(model), "--limit", "6", "--users", "20", "--steps", "2", "--every", "1",
        "--max-new-tokens", "4", "--min-new-tokens", "2", "--work", str(tmp_path / "work"), "--out", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(line) == {"steps"}
    assert set(line["steps"]) == {"1", "2"}  # every checkpoint after step 0
    for step in line["steps"].values():
        assert set(step) == {"majority_gap", "minority_gain"}
        for lo, hi in step.values():
            assert -1.0 <= lo <= hi <= 1.0

    summary = json.loads(out.read_text())
    row = summary["majority"]["0.8"]["steps"]["2"]
    assert row["minority_gain"]["seeds"] == [0, 1, 2] and row["minority_gain"]["units"] == 30  # 6 test questions of each of the five sets
    assert line["steps"]["2"]["minority_gain"] == row["minority_gain"]["interval"]
    for objective in ("single", "maxmin"):  # validation picks a checkpoint at or before the step reported
        assert all(0 <= s <= 2 for s in row[objective]["selected_step"].values())
    for seed in (0, 1, 2):  # both objectives trained on every seed, each seed its own base answers
        assert (tmp_path / "work" / f"seed-{seed}" / "policy-maxmin-80" / "meta.json").exists()
        assert (tmp_path / "work" / f"seed-{seed}" / "policy-single-80" / "meta.json").exists()
        for objective in ("maxmin", "single"):  # the lengths it trained with, as `train maxmin` records them (review hints58)
            meta = json.loads((tmp_path / "work" / f"seed-{seed}" / f"policy-{objective}-80" / "meta.json").read_text())
            assert (meta["max_length"], meta["max_prompt_length"]) == (160, 80), meta
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert sorted((r["seed"], r["objective"]) for r in results) == [(s, o) for s in (0, 1, 2) for o in ("maxmin", "single")]
    for point in (c for r in results for c in r["curve"] if c["step"] > 0):  # every checkpoint's answers, to judge again later
        assert len(point["last_test_answers"]) == len(point["last_test_scores"]["concise"]) == 30 and len(point["last_val_answers"]) == 6
    assert summary["setting"]["min_new_tokens"] == 2 and "repeats" in summary["setting"]["judge"]

    # the same command with another selection rule reuses every stored run (no training) and reselects
    again = subprocess.run([*command, "--majority-tolerance", "-1", "--select", "last"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reused from") == 6 and "s/step" not in again.stdout
    rerun = json.loads((tmp_path / "work" / "results.json").read_text())
    assert all(c["selected_step"] == c["step"] for r in rerun for c in r["curve"])  # --select last
    assert [c["val"] for r in rerun for c in r["curve"]] == [c["val"] for r in results for c in r["curve"]]

    # a command on fewer seeds in the same folder keeps the other seeds' runs in its results.json
    assert command[5:9] == ["--seeds", "0", "1", "2"]
    one = subprocess.run([*command[:6], "0", *command[9:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.count("reused from") == 2 and "s/step" not in one.stdout
    assert sorted((r["seed"], r["objective"]) for r in json.loads((tmp_path / "work" / "results.json").read_text())) == \
        [(s, o) for s in (0, 1, 2) for o in ("maxmin", "single")]

    # runs scored by another judge are trained again unless --rejudge scores their kept answers again
    older = json.loads((tmp_path / "work" / "results.json").read_text())
    for run in older:
        run["training"]["judge"] = "an older judge"
    (tmp_path / "work" / "results.json").write_text(json.dumps(older))
    judged = subprocess.run([*command, "--rejudge"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert judged.returncode == 0, judged.stderr[-3000:]
    assert "scored again with today's judge: 6 stored run(s)" in judged.stdout and judged.stdout.count("reused from") == 6 and "s/step" not in judged.stdout
    assert json.loads(judged.stdout.strip().splitlines()[-1]) == line  # the same answers, the same judge: the same figures

    # another command (its own folder) with the same seeds, setting and pairs reuses those runs through --reuse
    import shutil

    for seed in (0, 1, 2):
        (tmp_path / "work2" / f"seed-{seed}").mkdir(parents=True)
        shutil.copy(tmp_path / "work" / f"seed-{seed}" / f"base-answers-4-min2-seed{seed}.json", tmp_path / "work2" / f"seed-{seed}")
    command2 = [c if c != str(tmp_path / "work") else str(tmp_path / "work2") for c in command]
    twin = subprocess.run([*command2, "--reuse", str(tmp_path / "work" / "results.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert twin.returncode == 0, twin.stderr[-3000:]
    assert twin.stdout.count("pairs as the") == 6 and "s/step" not in twin.stdout
    assert json.loads(twin.stdout.strip().splitlines()[-1]) == line  # the same runs, the same selection, the same figures


def test_checkpoints_answer_another_test_set_as_training_with_it_would(tmp_path):
    """--checkpoints-from: a command on another test set trains nothing and reports what training
    with that test set reports (the batches never read the test questions), also for a share whose
    runs were reused from another; another training setting, a checkpoint file changed since its run
    wrote it, or (for a run stored without the files' hashes) weights that answer validation
    otherwise than their run are refused by name."""
    from safetensors.torch import load_file, save_file

    model = save_tiny_generator(tmp_path / "tiny")
    for work, test_set in (("main", "main"), ("fifth", "fifth"), ("ninety", "fifth"), ("chain", "fourth"), ("direct", "fifth"), ("bad", "fifth"), ("bad2", "fifth")):
        cached = {}
        for part, asked in zip(("train", "val", "test"), questions(test_set=test_set), strict=True):
            cached[part] = [f"Here is answer {i} about it. It goes on for a while, part {part}." for i in range(6)]
            cached[f"{part}_questions"] = asked[:6]
        (tmp_path / work / "seed-0").mkdir(parents=True)
        (tmp_path / work / "seed-0" / "base-answers-4-min2-seed0.json").write_text(json.dumps(cached))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def bench(work, *extra, majority=("0.8", "0.9")):
        command = [sys.executable, "-m", "benchmarks.maxmin_policy", "--majority", *majority, "--seeds", "0", "--json", "--base-model", str(model),
                   "--limit", "6", "--users", "20", "--steps", "3", "--every", "1", "--batch-size", "4", "--max-new-tokens", "4", "--min-new-tokens", "2",
                   "--work", str(tmp_path / work), *extra]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    trained = bench("main")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "main" / "seed-0" / "checkpoints-maxmin-80" / "step-003.safetensors").exists()
    source = str(tmp_path / "main" / "results.json")
    answered = bench("fifth", "--test-set", "fifth", "--checkpoints-from", source)
    assert answered.returncode == 0, answered.stderr[-3000:]
    assert answered.stdout.count("checkpoints of") == 2 and "s/step" not in answered.stdout  # single and MaxMin at 80/20; 90/10 reuses them
    direct = bench("direct", "--test-set", "fifth")
    assert direct.returncode == 0, direct.stderr[-3000:]
    assert direct.stdout.count("s/step") == 2
    line = json.loads(direct.stdout.strip().splitlines()[-1])
    assert json.loads(answered.stdout.strip().splitlines()[-1]) == line
    ours, theirs = (json.loads((tmp_path / w / "results.json").read_text()) for w in ("fifth", "direct"))
    for a, b in zip(ours, theirs, strict=True):
        assert a["training"] == b["training"] and a["training"]["test_set"] == "fifth"
        assert [(c["step"], c["selected_step"], c["last_test_answers"], c["test_scores"]) for c in a["curve"]] == \
            [(c["step"], c["selected_step"], c["last_test_answers"], c["test_scores"]) for c in b["curve"]]
    # training changed what the policy writes, so checkpoints that loaded nothing could not match the direct run
    assert any(c["last_test_answers"] != r["curve"][1]["last_test_answers"] for r in theirs for c in r["curve"][2:])

    # 90/10 alone: its source runs were reused from the 80/20 ones, whose checkpoints answer for them
    ninety = bench("ninety", "--test-set", "fifth", "--checkpoints-from", source, majority=("0.9",))
    assert ninety.returncode == 0, ninety.stderr[-3000:]
    assert ninety.stdout.count("checkpoints-single-80") == 1 and ninety.stdout.count("checkpoints-maxmin-80") == 1
    assert json.loads(ninety.stdout.strip().splitlines()[-1]) == line["majority"]["0.9"]

    # a set answered from checkpoints passes them on: a third set answers from its results
    chain = bench("chain", "--test-set", "fourth", "--checkpoints-from", str(tmp_path / "fifth" / "results.json"))
    assert chain.returncode == 0, chain.stderr[-3000:]
    assert chain.stdout.count("checkpoints of") == 2 and "s/step" not in chain.stdout

    other = bench("bad", "--test-set", "fifth", "--checkpoints-from", source, "--lr", "0.01")
    assert other.returncode == 2 and "differ in lr" in other.stderr
    folder = tmp_path / "main" / "seed-0" / "checkpoints-maxmin-80"
    for step in (1, 3):  # 2,500 times the run's update: not its weights, nor its answers
        save_file({n: t * 50 for n, t in load_file(str(folder / f"step-00{step}.safetensors")).items()}, str(folder / f"step-00{step}.safetensors"))
    changed = bench("bad", "--test-set", "fifth", "--checkpoints-from", source)
    assert changed.returncode == 2 and "step-001.safetensors is not the file its run wrote" in changed.stderr, changed.stderr[-2000:]
    runs = json.loads(Path(source).read_text())
    for run in runs:  # as stored before the hashes were kept: the last checkpoint answers validation again
        for point in run["curve"]:
            point.pop("checkpoint_sha256", None)
    (tmp_path / "nohash").mkdir()
    (tmp_path / "nohash" / "results.json").write_text(json.dumps(runs))
    wrong = bench("bad2", "--test-set", "fifth", "--checkpoints-from", str(tmp_path / "nohash" / "results.json"))
    assert wrong.returncode == 2 and "answers the validation questions otherwise" in wrong.stderr and "step-003" in wrong.stderr, wrong.stderr[-2000:]


def test_all_test_sets_report_what_the_five_sets_commands_pooled_report(tmp_path):
    """The default `--test-set all` answers each test set as that set's own command does, so its
    answers, scores and contract line are those of the five commands joined by `--pool` (the first
    set trained, the other four answered by its checkpoints)."""
    model = save_tiny_generator(tmp_path / "tiny")
    names = ["main", "confirm", "fresh", "fourth", "fifth"]
    for work in [*names, "all"]:
        cached = {}
        for part, asked in zip(("train", "val", "test"), questions(test_set=work, limit=6), strict=True):
            cached[part] = [f"Here is answer {i % 6} about it. It goes on for a while, part {part}." for i in range(len(asked))]
            cached[f"{part}_questions"] = asked
        (tmp_path / work / "seed-0").mkdir(parents=True)
        (tmp_path / work / "seed-0" / "base-answers-4-min2-seed0.json").write_text(json.dumps(cached))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def bench(work, *extra):
        command = [sys.executable, "-m", "benchmarks.maxmin_policy", "--majority", "0.8", "--seeds", "0", "--json", "--base-model", str(model),
                   "--limit", "6", "--users", "20", "--steps", "3", "--every", "1", "--batch-size", "4", "--max-new-tokens", "4", "--min-new-tokens", "2",
                   "--work", str(tmp_path / work), *extra]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    bench("main", "--test-set", "main")
    for name in names[1:]:
        bench(name, "--test-set", name, "--checkpoints-from", str(tmp_path / "main" / "results.json"))
    everything = bench("all")  # the default test set, trained directly
    assert everything.stdout.count("s/step") == 2
    line = json.loads(everything.stdout.strip().splitlines()[-1])
    pooled = bench("main", "--test-set", "main", "--out", str(tmp_path / "pooled.json"),
                   "--pool", *(str(tmp_path / name / "results.json") for name in reversed(names[1:])))  # any order: pooled in the sets' order
    assert "s/step" not in pooled.stdout  # the first set's runs are reused
    assert json.loads(pooled.stdout.strip().splitlines()[-1]) == line
    summary = json.loads((tmp_path / "pooled.json").read_text())
    assert summary["setting"]["test_set"] == "all" and summary["setting"]["questions"]["test"] == 30
    runs = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in [*names, "all"]}
    for objective in ("single", "maxmin"):
        joined = [next(r for r in runs[name] if r["objective"] == objective)["curve"] for name in names]
        direct = next(r for r in runs["all"] if r["objective"] == objective)["curve"]
        for step, point in enumerate(direct):
            assert point["last_test_answers"] == [a for curve in joined for a in curve[step]["last_test_answers"]]
            assert point["test_scores"] == {g: [x for curve in joined for x in curve[step]["test_scores"][g]] for g in point["test_scores"]}
    # training changed what the policy writes, so the equality is not that of untrained answers
    assert any(c["last_test_answers"] != direct[1]["last_test_answers"] for c in direct[2:])
