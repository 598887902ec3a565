"""Session 33 (operations): the `pluralign` CLI as an operator meets it, run in a subprocess. `--store`
of `audit` and `train adapter` takes the service's data folder or the `lancedb/` folder inside it (each
took only one, and said of the other that no store was there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli

FIXTURE = REPO / "tests" / "fixtures" / "upgrade" / "2a4712d" / "data"  # a service's data folder, alice's comparisons in it


def pluralign(*argv: str, cwd=REPO, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env})


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(FIXTURE, folder)
    return folder


@pytest.mark.parametrize("given", [pytest.param("data", marks=pytest.mark.slow), "data/lancedb"])  # the data folder: slow-marked for the suite's time
def test_audit_store_takes_the_data_folder_or_its_lancedb_folder(data, given, capsys):
    """Before: `audit --store data` was "no pluralign store there (data/preferences.lance is missing)".
    (The CLI in this process, `tests/unit/clitools.cli`: the audit reads stored vectors and loads no model, so
    a fresh interpreter was 3 s of CPU, 15-30 s under load, around 0.1 s of work.)"""
    code, out, err = cli(capsys, "audit", "--store", str(data.parent / given), "--group-by", "segment", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["comparisons"] > 0 and report["users"] > 0


@pytest.mark.slow  # ~10 s a form (the base model loads); the audit's test keeps the shared folder rule in the default suite
@pytest.mark.parametrize("given", ["data", "data/lancedb"])
def test_train_adapter_store_takes_the_data_folder_or_its_lancedb_folder(data, given):
    """Before: `train adapter --store data/lancedb` looked for data/lancedb/lancedb and said no store was there.
    (A user with no comparisons: the store was opened and read, and no training runs.)"""
    result = pluralign("train", "adapter", "--user", "nobody", "--store", str(data.parent / given), "--steps", "1",
                       PLURALIGN_ADAPTERS_DIR="")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"pluralign: error: no comparisons of user 'nobody' in the store at {data / 'lancedb'} (tenant 'default')"


@pytest.mark.parametrize("command", [["audit", "--group-by", "segment"],
                                     pytest.param(["train", "adapter", "--user", "alice", "--steps", "1"], marks=pytest.mark.slow)])
def test_a_store_that_is_neither_names_the_path_and_both_forms(tmp_path, command):
    typo = tmp_path / "dta"
    result = pluralign(*command, "--store", str(typo))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pluralign: error: --store {typo}: no pluralign store there (no such folder)"), line
    assert "data folder" in line and "lancedb/" in line
    assert not typo.exists()
