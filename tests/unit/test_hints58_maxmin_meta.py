"""Session 58 (hints58): a MaxMin policy's meta.json records the lengths it was trained to read (`max_length`, and
`max_prompt_length`: the prompt's last tokens kept), which `train maxmin` prints too; a policy saved without them
(an earlier release's) loads, its lengths None (not recorded)."""

from __future__ import annotations

import json

from tests.service.tiny import tiny_generator_dir  # noqa: F401 (a fixture)
from tests.unit.clitools import cli, write_jsonl

ROWS = [{"user_id": "u1", "prompt": f"Pick {i}?", "chosen": "yes", "rejected": f"no {i}"} for i in range(3)]


def test_a_saved_policy_says_how_it_was_trained_to_read_prompts(capsys, tmp_path, tiny_generator_dir):  # noqa: F811
    """Before: meta.json held neither length: a loaded policy could not say where its prompts were cut."""
    from transformers import AutoModelForCausalLM

    from pluralign.policy.maxmin import MaxMinConfig, load_policy, read_policy_meta

    out = tmp_path / "mm"
    code, printed, err = cli(capsys, "train", "maxmin", "--pairs", write_jsonl(tmp_path / "pairs.jsonl", ROWS), "--base",
                             str(tiny_generator_dir), "--steps", "1", "--batch-size", "2", "--lora-r", "2", "--quiet", "--out", str(out))
    assert code == 0, err
    report = json.loads(printed.strip().splitlines()[-1])
    config = MaxMinConfig()
    assert (report["max_length"], report["max_prompt_length"]) == (config.max_length, config.max_length // 2) == (160, 80), report
    saved = json.loads((out / "meta.json").read_text())
    assert (saved["max_length"], saved["max_prompt_length"]) == (160, 80), saved
    _, meta = load_policy(out, AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)), expected_base=str(tiny_generator_dir))
    assert (meta.max_length, meta.max_prompt_length) == (160, 80), meta
    # an earlier release's meta.json (the same schema, without the lengths) loads, the lengths not recorded
    del saved["max_length"], saved["max_prompt_length"]
    (out / "meta.json").write_text(json.dumps(saved))
    earlier = read_policy_meta(out)
    assert (earlier.max_length, earlier.max_prompt_length) == (None, None), earlier
    _, meta = load_policy(out, AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)), expected_base=str(tiny_generator_dir))
    assert meta.steps == 1 and meta.max_length is None, meta
