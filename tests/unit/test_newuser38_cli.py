"""Session 38, a new user's pass: a mistyped option of a subcommand is refused by that subcommand, naming
the option it most likely meant and the --help that lists its options, not `pluralign --help` (whose page
lists no option of `serve`). Run as a user runs it: the `pluralign` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def pluralign(*argv: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "training.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv, said", [
    (["serve", "--prot", "8000"], "unrecognized arguments: --prot 8000 (did you mean --port?) (see `pluralign serve --help`)"),
    (["serve", "8000"], "unrecognized arguments: 8000 (see `pluralign serve --help`)"),
    (["keys", "list", "--dta-dir", "d"], "unrecognized arguments: --dta-dir d (did you mean --data-dir?) (see `pluralign keys list --help`)"),
    (["train", "pal", "--protocol", "persona", "--out", "o", "--k-maxx=3"],
     "unrecognized arguments: --k-maxx=3 (did you mean --k-max?) (see `pluralign train pal --help`)"),
])
def test_a_mistyped_option_is_refused_by_its_command_with_the_closest_option(tmp_path, argv, said):
    """Before: `pluralign: error: unrecognized arguments: --prot 8000 (see `pluralign --help`)`, after the
    top-level usage line, for every subcommand."""
    done = pluralign(*argv, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "", done
    *usage, last = done.stderr.strip().splitlines()
    assert last == f"pluralign: error: {said}", done.stderr
    command = said.rsplit("`", 2)[1].removesuffix(" --help")
    assert usage[0].startswith(f"usage: {command} "), done.stderr  # the command's own usage, with its options
    assert list(tmp_path.iterdir()) == []  # nothing made (no data folder, no artifact)
