"""Review of session eval45's `pluralign eval --protocol file --data PATH` (session revieweval45): what a researcher
running it on their own users' file met that the change's tests did not show."""

from __future__ import annotations

import io
import sys

import pytest

from tests.unit.clitools import cli, write_jsonl
from tests.unit.test_eval45_file_protocol import CACHE, RULE_USERS, report_of, rows


@pytest.fixture
def rule_file(tmp_path) -> str:
    """eval45's four users of 8 comparisons each, two choosing the short answer and two the long one."""
    return write_jsonl(tmp_path / "prefs.jsonl", [r for user, rule in RULE_USERS.items() for r in rows(user, 8, rule)])


def test_active_target_with_a_file_is_refused_for_what_it_is_not_sent_to_shots_active(capsys, rule_file):
    """Before: `--active-target group` with `--protocol file` said "add --shots active (or drop --active-target)";
    a user who added it was then told `--shots active` has no unseen users to choose for: advice that cannot work.
    Now the first error says why neither option applies to a file."""
    code, out, err = cli(capsys, "eval", "--model", "pal-a+residual", "--protocol", "file", "--data", rule_file,
                         "--active-target", "group", "--json", *CACHE)
    assert code == 2 and out == "", err
    line = err.strip().splitlines()[-1]
    assert line.startswith("pluralign: error: --active-target group chooses how --shots active picks unseen users' comparisons, "
                           "but --protocol file has no unseen users"), err
    assert "add --shots active" not in line, err


class Terminal(io.StringIO):
    """stderr as a person's terminal: tqdm draws its bar there (eval shows none where stderr is not a terminal)."""

    def isatty(self) -> bool:
        return True


def test_a_file_eval_on_a_terminal_draws_no_unseen_bar_that_never_moves(capsys, monkeypatch, rule_file):
    """Before: on a terminal, every `eval --protocol file` drew `per-user-bt unseen k: 0%| | 0/6` while it trained and
    left it there at 0/6 (a file has no unseen users: no k is ever measured), as if the run had stopped before its
    first k. Now a protocol without unseen users draws no such bar; the report is the same."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, out, _ = cli(capsys, "eval", "--model", "per-user-bt", "--protocol", "file", "--data", rule_file, "--json",
                       "--threads", "1", *CACHE)
    assert code == 0, terminal.getvalue()
    assert report_of(out)["seen_user_acc"] == dict.fromkeys(RULE_USERS, 1.0)
    assert "unseen k" not in terminal.getvalue() and "0/6" not in terminal.getvalue(), terminal.getvalue()


def test_the_summary_lists_the_ten_least_accurate_users_first_and_counts_the_rest(capsys, tmp_path):
    """eval45's README: "the summary lists the ten least accurate" users. Its tests had four users, each at 1.000: the
    order and the cut at ten were never seen (either could be undone and every test pass). Twelve users, nine choosing
    the short answer and three the long one: one reward model for everyone (bt) learns the majority's rule, so the
    three are the least accurate, listed first, then seven of the nine, and the two not shown are counted."""
    rules = {f"s{i:02}": "short" for i in range(9)} | {f"l{i}": "long" for i in range(3)}
    data = write_jsonl(tmp_path / "twelve.jsonl", [r for user, rule in rules.items() for r in rows(user, 8, rule)])
    code, out, err = cli(capsys, "eval", "--model", "bt", "--protocol", "file", "--data", data, "--threads", "1", *CACHE)
    assert code == 0, err
    report = report_of(out)
    assert report["seen_user_acc"] == {user: 1.0 if rule == "short" else 0.0 for user, rule in rules.items()}, report
    listed = [line.split() for line in out.splitlines() if line.startswith("  user ")]
    assert listed == [["user", user, f"{report['seen_user_acc'][user]:.3f}"] for user in ["l0", "l1", "l2", *sorted(rules)[3:10]]], out
    assert "  ... 2 more users (the JSON line's seen_user_acc holds all)" in out.splitlines(), out


def test_a_file_with_no_user_left_out_is_not_said_to_have_too_few(capsys, rule_file):
    """Before: every file whose users all had enough comparisons was summarised "left out  0 users (0 comparisons):
    too few strict comparisons to split", a reason given for nothing. Now the line says none was left out."""
    code, out, err = cli(capsys, "eval", "--model", "per-user-bt", "--protocol", "file", "--data", rule_file, "--threads", "1", *CACHE)
    assert code == 0, err
    assert report_of(out)["users_left_out"] == 0
    assert "  left out         none: every user has 5 or more different strict comparisons" in out.splitlines(), out
    assert "too few" not in out + err, out + err


def test_a_user_left_out_for_repeats_is_not_said_to_have_fewer_comparisons_than_counted(capsys, tmp_path):
    """Before: a user of 3 comparisons each given twice (6 rows: a file concatenated twice) was left out, rightly
    (3 different ones), but said as "1 user with fewer than 5 strict comparisons left out (6 comparisons)" on stderr
    and "left out  1 user (6 comparisons): too few strict comparisons to split" in the summary: 6 is not fewer than 5.
    Both now say the threshold counts different comparisons; the counts (rows left out) are as they were."""
    data = write_jsonl(tmp_path / "twice.jsonl", [r for user, rule in RULE_USERS.items() for r in rows(user, 8, rule)] + rows("eve", 3) * 2)
    code, out, err = cli(capsys, "eval", "--model", "per-user-bt", "--protocol", "file", "--data", data, "--threads", "1", *CACHE)
    assert code == 0, err
    assert (report_of(out)["users_left_out"], report_of(out)["left_out_pairs"]) == (1, 6)
    assert "1 user with fewer than 5 different strict comparisons left out (6 comparisons)" in err, err
    assert "  left out         1 user (6 comparisons): too few different strict comparisons to split" in out.splitlines(), out
