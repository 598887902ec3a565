"""What an ML researcher using pluralign from the command line met in session trial46a."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize(("options", "named"), [
    (("--query-size", "100000"), "--query-size 100000"),
    (("--groups", "2", "--unseen-per-group", "100000"), "--unseen-per-group 100000"),
    (("--groups", "64", "--unseen-per-group", "50", "--query-size", "50"), "--groups 64"),
])
def test_eval_refuses_a_persona_population_too_large_to_hold_in_memory(capsys, shared_data, options, named):
    """`pluralign eval --model bt --protocol persona --query-size 100000` was killed by the kernel (exit 137, no
    message): 40 new users x 100,050 comparisons each, embedded as (N, 384) tensors, wanted ~30 GB (100,000 query
    comparisons in all took 1.5 GB RSS and 66 s). A population over MAX_UNSEEN_COMPARISONS is a usage error naming the
    options and the count, before anything is loaded; the recorded run (4 x 50 x (50 + 50)) stays far inside it."""
    code, out, err = cli(capsys, "eval", "--model", "bt", "--protocol", "persona", *options, "--json",
                         "--data-dir", str(shared_data))
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("pluralign: error: ") and named in line and "comparisons" in line, err
