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


def fake_install(tmp_path) -> list[str]:
    """`make` variables that stand an installed .venv in for the real one: a `pluralign` that prints the
    thread count it was started with, and an install stamp newer than requirements.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pluralign").write_text('#!/bin/sh\necho "OMP_NUM_THREADS=${OMP_NUM_THREADS-unset} $*"\n')
    (bin_dir / "pluralign").chmod(0o755)
    (tmp_path / "stamp").touch()
    return [f"BIN={bin_dir}", f"STAMP={tmp_path / 'stamp'}"]


@pytest.mark.parametrize("threads, expected", [(None, "1"), ("2", "2")])
def test_make_serve_runs_one_torch_thread_unless_told_otherwise(tmp_path, threads, expected):
    """Before: `make serve` ran torch on its default, a thread per core: on two cores shared with other
    work the first chat of a fresh clone took 844 s (generation_ms 844,246), with OMP_NUM_THREADS=1 52 s.
    The README's advice to set it came after the two commands a new user types."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MAKEFLAGS", "MFLAGS")}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    done = subprocess.run(["make", "-s", "serve", *fake_install(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"OMP_NUM_THREADS={expected} serve --host 127.0.0.1", done.stdout  # the port: PORT, read by serve (test_edge40_port)
