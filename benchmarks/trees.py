"""This checkout beside another revision, for a benchmark that measures both side by side (`--against REV`): the
revision's files unpacked from `git archive`, and a benchmark's child process on either tree."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unpack_revision(rev: str, folder: str | Path, *paths: str) -> Path:
    """`git archive rev` of this checkout (only `paths`, such as "pluralign", when given) unpacked into `folder`, which
    it returns. Exits (SystemExit: one line naming `--against rev` and git's reason) when git refuses it, such as a
    revision it does not know."""
    done = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *paths], capture_output=True)
    if done.returncode:
        reason = done.stderr.decode(errors="replace").strip().replace("\n", "; ") or f"exit status {done.returncode}"
        sys.exit(f"--against {rev}: git archive refused it: {reason}")
    archive = done.stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return Path(folder)


def child_result(script: str, tree: Path, args: list[str], env: dict[str, str] | None = None, what: str = "") -> object:
    """Run the benchmark `script` (its `__file__`) with `args` in a child process on the code of `tree` (its cwd and
    PYTHONPATH; BENCHMARK_TREE names it for the child's own sys.path), `env` under the inherited environment: the JSON
    value its last line of output holds. Exits (SystemExit) with the tail of its stderr when it fails, naming `tree`
    and `what` it measured."""
    full = {**(env or {}), **os.environ, "PYTHONPATH": str(tree), "BENCHMARK_TREE": str(tree)}
    out = subprocess.run([sys.executable, script, *args], env=full, cwd=tree, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the child on {tree}{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
