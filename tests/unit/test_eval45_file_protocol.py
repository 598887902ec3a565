"""`pluralign eval --protocol file --data PATH`: a researcher's own preference file evaluated as the trainers
read and split it (session eval45). Before, `eval` took `--protocol ukp|persona` only: a file of one's own
users could be trained on (`train pal|em --protocol file`) but not measured, per user or model against model."""

from __future__ import annotations

import json

import pytest

from pluralign.reward.registry import MODELS, WITHOUT_COMPONENTS
from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl

CACHE = ["--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")]  # the suite's shared MiniLM vectors
RULE_USERS = {"ann": "short", "bob": "short", "cat": "long", "dan": "long"}


def rows(user: str, n: int, prefers: str = "short") -> list[dict]:
    """`user`'s n comparisons, each of a short and a long answer to one prompt, chosen by their rule (`prefers`);
    the texts are test_cli42_left_out_users's, so the suite's embedding cache has them."""
    out = []
    for i in range(n):
        short, long = f"Short {i}.", f"A much longer answer {i}."
        chosen, rejected = (short, long) if prefers == "short" else (long, short)
        out.append({"user_id": user, "prompt": f"Tell me about topic {i}", "chosen": chosen, "rejected": rejected})
    return out


@pytest.fixture
def rule_file(tmp_path) -> str:
    """Four users of 8 comparisons each, two who always choose the short answer and two the long one (the same
    eight comparisons, judged the opposite way), and `eve`, with 2: fewer than the file protocol's 5."""
    return write_jsonl(tmp_path / "prefs.jsonl", [r for user, rule in RULE_USERS.items() for r in rows(user, 8, rule)] + rows("eve", 2))


def report_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_per_user_bt_learns_each_users_rule_where_one_reward_model_cannot(capsys, rule_file):
    """The same split as `train pal|em --protocol file` (8 comparisons a user: 2 test, 1 validation, 5 train; eve
    left out and counted), each user's test accuracy reported. A per-user model learns both rules (every user
    1.0); one reward model for everyone cannot be right for ann and cat both on the same kind of comparison
    (hand-checked: below 0.75). The summary a person reads names the user left out and each user's accuracy."""
    code, out, err = cli(capsys, "eval", "--model", "per-user-bt", "--protocol", "file", "--data", rule_file, "--seed", "0", *CACHE)
    assert code == 0, err
    report = report_of(out)
    assert {key: report[key] for key in ("model", "protocol", "seen_users", "unseen_users", "train_pairs", "test_pairs",
                                         "users_left_out", "left_out_pairs", "unseen_acc_by_k")} == {
        "model": "per-user-bt", "protocol": "file", "seen_users": 4, "unseen_users": 0, "train_pairs": 20, "test_pairs": 8,
        "users_left_out": 1, "left_out_pairs": 2, "unseen_acc_by_k": {}}, report
    assert report["seen_user_acc"] == dict.fromkeys(RULE_USERS, 1.0) and report["seen_macro_acc"] == 1.0, report
    assert "1 user with fewer than 5 different strict comparisons left out (2 comparisons)" in err, err
    summary = out.strip().splitlines()[:-1]
    assert "  left out         1 user (2 comparisons): too few different strict comparisons to split" in summary, out
    assert "  user ann           1.000" in summary and "  unseen users     none in this protocol: no k-shot accuracy" in summary, out

    code, out, err = cli(capsys, "eval", "--model", "bt", "--protocol", "file", "--data", rule_file, "--seed", "0", "--json", *CACHE)
    assert code == 0, err
    bt = report_of(out)
    assert out.count("\n") == 1 and (bt["train_pairs"], bt["test_pairs"], bt["users_left_out"]) == (20, 8, 1), out
    assert bt["seen_macro_acc"] < 0.75 and min(bt["seen_user_acc"].values()) < 1.0, bt


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_eval_knows_runs_on_a_file(capsys, rule_file, model):
    """Every `--model` name, K fixed at 1 where it has one (cheap: a second or less each). A model with a part of
    its own per user (per-user-bt, the +residual user models) learns each user's rule; one that scores every user
    with one reward function (bt, and K = 1 of pal-a, pal-b, em) cannot."""
    k = [] if model in WITHOUT_COMPONENTS else ["--k", "1"]  # bt and per-user-bt refuse a --k (session trial46a)
    code, out, err = cli(capsys, "eval", "--model", model, *k, "--protocol", "file", "--data", rule_file, "--json",
                         "--threads", "1", *CACHE)
    assert code == 0, err
    report = report_of(out)
    assert (report["model"], report["protocol"], sorted(report["seen_user_acc"])) == (model, "file", sorted(RULE_USERS)), report
    if model == "per-user-bt" or model.endswith("+residual"):
        assert report["seen_macro_acc"] == 1.0, report
    else:
        assert report["seen_macro_acc"] < 0.75, report


@pytest.mark.parametrize("argv, said", [
    (["--protocol", "persona", "--data", "{data}"], "--data {data}: read only with --protocol file (--protocol persona reads its data from --data-dir)"),
    (["--protocol", "file"], "--protocol file needs --data PATH: a JSONL or Parquet preference file"),
    (["--protocol", "file", "--data", "{bad}"], "--data {bad}: line 2, field `rejected`: missing required field"),
    (["--protocol", "file", "--data", "{few}"], "--data {few}: no user has 5 or more strict comparisons to train on"),
    (["--protocol", "file", "--data", "{tmp}/missing.jsonl"], "--data {tmp}/missing.jsonl: no such file or folder"),
    (["--protocol", "file", "--data", "{data}", "--groups", "3"], "--groups 3: read only with --protocol persona"),
    (["--protocol", "file", "--data", "{data}", "--query-size", "5"], "--query-size 5: persona only (--protocol file has no unseen users"),
    (["--protocol", "file", "--data", "{data}", "--unseen-per-group", "5"], "--unseen-per-group 5: persona only (--protocol file has no unseen users"),
    (["--model", "pal-a+residual", "--protocol", "file", "--data", "{data}", "--shots", "active"],
     "--shots active chooses unseen users' comparisons, but --protocol file has no unseen users"),
    (["--model", "pal-a", "--protocol", "file", "--data", "{data}", "--k", "5"], "--k 5: more than the 4 training users"),
    (["--protocol", "file", "--data", "{data}", "--k", "2"], "--k 2: the number of mixture components (pal-a, pal-b, em and"),
])
def test_bad_input_is_one_error_line_naming_the_option_and_nothing_is_printed(capsys, tmp_path, rule_file, argv, said):
    """Each error as the trainers' `--protocol file` say it: one `pluralign: error:` line naming the option (the
    file's line and field for a bad row), exit 2, nothing on stdout, nothing written beside the inputs."""
    names = {"data": rule_file, "tmp": str(tmp_path),
             "bad": write_jsonl(tmp_path / "bad.jsonl", [*rows("ann", 1), {"user_id": "ann", "prompt": "p", "chosen": "x"}]),
             "few": write_jsonl(tmp_path / "few.jsonl", rows("ann", 4) + rows("bob", 3))}
    before = sorted(tmp_path.iterdir())
    argv = [arg.format(**names) for arg in argv]
    code, out, err = cli(capsys, "eval", *(["--model", "bt"] if "--model" not in argv else []), *argv, "--json", *CACHE)
    assert code == 2 and out == "", err
    assert err.strip().splitlines()[-1].startswith(f"pluralign: error: {said.format(**names)}"), err
    assert sorted(tmp_path.iterdir()) == before
