"""Display cuts left after session 30's i18n work: a job's log tail and the CLI's echo of a service's
answer cut between grapheme clusters (`pluralign.data.text.shorten`), not inside an emoji."""

from __future__ import annotations

import httpx

from tests.e2e.job_kinds import TEST_KINDS
from training.commands.data import _message
from training.jobs.runner import LocalJobRunner, RunnerConfig

FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # one grapheme cluster, five code points


def test_a_long_worker_log_line_is_cut_between_grapheme_clusters(tmp_path):
    """Before: `line[:500]` kept the first three code points of the family emoji at 498-502: a man and a
    zero-width joiner, shown as a broken character in the dashboard's job notes."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        done = runner.wait(runner.submit("work", {"say": "x" * 498 + FAMILY + " and more"}).id, timeout=60)
    finally:
        runner.stop()
    said = next(line for line in done.log_tail if line.startswith("xxx"))
    assert said == "x" * 498 + "\u2026", said  # the emoji does not fit whole: left out, the cut marked


def test_the_cli_echoes_a_non_json_answer_cut_between_grapheme_clusters():
    """`pluralign data import --url` echoes the start of an answer that is not pluralign's error shape."""
    answer = httpx.Response(502, text="y" * 198 + FAMILY + " upstream proxy error")
    echoed = _message(answer)
    assert echoed == "y" * 198 + "\u2026" and len(echoed) <= 200, echoed
