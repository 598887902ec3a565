"""What an ML researcher using pluralign from the command line met in session trial46a."""

from __future__ import annotations

import pytest

from tests.service.tiny import tiny_generator_dir  # noqa: F401 (a fixture)
from tests.unit.clitools import cli


@pytest.mark.parametrize(("options", "named"), [
    (("--query-size", "100000"), "--query-size 100000"),
    (("--groups", "2", "--unseen-per-group", "100000"), "--unseen-per-group 100000"),
    (("--groups", "64", "--unseen-per-group", "50", "--query-size", "50"), "--groups 64"),
])
def test_eval_refuses_a_persona_population_too_large_to_hold_in_memory(capsys, shared_data, options, named):
    """`pluralign eval --model bt --protocol persona --query-size 100000` was killed by the kernel (exit 137, no
    message): 40 new users x 100,050 comparisons each, embedded as (N, 384) tensors, wanted ~30 GB (100,000 query
    comparisons in all took 1.5 GB RSS and 66 s). A population over MAX_UNSEEN_COMPARISONS is a usage error naming the
    options and the count, before anything is loaded; the recorded run (4 x 50 x (50 + 50)) stays far inside it."""
    code, out, err = cli(capsys, "eval", "--model", "bt", "--protocol", "persona", *options, "--json",
                         "--data-dir", str(shared_data))
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("pluralign: error: ") and named in line and "comparisons" in line, err


@pytest.mark.parametrize(("rows", "named"), [
    ([{"user_id": "u0", "cluster": 0, "posterior": [-5.0, 6.0]}], r"line 1: posterior \[-5\.0, 6\.0\] is not"),
    ([{"user_id": "u0", "cluster": 0, "posterior": [0.0, 0.0]}], r"line 1: posterior \[0\.0, 0\.0\] is not"),
    ([{"user_id": "u0", "cluster": 0, "posterior": [1e308, 1e308]}], "line 1: posterior"),
    ([{"user_id": "u0", "cluster": 0, "posterior": [1.0, 0.0]}, {"user_id": "u0", "cluster": 1, "posterior": [0.0, 1.0]}],
     "line 2: user 'u0' again"),
    ([{"user_id": " ", "cluster": 0, "posterior": [1.0, 0.0]}], "line 1: user_id"),
])
def test_an_em_artifact_whose_memberships_are_damaged_is_refused_naming_the_line(tmp_path, rows, named):
    """An EM artifact's users.jsonl of a posterior that is no distribution over the heads (negative, all zero, or
    not finite once read), or a user twice, loaded: `prob_seen` then mixed the heads' probabilities with those
    weights, -5 x p0 + 6 x p1 (a "probability" of 3.4 for a comparison), or 0 for every comparison of the user, and
    the second row of a user silently replaced the first. Found by damaging a `pluralign train em --out` artifact."""
    import msgspec
    import torch

    from pluralign.reward.em import EMMixture
    from pluralign.reward.features import PairBatch
    from tests.unit.test_break18_cli import MINILM_ID, tiny_em

    folder = tiny_em(tmp_path / "em", dim=4, encoder_id=MINILM_ID)
    (folder / "users.jsonl").write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in rows))
    with pytest.raises(ValueError, match=named) as caught:
        model = EMMixture.load(folder, MINILM_ID)
        x = torch.ones(1, 4)
        print(model.prob_seen(PairBatch(prompt=x, chosen=x, rejected=-x, user=torch.zeros(1, dtype=torch.long),
                                        group=["g"], users=["u0"])))
    assert "users.jsonl" in str(caught.value)


def test_a_pal_checkpoint_whose_user_logits_overflow_is_refused_naming_the_user(tmp_path):
    """A user's logits in user_weights.json that are no float32 (1e300: inf once read) loaded; the first reward of that
    user then failed with "`user_logits` is not finite (NaN or inf)", naming neither the file nor the user."""
    import json

    from pluralign.reward.pal import load_pal
    from tests.unit.test_break18_cli import tiny_pal

    folder = tiny_pal(tmp_path / "pal", input_dim=4)
    table = json.loads((folder / "user_weights.json").read_text())
    table["users"]["u1"]["logits"] = [1e300, 0.0]
    (folder / "user_weights.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"user_weights\.json: user 'u1'.*not finite"):
        load_pal(folder)


def _ukp_with_a_pair_of_one_text(folder):
    """A UKPConvArg1 folder of two pairs, each judged by w1 and w2: p1 compares two arguments, p2 one argument with
    itself (15 of UKP's 16,927 pairs do: 75 judgments, 5 of them not ties, e.g. pair 33187_33186)."""
    from tests.unit.test_break19 import UKP_PAIR

    def pair(pair_id, arg1, arg2):
        one = UKP_PAIR.format(arg2=f"<arg2><text>{arg2}</text><stance>s</stance></arg2>")
        two = one.replace("<value>a1</value><turkID>w1</turkID>", "<value>a2</value><turkID>w1</turkID></mTurkAssignment>"
                          "<mTurkAssignment><value>equal</value><turkID>w2</turkID>")
        return two.replace("<id>p1</id>", f"<id>{pair_id}</id>").replace("<text>A</text>", f"<text>{arg1}</text>")

    folder.mkdir()
    (folder / "topic.xml").write_text(f'<?xml version="1.0"?><list>{pair("p1", "A", "B")}{pair("p2", "Same.", "Same.")}</list>')
    return str(folder)


def test_ukp_export_leaves_out_the_judgments_of_an_argument_against_itself(capsys, tmp_path):
    """README's own two commands, `pluralign data export --source ukp_convarg1 ... --out ukp.jsonl` and then
    `pluralign eval --model pal-a+residual --protocol file --data ukp.jsonl --json`, failed: the export wrote UKP's 75
    judgments of an argument against the same text, and the file reader refuses each (`line 18298, field `rejected`:
    is the same answer as `chosen``). The export leaves them out and says how many; `data stats` still counts the set
    as published (84,445 judgments) and says how many of them are such."""
    ukp = _ukp_with_a_pair_of_one_text(tmp_path / "ukp")
    code, out, err = cli(capsys, "data", "stats", "--source", "ukp_convarg1", "--path", ukp, "--json")
    assert code == 0 and '"judgments":4' in out and '"same_answer_judgments":2' in out, out + err
    for suffix in (".jsonl", ".parquet"):
        exported = str(tmp_path / f"ukp{suffix}")
        code, out, err = cli(capsys, "data", "export", "--source", "ukp_convarg1", "--path", ukp, "--out", exported)
        assert code == 0 and '"records":2' in out and '"left_out_same_answer":2' in out, out + err
        assert "left out 2 judgments of 1 pair (p2)" in err, err
        code, out, err = cli(capsys, "data", "stats", "--source", suffix[1:], "--path", exported, "--json")
        assert code == 0 and '"judgments":2' in out, err


def test_load_policy_takes_a_str_folder_and_names_a_damaged_adapter(tmp_path, capsys, tiny_generator_dir):  # noqa: F811
    """`load_policy(folder: str | Path, ...)`, reloading a `pluralign train maxmin --out` policy: a str folder was a
    TypeError ("unsupported operand type(s) for /: 'str' and 'str'"), and an adapter_model.safetensors cut short was
    safetensors' own SafetensorError ("incomplete metadata, file not fully covered"), naming no file."""
    from transformers import AutoModelForCausalLM

    from pluralign.policy.maxmin import load_policy
    from tests.unit.test_left22a_cli import _pairs

    out = tmp_path / "policy"
    code, _, err = cli(capsys, "train", "maxmin", "--pairs", _pairs(tmp_path), "--base", str(tiny_generator_dir), "--steps", "1",
                       "--batch-size", "2", "--lora-r", "2", "--quiet", "--out", str(out))
    assert code == 0, err
    base = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
    _, meta = load_policy(str(out), base, expected_base=str(tiny_generator_dir))
    assert meta.kind == "maxmin-lora"
    weights = out / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
    with pytest.raises(ValueError, match=r"policy/adapter/adapter_model\.safetensors.*truncated"):
        load_policy(out, base, expected_base=str(tiny_generator_dir))
    # session reviewtrial46a: refused before peft touches the model (`adapters.check_files`), not after it had put
    # 108 LoRA modules into the caller's base model, left there half-made when the weights failed to load
    assert not [name for name, _ in base.named_modules() if "lora_" in name]
    (out / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(ValueError, match=r"policy/adapter lacks adapter_config\.json"):
        load_policy(out, base, expected_base=str(tiny_generator_dir))


def test_read_rows_takes_numpy_scalars_in_row_dicts_as_a_dataframe_gives_them():
    """Rows built in a loop over numpy arrays (`{"user_id": ids[i], "margin": margins[i], "tie": ties[i]}`) were refused:
    "row 1, field `user_id`: Expected `str`, got `numpy.int64`" (so `numpy.bool`, `numpy.float32`), though the same rows
    as a pandas DataFrame loaded (user 7 as "7"), and a Python int user id loads from a list too."""
    import numpy as np
    import pandas as pd

    from pluralign.data.io import read_rows

    rows = [{"user_id": np.int64(7), "prompt": "Which?", "chosen": "Short.", "rejected": "A longer one.", "margin": np.float32(0.5),
             "tie": np.bool_(False), "score_chosen": np.float64(2.0), "created_at": np.int32(1700000000)}]
    records, _ = read_rows(rows)
    as_frame, _ = read_rows(pd.DataFrame(rows))
    assert records == as_frame
    assert (records[0].user_id, records[0].margin, records[0].tie, records[0].created_at) == ("7", 0.5, False, 1700000000)
    assert type(records[0].margin) is float


@pytest.mark.parametrize(("users", "fraction", "training"), [(10, "0.8", 8 - 6), (10, "0.4", 6), (10, "0.2", 8), (1, "0.2", 1), (2, "0.9", 1)])
def test_train_fspo_holds_out_the_share_of_users_unseen_fraction_asks_for(capsys, tmp_path, users, fraction, training):
    """`train fspo --population file --unseen-fraction F` held out every round(1/F)-th user, at least every 2nd: 0.8 (or
    0.99) held out half the users, 0.4 half too, and a file of one user held it out, leaving no training user ("no
    training user ... has that many (at most 0, among 0 training users)"). It holds out round(F x users), evenly
    spread, at least one and never every user. The count is read off the refusal of --shots 50, before any model loads."""
    from tests.unit.clitools import write_jsonl

    rows = [{"user_id": f"u{u}", "prompt": f"Pick {i}?", "chosen": "yes", "rejected": f"no {i}"} for u in range(users) for i in range(3)]
    code, out, err = cli(capsys, "train", "fspo", "--population", "file", "--data", write_jsonl(tmp_path / "p.jsonl", rows),
                         "--unseen-fraction", fraction, "--shots", "50", "--out", str(tmp_path / "fspo"))
    assert code == 2 and out == "", err
    assert f"(at most {3 if training else 0}, among {training} training users)" in err, err


@pytest.mark.parametrize("model", ["bt", "per-user-bt"])
def test_eval_refuses_k_for_a_model_without_components(capsys, tmp_path, model):
    """`pluralign eval --model bt --k 2 ...` trained and reported as if --k were not given (the registry dropped it);
    options that would be ignored are usage errors here (--groups with a file, --k-max beside --k). So is `k` to
    `build_model` for such a model."""
    from pluralign.reward.registry import build_model
    from tests.unit.clitools import write_jsonl

    data = write_jsonl(tmp_path / "p.jsonl", [{"user_id": f"u{u}", "prompt": f"Q{i}?", "chosen": "a", "rejected": "b"}
                                                      for u in range(3) for i in range(6)])
    code, out, err = cli(capsys, "eval", "--model", model, "--protocol", "file", "--data", data, "--k", "2", "--json")
    assert code == 2 and out == "" and "--k 2: the number of mixture components" in err and f"--model {model} has none" in err, err
    with pytest.raises(ValueError, match=rf"`k` \(2\) is a mixture's number of components, and {model} has none"):
        build_model(model, k=2)
    assert build_model(model).name == model
