"""`pluralign train adapter`'s folder options, as a new user gets them wrong (session 42's CLI trial).

Each run is in-process (`tests.unit.clitools.cli`) and gives `--base` a folder that is not a model, so a
check made only after the base model is loaded shows up as the --base error instead: no model is loaded.
"""

from __future__ import annotations

import json

from tests.service.tiny import tiny_generator_dir  # noqa: F401 (a fixture)
from tests.unit.clitools import cli, write_jsonl

ROWS = [{"user_id": "ann", "prompt": f"Tea or coffee, {i}?", "chosen": "Tea.", "rejected": "Coffee."} for i in range(6)]


def adapter_argv(tmp_path, *extra: str) -> list[str]:
    data = write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    return ["train", "adapter", "--user", "ann", "--data", data, "--base", str(tmp_path / "no-model"), "--steps", "1", *extra]


def test_a_registry_that_is_a_file_is_named_before_the_model_loads(capsys, tmp_path):
    """Before: the base model was loaded and the adapter trained, then the save said only
    `pluralign: error: File exists: reg` (exit 2), naming no option, the training lost."""
    registry = tmp_path / "reg"
    registry.write_text("my notes\n")
    code, out, err = cli(capsys, *adapter_argv(tmp_path, "--registry", str(registry)))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == f"pluralign: error: --registry {registry}: {registry} is a file, not a folder", line
    assert registry.read_text() == "my notes\n"


def test_a_from_fspo_folder_that_is_no_adapter_is_named_by_its_option(capsys, tmp_path):
    """Before: `pluralign: error: DIR is not a pluralign adapter (no pluralign.json)`, after the base
    model had loaded, naming no option (--registry and --from-fspo both take adapter folders)."""
    fspo = tmp_path / "fspo"
    fspo.mkdir()
    code, out, err = cli(capsys, *adapter_argv(tmp_path, "--registry", str(tmp_path / "reg"), "--from-fspo", str(fspo)))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == f"pluralign: error: --from-fspo {fspo} is not a pluralign adapter (no pluralign.json)", line
    assert not (tmp_path / "reg").exists()


def test_an_fspo_adapter_of_a_later_release_says_so(capsys, tmp_path):
    """Before: `DIR: adapter schema version 99, this code reads 1`, where a PAL checkpoint or an EM
    mixture of a later release says it is one and what to do (`pluralign.files.other_schema`)."""
    fspo = tmp_path / "fspo"
    fspo.mkdir()
    (fspo / "pluralign.json").write_text(json.dumps({"schema_version": 99, "kind": "fspo", "shots": 4}))
    code, out, err = cli(capsys, *adapter_argv(tmp_path, "--registry", str(tmp_path / "reg"), "--from-fspo", str(fspo)))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == (f"pluralign: error: --from-fspo {fspo}: adapter schema 99, written by a later pluralign release "
                    "(this one reads schema 1): run that release, or retrain with this one"), line


def test_a_user_id_with_a_letter_outside_ascii_is_told_the_rule_it_breaks(capsys, tmp_path):
    """`train adapter --user José`: José's comparisons train PAL and EM from a file, but a user id of the
    service (and so of an adapter) is ASCII. Before: "a user id is 1-128 characters: letters, digits
    and ...", which 'José' is, by every reading but the regex's."""
    data = write_jsonl(tmp_path / "prefs.jsonl", [{**row, "user_id": "José"} for row in ROWS])
    code, out, err = cli(capsys, "train", "adapter", "--user", "José", "--data", data, "--registry", str(tmp_path / "reg"))
    assert code == 2 and out == "", err
    line = err.strip().splitlines()[-1]
    assert line.startswith("pluralign: error: argument --user: 'José': a user id is 1-128 characters: ASCII letters, "), line


def test_an_adapter_s_counts_are_whole_numbers_in_its_report_and_description(capsys, tmp_path, tiny_generator_dir):  # noqa: F811
    """Before: `"steps": 1.0, "comparisons": 5.0, "held_out": 1.0` in the JSON line and pluralign.json
    (every metric was cast to float), where train maxmin and train pal report `"steps": 1`."""
    data = write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    code, out, err = cli(capsys, "train", "adapter", "--user", "ann", "--data", data, "--base", str(tiny_generator_dir),
                         "--registry", str(tmp_path / "reg"), "--steps", "1", "--batch-size", "2")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    described = json.loads((tmp_path / "reg" / "default" / "ann" / "pluralign.json").read_text())["metrics"]
    for counts in (report, described):
        assert [type(counts[k]) for k in ("steps", "comparisons", "held_out")] == [int, int, int], counts
        assert (counts["steps"], counts["comparisons"], counts["held_out"]) == (1, 5, 1), counts


def test_another_user_s_adapter_given_as_from_fspo_is_refused(capsys, tmp_path):
    """--from-fspo takes an FSPO adapter (`pluralign train fspo --out`), and --registry's folders hold users'
    adapters: one of those given by mistake (`--from-fspo reg/acme/bob`) started ann's adapter from bob's
    weights, trained on bob's comparisons, and kept them in ann's after bob's DELETE removed his. Before: accepted
    (here the run went on to the --base error); now refused before the data or model is read."""
    bob = tmp_path / "reg" / "acme" / "bob"
    bob.mkdir(parents=True)
    (bob / "pluralign.json").write_text(json.dumps({"schema_version": 1, "kind": "user", "base_model": "tiny", "shots": 0,
                                                    "data_version": "abc", "tenant": "acme", "user": "bob"}))
    code, out, err = cli(capsys, *adapter_argv(tmp_path, "--registry", str(tmp_path / "reg2"), "--from-fspo", str(bob)))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == (f"pluralign: error: --from-fspo {bob} holds a user's adapter (user 'bob', tenant 'acme'), "
                    "not an FSPO adapter (`pluralign train fspo --out`)"), line
