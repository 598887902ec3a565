"""`pluralign.policy.maxmin.train_maxmin`, the MaxMin policy's loop, as FSPO's and PAL's: nothing to train on is a
ValueError naming `pairs`, and a loss that turns NaN or inf stops the run, naming the step and the loss, and
`pluralign train maxmin` then saves nothing."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from pluralign.data.record import Preference
from pluralign.policy.maxmin import MaxMinConfig, tokenize_pairs, train_maxmin, with_lora


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from tests.service.tiny import save_tiny_generator

    return save_tiny_generator(tmp_path_factory.mktemp("tiny-base"))


def _tiny(tiny_base):
    from training.commands.train_maxmin import load_base

    return load_base(str(tiny_base))


def test_no_pairs_is_refused_naming_them_the_model_untouched(tiny_base, one_torch_thread):
    """Before: an IndexError ("tensors used as indices must be long, int, byte or bool tensors") from the loop."""
    base, tokenizer = _tiny(tiny_base)
    pairs = tokenize_pairs([Preference(user_id="u", prompt="Hi?", chosen="Hello.", rejected="Go away.")], tokenizer)
    none = dataclasses.replace(pairs, **{f.name: getattr(pairs, f.name)[:0] for f in dataclasses.fields(pairs)})
    config = MaxMinConfig(steps=2, batch_size=2, target_modules=("q_proj",))
    policy = with_lora(base, config)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    with pytest.raises(ValueError, match=r"^`pairs`: no comparisons to train on"):
        train_maxmin(policy, none, config)
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in before.items())


def test_train_maxmin_whose_loss_turns_nan_fails_naming_the_step_and_saves_nothing(tmp_path, capsys, tiny_base, one_torch_thread):
    """Before: `--lr 1e30` trained into NaN weights, saved the policy and exited 0 with a NaN `final_loss`, as
    `train adapter` did before session artifact38."""
    from tests.unit.clitools import cli, write_jsonl

    data = write_jsonl(tmp_path / "p.jsonl", [
        {"user_id": "u0", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}."}
        for i in range(8)])
    out = tmp_path / "policy"
    code, printed, err = cli(capsys, "train", "maxmin", "--pairs", data, "--objective", "single", "--base", str(tiny_base),
                             "--steps", "4", "--batch-size", "4", "--lr", "1e30", "--quiet", "--out", str(out))
    assert code == 2 and printed == "" and "Traceback" not in err, (code, printed, err[-2000:])
    line = err.strip().splitlines()[-1]
    assert re.match(r"pluralign: error: training diverged at step [1-4] of 4: the loss is (nan|inf|-inf) \(lr=1e\+30\); "
                    r"nothing was kept", line), line
    assert not out.exists() or list(out.iterdir()) == []
