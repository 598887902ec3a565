"""A trainer's --out on a folder that holds other files (break session 21b): `train fspo` replaced
the whole folder with its adapter (save_adapter's rename swap), deleting what was there, after
training; `train maxmin` wrote its meta.json over another artifact's. Both are refused before any
training now, and an earlier artifact of their own kind is still replaced."""

from __future__ import annotations

import json
import random

import pytest

from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference
from pluralign.policy.adapters import read_meta
from tests.unit.clitools import cli


@pytest.fixture
def base_and_data(make_tiny_lm, tokenizer, tmp_path):
    base = tmp_path / "tiny"
    make_tiny_lm("tiny-out").save_pretrained(base)
    tokenizer.save_pretrained(base)
    rng = random.Random(0)
    rows = [Preference(user_id=f"user{u}", prompt="Pick one?", chosen=["yes", "no"][u % 2], rejected=["no", "yes"][u % 2] + rng.choice("!.?"))
            for u in range(10) for _ in range(6)]
    write_jsonl(rows, tmp_path / "prefs.jsonl")
    return base, tmp_path / "prefs.jsonl"


def fspo(base, data, out) -> list[str]:
    return ["train", "fspo", "--population", "file", "--data", str(data), "--base", str(base), "--shots", "1", "--steps", "1",
            "--batch-size", "1", "--episodes", "1", "--eval-per-user", "1", "--out", str(out)]


def test_train_fspo_never_replaces_a_folder_of_other_files(base_and_data, tmp_path, capsys):
    """`pluralign train fspo --out ~/work` on a folder of one's own files trained, then swapped the
    folder for its adapter: thesis.txt was gone, exit 0."""
    base, data = base_and_data
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of it")
    code, out, err = cli(capsys, *fspo(base, data, mine))
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.strip() == f"pluralign: error: --out: {mine} holds files that are not a LoRA adapter's (thesis.txt): give a new or empty folder"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.txt"] and (mine / "thesis.txt").read_text() == "years of it"

    adapter = tmp_path / "fspo"
    for _ in range(2):  # a new folder, then the earlier adapter replaced
        code, _, err = cli(capsys, *fspo(base, data, adapter))
        assert code == 0, err
    assert read_meta(adapter).kind == "fspo"


def test_train_maxmin_never_writes_over_another_artifact(base_and_data, tmp_path, tiny_pal_like, capsys):
    """`pluralign train maxmin --out DIR` on a PAL checkpoint wrote its meta.json over the
    checkpoint's (the checkpoint no longer loaded: 'holds a maxmin-lora artifact')."""
    base, data = base_and_data
    before = {p.name: p.read_bytes() for p in tiny_pal_like.iterdir()}
    code, out, err = cli(capsys, "train", "maxmin", "--pairs", str(data), "--base", str(base), "--steps", "1", "--batch-size", "2",
                         "--quiet", "--out", str(tiny_pal_like))
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.startswith(f"pluralign: error: --out: {tiny_pal_like} holds files that are not a MaxMin policy's"), err
    assert {p.name: p.read_bytes() for p in tiny_pal_like.iterdir()} == before


@pytest.fixture
def tiny_pal_like(tmp_path):
    """A folder laid out as a PAL checkpoint (its files' bytes do not matter here: they must stay)."""
    folder = tmp_path / "pal"
    folder.mkdir()
    for name, data in (("meta.json", b'{"schema_version": 1}'), ("model.safetensors", b"weights"), ("user_weights.json", b"{}")):
        (folder / name).write_bytes(data)
    return folder


# --eval-users 0 stays in the default suite (review tail61b): its own case of the slice (`[: 0]`, no user scored); read
# as "all" (`[: args.eval_users or None]`) it failed only here
@pytest.mark.parametrize("eval_users", ["1", "0"])
def test_train_fspo_scores_only_the_unseen_users_asked_for(base_and_data, tmp_path, capsys, eval_users):
    """--eval-users below the number of unseen users (the default 20 on a file of 100+ users, whose
    fifth is unseen) was a traceback ending in KeyError: 'user5': the query episodes were built for
    every unseen user but the shots only for the first --eval-users of them."""
    base, data = base_and_data
    code, out, err = cli(capsys, *fspo(base, data, tmp_path / "fspo"), "--eval-users", eval_users)
    assert code == 0 and "Traceback" not in err, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["unseen_users"] == int(eval_users) and report["unseen_pairs"] == int(eval_users)


def cut_short(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


DAMAGE = {  # a damaged copy of an FSPO adapter, and what the error then says of it
    "description cut short": ("pluralign.json", cut_short, "pluralign.json: not an adapter description: "),
    "a field of another type": ("pluralign.json", lambda p: p.write_text(p.read_text().replace('"shots": 1', '"shots": "one"')),
                                "pluralign.json: not an adapter description: `shots`: must be an integer, not text"),
    "weights cut short": ("adapter_model.safetensors", cut_short, ": the adapter's weights cannot be loaded (truncated, or for another model)"),
}


# a field of another type: the description's reader as for a description cut short (its message's wording beside it), slow
# (`make test-artifacts`); the description cut short and the weights cut short stay in the default suite
@pytest.mark.parametrize("damage", [pytest.param(d, marks=pytest.mark.slow) if d == "a field of another type" else d for d in DAMAGE])
def test_a_damaged_fspo_adapter_is_a_one_line_error_naming_it(base_and_data, tmp_path, capsys, damage):
    """`train adapter --from-fspo DIR` on a damaged adapter said `pluralign: error: Input data was
    truncated` or `Expected `int`, got `str` - at `$.shots`` (no file named), or printed a traceback
    ending in safetensors' SafetensorError (exit 1) for weights cut short (a crash mid-copy)."""
    base, data = base_and_data
    fspo_dir = tmp_path / "fspo"
    assert cli(capsys, *fspo(base, data, fspo_dir))[0] == 0
    name, spoil, said = DAMAGE[damage]
    spoil(fspo_dir / name)
    code, out, err = cli(capsys, "train", "adapter", "--user", "user0", "--data", str(data), "--registry", str(tmp_path / "adapters"),
                         "--from-fspo", str(fspo_dir), "--base", str(base), "--steps", "1")
    assert code == 2 and out == "" and "Traceback" not in err, err
    (line,) = [x for x in err.strip().splitlines() if x.startswith("pluralign")]
    assert line.startswith(f"pluralign: error: --from-fspo {fspo_dir}") and said in line, line
