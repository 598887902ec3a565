"""Review of session eval45's `pluralign eval --protocol file --data PATH` (session revieweval45): what a researcher
running it on their own users' file met that the change's tests did not show."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli, write_jsonl
from tests.unit.test_eval45_file_protocol import CACHE, RULE_USERS, rows


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
