"""`train pal|em --protocol file`: users with too few comparisons to split are counted, not dropped unsaid
(session 42's CLI trial: a researcher's file of six annotators and one with a single judgment)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl

CACHE = ["--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")]  # the suite's shared MiniLM vectors


def rows(user: str, n: int, tie_every: int = 0) -> list[dict]:
    return [{"user_id": user, "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
             **({"tie": True} if tie_every and i % tie_every == 0 else {})} for i in range(n)]


@pytest.mark.parametrize("trainer, extra", [("pal", ["--epochs", "1"]), ("em", ["--quiet"])])
def test_users_with_fewer_than_five_strict_comparisons_are_counted_in_the_report(tmp_path, capsys, trainer, extra):
    """Before: `seen_users` (pal) or `users` (em) 2, and nothing said that u2 (1 comparison) and u3
    (4 strict and 2 ties) were left out, nor why; a file of many users with a few comparisons each
    trained on the few with five."""
    data = write_jsonl(tmp_path / "p.jsonl", rows("u0", 8) + rows("u1", 8) + rows("u2", 1) + rows("u3", 6, tie_every=3))
    code, out, err = cli(capsys, "train", trainer, "--protocol", "file", "--data", data, "--k", "1", "--out", str(tmp_path / "out"),
                         *extra, *CACHE)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["users_left_out"], report["left_out_pairs"]) == (2, 5), report
    assert "2 users with fewer than 5 different strict comparisons left out (5 comparisons)" in err, err


def test_a_user_with_ties_only_is_counted_as_left_out():
    """`left_out` is every user of the file who is not a seen user: one whose comparisons are all ties has
    0 strict ones, fewer than 5. Before: only users with 1-4 strict comparisons were counted, so a file's
    tie-only annotators were dropped unsaid (`users_left_out` 0 for a user the model never saw)."""
    from pluralign.data.record import Preference
    from pluralign.data.splits import file_protocol

    protocol = file_protocol([Preference(**r) for r in rows("u0", 6) + rows("u1", 2) + rows("u2", 3, tie_every=1)])
    assert protocol.left_out == {"u1": 2, "u2": 0}, protocol.left_out
