"""A first-day user's preference files and key listings, through the `pluralign` command run by its main in this
process with a user's argv (`in_this_process`; a subprocess each, as a shell runs it, cost ~5 CPU-s of the default
suite's: speedC63): each mistake is one line naming the argument and what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

ROW = {"user_id": "ann", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}


def pluralign(cwd, *argv: str) -> subprocess.CompletedProcess:
    """`pluralign argv...` as a shell runs it (a process of its own, no PLURALIGN_ variable set), from `cwd`: for the
    modules that import it to check what only a process shows (an exit, a peak RSS, a file's own reading)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "training.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def here(monkeypatch, capsys):
    """`here(cwd, *argv)`: `in_this_process` (speedC63: a process of its own each, as `pluralign` above runs it, cost
    ~5 CPU-s of the default suite's; `training.cli.main` with the same argv, from the same folder, reads the same files
    and says the same lines)."""
    return lambda cwd, *argv: in_this_process(monkeypatch, capsys, cwd, *argv)


def in_this_process(monkeypatch, capsys, cwd, *argv: str) -> subprocess.CompletedProcess:
    """`pluralign`'s result, run by `training.cli.main` in this process from `cwd`, no PLURALIGN_ variable set (as
    `pluralign` runs it): for a command whose process would only import torch before its error (~1-3 CPU-s apiece)."""
    from tests.unit.test_break37_cli import in_process

    for name in [n for n in os.environ if n.startswith("PLURALIGN_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(cwd)
    code, out, err = in_process(capsys, *argv)
    return subprocess.CompletedProcess(["pluralign", *argv], code, out, err)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("form", ["datasets-array", "pretty-array"])
def test_a_json_array_file_is_named_as_one_with_what_to_do(tmp_path, form, request, here):
    """A `.json` file holding one JSON array (what `Dataset.to_json(..., lines=False)` and
    `json.dump(rows, f, indent=2)` write). Before: `line 1: expected a JSON object (--skip-bad skips
    bad rows)` or `line 1: malformed JSON (Input data was truncated) (--skip-bad skips bad rows)`,
    and --skip-bad then skipped every line and loaded nothing."""
    path = tmp_path / "prefs.json"
    if form == "datasets-array":
        request.getfixturevalue("hf").run("datasets.Dataset.from_list(rows).to_json(path, lines=False)", rows=[ROW, ROW], path=str(path))
    else:
        path.write_text(json.dumps([ROW, ROW], indent=2))
    line = one_error_line(here(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path)))
    assert line.startswith(f"pluralign: error: --path {path}: line 1"), line
    assert "JSON array: the rows go one JSON object a line (JSON lines)" in line and "jq -c '.[]'" in line and "--skip-bad" not in line, line


def test_several_objects_on_one_line_are_named_with_what_to_do(tmp_path, here):
    """Rows joined on one line (a file whose newlines were lost). Before: `line 1: malformed JSON (JSON
    is malformed: trailing characters (byte 64))`."""
    path = tmp_path / "joined.jsonl"
    path.write_text(json.dumps(ROW) + json.dumps(ROW) + "\n")
    line = one_error_line(here(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path)))
    assert line.startswith(f"pluralign: error: --path {path}: line 1: malformed JSON"), line
    assert "several JSON objects on one line" in line, line


@pytest.mark.parametrize("action", [["list"], ["revoke", "web"]])
def test_keys_of_a_data_folder_that_does_not_exist_is_an_error_naming_it(tmp_path, action, monkeypatch, capsys):
    """`pluralign keys list` run from the wrong directory (the default folder is ./data). Before:
    `{"keys":0}` and exit 0, as if the service had no keys; `revoke`: `no key with id or name 'web'`.
    Run in this process (`in_this_process`: a process apiece cost ~1 CPU-s)."""
    keys_here = lambda *argv: in_this_process(monkeypatch, capsys, tmp_path, "keys", *argv)  # noqa: E731
    line = one_error_line(keys_here(*action))
    assert line.startswith(f"pluralign: error: PLURALIGN_DATA_DIR (setting data_dir) data: no such folder ({tmp_path / 'data'})"), line
    line = one_error_line(keys_here("--data-dir", "srv", *action))
    assert line.startswith(f"pluralign: error: --data-dir srv: no such folder ({tmp_path / 'srv'})"), line
    assert "--data-dir" in line and "pluralign serve" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_a_trl_dataset_without_user_ids_is_told_to_name_its_user(tmp_path, hf, here):
    """A TRL preference dataset (no `user_id` column) imported as README says. Before: `line 1, field
    `user_id`: missing required field (--skip-bad skips bad rows)`: --skip-bad would skip every row."""
    path = tmp_path / "trl.jsonl"
    hf.run("datasets.Dataset.from_list(rows).to_json(path)", rows=[{k: v for k, v in ROW.items() if k != "user_id"}] * 2, path=str(path))
    line = one_error_line(here(tmp_path, "data", "import", "--source", "jsonl", "--path", str(path),
                                    "--url", "http://127.0.0.1:9", "--key", "pk-unused"))
    assert line.startswith(f"pluralign: error: --path {path}: line 1, field `user_id`: missing required field"), line
    assert "--user NAME" in line and "--skip-bad" not in line, line


def test_an_export_run_again_replaces_its_file(tmp_path, here):
    """`data export --out prefs.jsonl` run a second time (or over its own --path). Before: `--out
    prefs.jsonl: /x/prefs.jsonl is a file, not a folder`, exit 2: an output file could be written once."""
    source = tmp_path / "trl.jsonl"
    source.write_text(json.dumps(ROW) + "\n")
    out = tmp_path / "prefs.jsonl"
    out.write_text("an earlier export\n")
    for target in (out, source):
        result = here(tmp_path, "data", "export", "--source", "jsonl", "--path", str(source), "--out", str(target))
        assert result.returncode == 0 and result.stderr == "", result
        assert json.loads(result.stdout.splitlines()[-1])["records"] == 1, result.stdout
        assert [json.loads(line)["prompt"] for line in target.read_text().splitlines()] == [ROW["prompt"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl", "trl.jsonl"]  # no temp file left


def test_train_adapter_reads_a_trl_file_as_the_users(capsys, tmp_path):
    """`train adapter --user ann --data trl.jsonl` on a TRL file of ann's comparisons (no `user_id`
    column). Before: `--data trl.jsonl: line 1, field `user_id`: missing required field`, though --user
    names the user. Now the rows are ann's, and the run goes on to the next check (--base here, so no
    model is trained). In-process (`training.cli.main` with the user's argv): a subprocess spent 6 s
    importing torch for this one line."""
    from tests.unit.clitools import cli

    path = tmp_path / "trl.jsonl"
    path.write_text(json.dumps({k: v for k, v in ROW.items() if k != "user_id"}) + "\n")
    code, out, err = cli(capsys, "train", "adapter", "--user", "ann", "--data", str(path),
                         "--registry", str(tmp_path / "adapters"), "--base", str(tmp_path / "no-model"))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line.startswith("pluralign: error: --base must be `smollm2` or a transformers model folder"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trl.jsonl"]  # nothing written


def test_an_import_user_the_service_never_takes_is_named_by_user(tmp_path, here):
    """`data import --user "ann smith"` on a TRL file. Before: `--path trl.jsonl: line 1, field `user_id`:
    'ann smith': ...`, naming the file and a field it does not have rather than the option given."""
    path = tmp_path / "trl.jsonl"
    path.write_text(json.dumps({k: v for k, v in ROW.items() if k != "user_id"}) + "\n")
    # argparse's usage error (edges35: every option naming a user or a tenant), before the file is read or anything sent
    result = here(tmp_path, "data", "import", "--source", "jsonl", "--path", str(path), "--user", "ann smith",
                       "--url", "http://127.0.0.1:9", "--key", "pk-unused")
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result
    line = result.stderr.strip().splitlines()[-1]  # after the usage line
    assert line.startswith("pluralign: error: argument --user: 'ann smith': a user id is 1-128 characters"), line


def test_fspo_on_users_with_too_few_comparisons_names_shots_and_queries(tmp_path, monkeypatch, capsys):
    """data session 34: `train fspo --population file` on users of 3 comparisons each. Before:
    `pluralign: error: no user has 5 comparisons (shots + queries)`, naming neither option nor the file."""
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"user_id": f"u{i % 4}", "prompt": f"Question {i}?", "chosen": f"Yes {i}.",
                                        "rejected": f"No {i}."}) + "\n" for i in range(12)))
    line = one_error_line(in_this_process(monkeypatch, capsys, tmp_path, "train", "fspo", "--population", "file", "--data", str(path),
                                          "--out", str(tmp_path / "fs")))
    assert line.startswith("pluralign: error: --shots 4 + --queries 1: "), line
    assert f"--data {path}" in line and "at most 3" in line and "lower --shots or --queries" in line, line
    assert not (tmp_path / "fs").exists()


def test_a_gzip_compressed_trl_file_is_read_as_its_lines(tmp_path, here):
    """data session 34: JSON lines as Hugging Face datasets ship them, gzip-compressed (Anthropic's HH-RLHF
    `train.jsonl.gz`: implicit-prompt rows, no user). Before: `line 1: malformed JSON (...); it holds NUL
    bytes: a binary file, not JSON lines`. A file cut short is one line naming it, not a traceback."""
    import gzip

    rows = [{"chosen": f"\n\nHuman: Tea or coffee {i}?\n\nAssistant: Tea, always.",
             "rejected": f"\n\nHuman: Tea or coffee {i}?\n\nAssistant: Coffee."} for i in range(5)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(data))
    result = here(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--user", "hh", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"source": "jsonl", "pairs": 5, "judgments": 5, "users": 1, "ties": 0}
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(data * 50)[:300])
    line = one_error_line(here(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(cut), "--user", "hh", "--skip-bad"))
    assert line.startswith(f"pluralign: error: --path {cut}: line ") and "not a whole gzip file (truncated or damaged" in line, line


@pytest.mark.parametrize("trainer", ["pal", "em"])
def test_k_max_beside_k_is_refused_naming_both(tmp_path, trainer, here):
    """data session 34: `--k-max` bounds only the search without `--k`. Before: `--k 3 --k-max 2` trained
    K=3 and said nothing of the --k-max it ignored (exit 0); now one line naming both, before training."""
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"user_id": f"u{i % 4}", "prompt": f"Question {i}?", "chosen": f"Yes {i}.",
                                        "rejected": f"No {i}."}) + "\n" for i in range(24)))
    line = one_error_line(here(tmp_path, "train", trainer, "--protocol", "file", "--data", str(path), "--k", "3",
                                    "--k-max", "2", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache.sqlite")))
    assert line.startswith("pluralign: error: --k-max 2: read only without --k") and "--k 3 names the K to try" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["train", "em", "--protocol", "file", "--data", "{data}", "--groups", "3"],
    ["train", "pal", "--protocol", "ukp", "--groups", "3"],
    ["eval", "--model", "bt", "--protocol", "ukp", "--groups", "3"],
    ["train", "fspo", "--population", "file", "--data", "{data}", "--groups", "3"],
    ["audit", "--data", "{data}", "--group-by", "segment", "--groups", "3"],
])
def test_groups_with_a_source_that_is_not_persona_is_refused_naming_both(tmp_path, argv, here):
    """data session 34: `--groups` sizes only the synthetic persona population. Before: with a file or UKP
    it was ignored and the run went on (`train em --protocol ukp --groups 3` trained minutes on UKP's
    own users, exit 0); now one line naming it and the source, before anything loads."""
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"user_id": f"u{i % 4}", "prompt": f"Question {i}?", "chosen": f"Yes {i}.",
                                        "rejected": f"No {i}.", "attributes": {"segment": "s"}}) + "\n" for i in range(24)))
    argv = [a.replace("{data}", str(path)) for a in argv]
    out = ["--out", str(tmp_path / "out")] if argv[0] == "train" else []
    line = one_error_line(here(tmp_path, *argv, *out))
    assert line.startswith("pluralign: error: --groups 3: read only with ") and " persona " in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "said"), [
    (["train", "fspo", "--population", "persona", "--unseen-fraction", "0.5"], "--unseen-fraction 0.5: read only with --population file"),
    (["train", "maxmin", "--pairs", "{data}", "--objective", "single", "--heads", "3"], "--heads 3: a single-reward ranking"),
])
def test_an_option_the_run_would_ignore_or_contradict_is_refused(tmp_path, argv, said, here):
    """data session 34. Before: `train fspo --population persona --unseen-fraction 0.5` trained with the
    persona protocol's own unseen users (exit 0), and `train maxmin --objective single --heads 3` wrote an
    artifact recording a single-reward ranking of 3 heads (exit 0)."""
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"user_id": f"u{i % 4}", "prompt": f"Question {i}?", "chosen": f"Yes {i}.",
                                        "rejected": f"No {i}."}) + "\n" for i in range(8)))
    argv = [a.replace("{data}", str(path)) for a in argv]
    line = one_error_line(here(tmp_path, *argv, "--out", str(tmp_path / "out"), "--steps", "1"))
    assert line.startswith(f"pluralign: error: {said}"), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--em", "--pal"])
def test_an_audit_artifact_its_grouping_would_not_read_is_refused(tmp_path, option, here):
    """data session 34: `audit --data F --group-by segment --em DIR` (or `--pal DIR`). Before: the report
    was made by `segment`, the artifact never read, exit 0; now one line naming the option and --group-by."""
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"user_id": f"u{i % 4}", "prompt": f"Question {i}?", "chosen": f"Yes {i}.",
                                        "rejected": f"No {i}.", "attributes": {"segment": f"s{i % 2}"}}) + "\n" for i in range(16)))
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "meta.json").write_text(json.dumps(  # a description each kind's first check reads
        {"schema_version": 1, "encoder_id": "sentence-transformers/all-MiniLM-L6-v2", "variant": "a", "k": 2, "input_dim": 384,
         "latent_dim": 4, "hidden": 8, "users": 4}))
    line = one_error_line(here(tmp_path, "audit", "--data", str(path), "--group-by", "segment", option, str(artifact),
                                    "--min-comparisons", "0", "--cache", str(tmp_path / "cache.sqlite"), "--json"))
    assert line.startswith(f"pluralign: error: {option} {artifact}: read only with --group-by "), line
    assert "--group-by segment does not" in line, line
