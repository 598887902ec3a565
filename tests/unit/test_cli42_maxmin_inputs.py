"""`pluralign train maxmin` on a new user's inputs (session 42's CLI trial): ties and a --base that is no model."""

from __future__ import annotations

import json

from tests.service.tiny import tiny_generator_dir  # noqa: F401 (a fixture)
from tests.unit.clitools import cli, write_jsonl


def rows(ties: int, strict: int) -> list[dict]:
    return ([{"user_id": "u0", "prompt": f"Same {i}?", "chosen": "yes", "rejected": f"also yes {i}", "tie": True} for i in range(ties)]
            + [{"user_id": "u1", "prompt": f"Pick {i}?", "chosen": "yes", "rejected": f"no {i}"} for i in range(strict)])


def test_a_base_that_is_no_model_folder_is_named_by_its_option(capsys, tmp_path):
    """Before: `pluralign: error: Repo id must use alphanumeric chars, ...: '/x/no-model'` from the
    hub client, naming no option, after the data was read."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(0, 2))
    code, out, err = cli(capsys, "train", "maxmin", "--pairs", pairs, "--base", str(tmp_path / "no-model"), "--out", str(tmp_path / "mm"))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == f"pluralign: error: --base must be `smollm2` or a transformers model folder, got {tmp_path / 'no-model'}", line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_a_file_of_ties_only_is_refused_before_the_model_loads(capsys, tmp_path):
    """Before: the base model was loaded and DPO trained on the ties as if each `chosen` were preferred
    (the README: ties are kept in the records, not trained on). `--base` is a folder with a config.json
    that is no model: loading it would fail, so the data is checked first."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(3, 0))
    code, out, err = cli(capsys, "train", "maxmin", "--pairs", pairs, "--base", str(base), "--out", str(tmp_path / "mm"))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == (f"pluralign: error: --pairs {pairs}: no strict comparisons to train on, only 3 ties "
                    "(ties are not trained on)"), line
    assert not (tmp_path / "mm").exists()


def test_ties_beside_strict_comparisons_are_not_trained_on(capsys, tmp_path, tiny_generator_dir):  # noqa: F811
    """Before: `"pairs": 5` for 3 strict comparisons and 2 ties: DPO took every row, ties included."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(2, 3))
    code, out, err = cli(capsys, "train", "maxmin", "--pairs", pairs, "--base", str(tiny_generator_dir), "--steps", "1",
                         "--batch-size", "2", "--lora-r", "2", "--quiet", "--out", str(tmp_path / "mm"))
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["pairs"], report["ties_skipped"]) == (3, 2), report
    assert json.loads((tmp_path / "mm" / "metrics.json").read_text())["pairs"] == 3


def test_a_lora_trainer_s_stderr_has_no_dependency_deprecation_warning(capsys, tmp_path, tiny_generator_dir):  # noqa: F811
    """Before: every LoRA command (train maxmin, fspo, adapter) wrote transformers' FutureWarning
    "`is_gradient_checkpointing` is deprecated and will be removed in v6" (peft 0.21 reads that attribute
    of each model), two lines about code not ours that a user cannot act on, above the JSON line."""
    import warnings

    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows(0, 2))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # as python shows a warning outside pytest: once per place
        code, _, err = cli(capsys, "train", "maxmin", "--pairs", pairs, "--base", str(tiny_generator_dir), "--steps", "1",
                           "--batch-size", "2", "--lora-r", "2", "--quiet", "--out", str(tmp_path / "mm"))
    assert code == 0, err
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)], [str(w.message) for w in seen]


def test_load_policy_names_what_it_found_where_a_maxmin_policy_should_be(tmp_path):
    """`pluralign.policy.maxmin.load_policy` on what is not this release's MaxMin policy. Before: a later
    release's said `Object contains unknown field `new_field`` (msgspec, no file named); a PAL
    checkpoint `Object contains unknown field `encoder_id``; a missing folder `[Errno 2] No such file or
    directory: 'x/meta.json'`. The PAL and EM loaders name the folder, the kind found, and a later release.
    No model is read: each is refused from meta.json alone."""
    import pytest

    from pluralign.policy.maxmin import load_policy

    later, pal, empty = tmp_path / "later", tmp_path / "pal", tmp_path / "empty"
    for folder in (later, pal, empty):
        folder.mkdir()
    (later / "meta.json").write_text(json.dumps({"schema_version": 2, "kind": "maxmin-lora", "base_model": "b", "objective": "maxmin",
                                                 "heads": 2, "steps": 1, "beta": 0.1, "lora_r": 8, "new_field": 1}))
    (pal / "meta.json").write_text(json.dumps({"schema_version": 1, "encoder_id": "e", "variant": "a", "k": 2}))
    with pytest.raises(ValueError, match=r"^.*later/meta.json: maxmin-lora schema 2, written by a later pluralign release"):
        load_policy(later, None)
    with pytest.raises(ValueError, match=r"^.*pal holds a 'PAL checkpoint' artifact, not a MaxMin policy \(maxmin-lora\)$"):
        load_policy(pal, None)
    with pytest.raises(FileNotFoundError, match=r"^.*empty is not a MaxMin policy \(maxmin-lora\): no meta.json$"):
        load_policy(empty, None)
