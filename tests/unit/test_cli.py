"""The command-line contract: `pluralign data stats` and `pluralign eval` print JSON as their last line."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli


def run_cli(*args, timeout=600):
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    return result


def test_data_stats_on_ukp(shared_data, tmp_path):
    """On two of UKPConvArg1's 32 topic files (links to the real ones): the whole set took 3-4 s of
    XML parsing here; its published counts are tests/unit/test_importers.py's, read by the library."""
    from pluralign.data.ukp import load_ukp, ukp_stats

    xml = shared_data / "ukp_convarg1" / "UKPConvArg1-full-XML"
    for name in ("ban-plastic-water-bottles_no-bad-for-the-economy.xml", "is-porn-wrong-_yes-porn-is-wrong.xml"):
        (tmp_path / name).symlink_to(xml / name)
    result = run_cli("data", "stats", "--source", "ukp_convarg1", "--path", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    expected = ukp_stats(*load_ukp(tmp_path))
    assert stats["source"] == "ukp_convarg1"
    assert (stats["pairs"], stats["judgments"], stats["users"], stats["ties"]) == (expected.pairs, expected.judgments, expected.users, expected.ties)
    assert 0 < stats["ties"] < stats["judgments"] and stats["users"] > 1


def test_data_stats_on_a_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": 3}\n')
    result = run_cli("data", "stats", "--source", "jsonl", "--path", str(bad), "--json")
    assert result.returncode == 2
    assert "line 1" in result.stderr and "rejected" in result.stderr


def test_eval_prints_the_json_contract(shared_data, capsys):
    """In-process (tests/unit/clitools.py): a process of its own spent ~6 of its 7 s importing and
    loading MiniLM; the other tests here run the CLI as a process and check its exit code."""
    code, out, err = cli(
        capsys, "eval", "--model", "per-user-bt", "--protocol", "persona", "--groups", "2", "--json",
        "--data-dir", str(shared_data), "--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"),
    )
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    for key in ("seen_macro_acc", "seen_pooled_acc", "unseen_acc_by_k", "group_acc", "worst_group_acc", "seconds"):
        assert key in report
    assert set(report["unseen_acc_by_k"]) == {"1", "2", "5", "10", "20", "50"}
    assert set(report["group_acc"]) == {"g0", "g1"}
    assert report["seen_macro_acc"] > 0.8


@pytest.mark.slow  # a persona EM eval over every K, about 12 s: `make test-all` (the default suite stays under 10 minutes)
def test_eval_without_k_chooses_it_and_reports_the_criterion(shared_data):
    """EM on two opposed persona groups: K = 2 is chosen, K = 1 scores worse, the table shows it."""
    result = run_cli(
        "eval", "--model", "em", "--protocol", "persona", "--groups", "2", "--threads", "1",
        "--data-dir", str(shared_data), "--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["k_selected"] == 2 and report["ari"] == 1.0
    criterion = report["k_criterion"]
    assert {"1", "2", "3"} <= set(criterion)
    assert criterion["1"] < criterion["2"] - report["k_criterion_se"]["1"]
    assert any(line.strip().startswith("K selected       2") for line in lines)
    assert any("<- selected" in line and line.split()[0] == "2" for line in lines)


@pytest.mark.slow
def test_train_em_without_k_chooses_it_and_writes_the_choice(shared_data, tmp_path):
    out = tmp_path / "em"
    result = run_cli(
        "train", "em", "--protocol", "persona", "--groups", "2", "--quiet", "--out", str(out),
        "--data-dir", str(shared_data), "--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["k"] == report["k_selected"] == 2 and report["ari"] == 1.0
    assert set(report["by_k"]) == set(report["k_criterion"]) and "heldout_log_likelihood" in report["by_k"]["2"]
    assert "K = 2 selected" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["k_selected"] == 2
    assert json.loads((out / "meta.json").read_text())["k"] == 2


def test_data_export_prints_its_json_summary_and_keeps_the_trl_form(tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [{"chosen": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes."}],
             "rejected": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "No."}], "id": f"r{i}"}
            for i in range(3)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.parquet"
    result = run_cli("data", "export", "--source", "jsonl", "--path", str(source), "--user", "ann", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"out": str(out), "format": "parquet", "records": 3, "users": 1, "left_out_same_answer": 0}



def test_data_help_names_import_and_export(capsys):
    """In this process (`tests.unit.clitools.cli`): argparse's help is the same in a subprocess, which paid ~0.3 CPU-s
    of imports (the usage errors below too; the export above and the stats runs stay subprocesses, as a user runs them)."""
    code, help_text, _ = cli(capsys, "data", "--help")
    assert code == 0 and "import" in help_text and "export" in help_text


def test_a_k_below_one_is_a_clear_usage_error(capsys):
    for command in (["eval", "--model", "em", "--protocol", "persona"], ["train", "em", "--out", "unused"]):
        code, _, err = cli(capsys, *command, "--k", "0")
        assert code == 2
        assert "--k" in err and "expected an integer >= 1, got 0" in err


def test_an_active_target_without_active_shots_is_a_clear_usage_error(capsys):
    """`--active-target` only chooses how `--shots active` picks; with random shots it was silently
    ignored and the report had no active figures, so a run asked for one thing and measured another."""
    for target in ("group", "predictive", "coefficients"):
        code, out, err = cli(capsys, "eval", "--model", "pal-a+residual", "--protocol", "persona", "--active-target", target)
        assert code == 2, out[-500:]
        assert "--active-target" in err and "--shots active" in err


@pytest.mark.slow  # two full persona evals, about 23 s: `make test-all` (the default suite stays under 10 minutes)
def test_eval_takes_more_unseen_users_and_queries(shared_data):
    """Issue 16's offline bar needed more new users than the eval's 10 per group to decide; `pluralign
    eval` takes them (before, only benchmarks/active_shots.py could), and the seen users stay the same."""
    cache = str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")
    common = ("eval", "--model", "per-user-bt", "--protocol", "persona", "--groups", "2", "--json", "--threads", "1", "--data-dir", str(shared_data), "--cache", cache)
    default = json.loads(run_cli(*common).stdout.strip().splitlines()[-1])
    more = run_cli(*common, "--unseen-per-group", "3", "--query-size", "5")
    assert more.returncode == 0, more.stderr
    more = json.loads(more.stdout.strip().splitlines()[-1])
    assert (default["unseen_users"], more["unseen_users"]) == (20, 6)
    assert more["seen_users"] == default["seen_users"] and more["seen_macro_acc"] == default["seen_macro_acc"]


def test_unseen_users_and_queries_are_checked(capsys):
    for flags, said in ((["--query-size", "0"], "--query-size: expected an integer >= 1, got 0"),
                        (["--unseen-per-group", "-2"], "--unseen-per-group: expected an integer >= 1, got -2")):
        code, _, err = cli(capsys, "eval", "--model", "bt", "--protocol", "persona", *flags)
        assert code == 2 and said in err, err
    code, _, err = cli(capsys, "eval", "--model", "bt", "--protocol", "ukp", "--query-size", "30")
    assert code == 2 and "--query-size 30: persona only" in err, err
