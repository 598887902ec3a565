"""Review of session trial54's CLI hints, run as a user runs the `pluralign` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.clitools import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["a\" ' (choose from ", "pal"],  # a command
    ["eval", "--model", "bt", "--protocol", "x\" ' (choose from "],  # an option's choice
])
def test_an_invalid_choice_holding_both_quotes_is_a_usage_error(tmp_path, capsys, monkeypatch, argv):
    """Before: trial54's hint read the value back out of argparse's message with a regular expression and
    `ast.literal_eval`; a value holding both quotes and ` (choose from ` (repr'd as `'x" \\' (choose from '`) was cut
    at its escaped quote, and `pluralign` died with a SyntaxError traceback instead of its exit-2 usage error."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pluralign: error: argument ") and f"invalid choice: {argv[-1 if argv[0] == 'eval' else 0]!r} (choose from " in last, err


@pytest.mark.parametrize("argv, hint", [
    (["trian", "pal"], "invalid choice: 'trian' (did you mean 'train'?) (choose from 'data', "),
    (["eval", "--model", "bt", "--protocol", "it's"], "invalid choice: \"it's\" (choose from 'ukp', "),  # nothing close
    (["train", "pal", "--variant", "aa", "--protocol", "persona", "--out", "o"], "invalid choice: 'aa' (did you mean 'a'?)"),
])
def test_an_invalid_choice_names_the_closest_one_as_before(tmp_path, capsys, monkeypatch, argv, hint):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "" and hint in err.strip().splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_eval_model_is_named_before_torch_is_imported(tmp_path):
    """Before: trial54's `--model` check imported pluralign.reward.registry, and with it torch and every model's code,
    to read the models' names: `pluralign eval --model pal_a --protocol persona` took 6-7 s on the loaded two cores for
    its one-line error, where eval's other usage errors (`--k` with bt) take about 1 s, before those imports."""
    probe = ("import sys, contextlib, io\nfrom training.cli import main\n"
             "err = io.StringIO()\n"
             "with contextlib.redirect_stderr(err):\n"
             "    code = main(['eval', '--model', 'pal_a', '--protocol', 'persona'])\n"
             "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
             "print(err.getvalue().strip().splitlines()[-1])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    first, said = result.stdout.strip().splitlines()
    assert first == "2 []", result.stdout[:500]
    assert said == ("pluralign: error: --model pal_a: unknown model (did you mean pal-a?); known: bt, em, pal-a, "
                    "pal-a+residual, pal-b, pal-b+residual, per-user-bt"), said
