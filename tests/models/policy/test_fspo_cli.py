"""`pluralign train fspo` then `pluralign train adapter --from-fspo`, on a tiny model saved to disk."""

from __future__ import annotations

import json
import random

from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference
from pluralign.policy.adapters import AdapterPool, AdapterRegistry, ModelHost, read_meta
from training.cli import main


def test_train_fspo_then_a_user_adapter(make_tiny_lm, tokenizer, tmp_path, capsys):
    base = tmp_path / "tiny"
    make_tiny_lm("tiny-cli").save_pretrained(base)
    tokenizer.save_pretrained(base)
    rng = random.Random(0)
    rows = [
        Preference(
            user_id=f"user{u}",
            prompt="Pick one?",
            chosen=["yes", "no"][u % 2],
            rejected=["no", "yes"][u % 2] + rng.choice("!.?"),
        )
        for u in range(10)
        for _ in range(8)
    ]
    write_jsonl(rows, tmp_path / "prefs.jsonl")

    fspo = tmp_path / "fspo"
    args = ["train", "fspo", "--population", "file", "--data", str(tmp_path / "prefs.jsonl"), "--base", str(base)]
    # each user's 8 rows are 3 different comparisons: an episode takes 1 shot + 2 held out (breakE63: 2 + 2 drew a
    # comparison twice, shown as a shot of its own held-out copy)
    assert main(args + ["--shots", "1", "--steps", "3", "--batch-size", "2", "--episodes", "4", "--queries", "2", "--lora-layers", "1", "--lr", "1e-2", "--out", str(fspo)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["unseen_users"] == 2 and 0 <= report["unseen_reward_acc"] <= 1
    meta = read_meta(fspo)
    base_id = "tiny"  # a model folder's id is its name, as in the service
    assert (meta.kind, meta.shots, meta.base_model) == ("fspo", 1, base_id)
    assert (fspo / "adapter_model.safetensors").exists()
    assert json.loads((fspo / "adapter_config.json").read_text())["base_model_name_or_path"] == base_id

    registry = tmp_path / "adapters"
    args = ["train", "adapter", "--user", "user3", "--tenant", "acme", "--data", str(tmp_path / "prefs.jsonl")]
    args += ["--registry", str(registry), "--from-fspo", str(fspo), "--base", str(base), "--steps", "2"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # a fifth held out, 8 // 5 = 1, with its repeats (trial44): user3's rows are 3 comparisons ("no" against "yes!",
    # "yes." or "yes?"), and the one first in the seed-0 shuffle was given twice: both held out, none trained on
    mine = [r for r in rows if r.user_id == "user3"]
    random.Random(0).shuffle(mine)
    first = [r for r in mine if r.rejected == mine[0].rejected]
    assert (report["held_out"], report["comparisons"]) == (len(first), 8 - len(first)) == (2, 6), report
    meta = AdapterRegistry(registry).meta("acme", "user3")
    assert (meta.kind, meta.shots, meta.parent, meta.user) == ("user", 1, read_meta(fspo).data_version, "user3")

    # the served model picks the user's adapter, and FSPO for everyone else
    pool = AdapterPool(ModelHost(make_tiny_lm("tiny-cli")), AdapterRegistry(registry), base_id, 1 << 24, fallback=fspo)
    assert pool.adapters_for([("acme", "user3"), ("acme", "user4")])[1] == "fallback"


def test_the_same_seed_trains_the_same_adapter(make_tiny_lm, tokenizer, tmp_path, capsys):
    """`pluralign train fspo` and `train adapter` with one seed give the same weights, whatever the
    process drew before (before: peft drew the LoRA's init from the process's torch RNG, so two runs
    of one command in a job runner's process trained different adapters)."""
    import torch
    from safetensors.torch import load_file

    base = tmp_path / "tiny"
    make_tiny_lm("tiny-cli").save_pretrained(base)
    tokenizer.save_pretrained(base)
    rows = [Preference(user_id=f"user{u}", prompt=f"Pick one {i}?", chosen=["yes", "no"][u % 2], rejected=["no", "yes"][u % 2])
            for u in range(6) for i in range(6)]
    write_jsonl(rows, tmp_path / "prefs.jsonl")

    def weights(kind, draws):
        torch.manual_seed(draws)
        torch.rand(100 * draws)  # whatever the process did before
        out = tmp_path / f"{kind}-{draws}"
        if kind == "fspo":
            args = ["train", "fspo", "--population", "file", "--data", str(tmp_path / "prefs.jsonl"), "--base", str(base), "--shots", "1",
                    "--steps", "2", "--batch-size", "2", "--episodes", "4", "--queries", "1", "--lora-layers", "1", "--out", str(out)]
        else:
            args = ["train", "adapter", "--user", "user1", "--data", str(tmp_path / "prefs.jsonl"), "--registry", str(out), "--base", str(base), "--steps", "2"]
        assert main(args + ["--seed", "5"]) == 0
        capsys.readouterr()
        return load_file(next(out.rglob("adapter_model.safetensors")))

    for kind in ("fspo", "adapter"):
        first, second = weights(kind, 1), weights(kind, 7)
        assert first.keys() == second.keys() and any("lora_A" in k for k in first)
        assert all(torch.equal(first[k], second[k]) for k in first), kind
