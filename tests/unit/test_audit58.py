"""An audit of users who are perfectly consistent over a few comparisons each (session 58, the trial's "Audit on few
comparisons per user"): the `pluralign` CLI's entry point (`training.cli.main`) in this process, as
`tests.unit.clitools.cli` runs it: a subprocess reports the same figures and pays ~1 CPU-s of imports a run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl

CACHE = ("--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"))
LONG = "A long and detailed reply number {} that goes on about many things."
SHORT = "Brief reply {}."


def consistent_users(users: int, topics: int) -> list[dict]:
    """Half the users choose the long answer every time, half the short one, on the same `topics` prompts."""
    rows = []
    for u in range(users):
        likes_long = u % 2 == 0
        for i in range(topics):
            long, short = LONG.format(i), SHORT.format(i)
            rows.append({"user_id": f"u{u}", "prompt": f"Tell me about topic {i} please",
                         "chosen": long if likes_long else short, "rejected": short if likes_long else long,
                         "attributes": {"group": "long" if likes_long else "short"}})
    return rows


@pytest.mark.parametrize("users", [8, 24])
def test_consistent_users_with_few_comparisons_are_predicted_right_more_often_than_not(tmp_path, capsys, users):
    """Before: 8 users, 12 comparisons each on the same 12 prompts, half preferring the long answer: personalized
    0.25 against a one-size-fits-all 0.50 in both groups ("personalization hurts everyone"). The personal model kept
    as many whitened directions as there were distinct comparisons (12), so every comparison's features were
    orthogonal to every other's: nothing one taught the model moved its prediction of the next (0.4996 to 0.502,
    below 0.5 mostly). 24 users: the same 12 distinct comparisons, three times the rows."""
    data = write_jsonl(tmp_path / "p.jsonl", consistent_users(users, 12))
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "group", "--json", *CACHE)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    figures = {g["group"]: (g["personalized_accuracy"], g["base_accuracy"]) for g in report["groups"]}
    assert set(figures) == {"long", "short"}
    for group, (personalized, base) in figures.items():
        # the groups are opposed, so the one-size-fits-all model has nothing to learn: 0.5
        assert base == pytest.approx(0.5, abs=0.1), (group, figures)
        # right from the second or third comparison on: 10 of 12 at least, the first one a tie
        assert personalized >= 0.8, (group, figures)


def test_an_audit_gives_each_groups_brier_score_beside_its_accuracy(tmp_path, capsys):
    """Before: accuracy alone, whose credit gives 0 to a prediction of 0.4996 and 0.5 to the base model's exact 0.5;
    the report had no `personalized_brier` / `base_brier`. The Brier score of a 0.5 is 0.25; a model right and
    growing surer scores less."""
    data = write_jsonl(tmp_path / "p.jsonl", consistent_users(8, 12))
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "group", "--json", *CACHE)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    for figures in [*report["groups"], report["overall"]]:
        assert figures["base_brier"] == pytest.approx(0.25, abs=0.02), figures
        assert 0 < figures["personalized_brier"] < figures["base_brier"], figures
