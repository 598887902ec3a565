"""Crash session 38: the tests that drive the in-process service run Hugging Face `datasets` in a process of
their own (tests/hf_datasets.py), never in the pytest worker.

Why: `datasets.load_dataset` wraps its download step in `unittest.mock.patch.dict(os.environ, ...)`, which on
exit clears the whole process environment and sets it again, one `unsetenv`/`putenv` a variable. glibc's
getenv is not safe against that: LanceDB's Rust threads read `LANCE_IO_THREADS`, `LANCE_MEM_POOL_SIZE`, ...
with getenv on each merge or index build the service's refits make, and one read the environment array
while it was being rebuilt (glibc reallocates it as variables are added): SIGSEGV in `getenv` on a lance thread (no Python frame), the xdist worker lost
(make test on 1338feb: test_review37_null_prompt; before: test_break21a). The service itself never writes
the environment once started, so only a test can crash this way."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.hf_datasets import have_datasets


def datasets_uses(source: str) -> list[int]:
    """Lines of `source` that import `datasets` into the running process: `import datasets`, `from datasets
    import ...`, `pytest.importorskip("datasets")` (code for a child process is a string: not counted)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "datasets" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "datasets":
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "importorskip"
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "datasets"):
            lines.append(node.lineno)
    return lines


def test_no_test_runs_datasets_in_the_worker():
    """No test file imports `datasets` into the pytest worker: each runs it through tests.hf_datasets (the `hf`
    fixture). Not only the service's tests: an xdist worker runs a unit test right after a service module
    whose LanceDB threads are still at work. Before session 38: test_review37_null_prompt,
    test_fidelity37_roundtrip, test_review36_message_nulls (and the importorskip of test_break21a,
    test_newuser31_wire); before session 39 the unit tests test_trl_forms, test_review29a_library,
    test_review37_parquet_nulls, test_newuser31_cli and test_break18_cli."""
    # a file that never spells `datasets` cannot import it these ways: only the others are parsed (parsing all ~560
    # test files took 2-6 s of the default suite, suite48)
    found = {str(p.relative_to(REPO)): lines for p in sorted((REPO / "tests").rglob("*.py"))
             if p != REPO / "tests" / "hf_datasets.py" and "datasets" in (text := p.read_text())
             and (lines := datasets_uses(text))}
    assert not found, f"run `datasets` with tests.hf_datasets.DatasetsProcess (the `hf` fixture), not in the worker: {found}"


def test_the_check_sees_each_way_in():
    assert datasets_uses("import datasets\nfrom datasets import Dataset\nx = pytest.importorskip('datasets')\n") == [1, 2, 3]
    assert datasets_uses("CHILD = 'import datasets'\nimport json\n") == []


# run in a fresh Python (argv: data file, "in-process" | "child"): how many times the environment of that
# process is written (os.putenv / os.unsetenv) while `datasets` loads the file, in it or in a DatasetsProcess
COUNT_ENV_WRITES = """
import json, sys
sys.path.insert(0, sys.argv[3])
from tests.hf_datasets import DatasetsProcess
if sys.argv[2] == "in-process":
    import datasets
writes = []
sys.addaudithook(lambda event, args: writes.append(args[0]) if event in ("os.putenv", "os.unsetenv") else None)
if sys.argv[2] == "in-process":
    datasets.load_dataset("json", data_files=sys.argv[1], split="train")
else:
    with DatasetsProcess() as hf:
        hf.run("datasets.load_dataset('json', data_files=path, split='train')", path=sys.argv[1])
print(json.dumps(len(writes)))
"""


@pytest.mark.slow  # ~16 s on a loaded 2-core box (two Pythons importing datasets); the fast guard: the AST check above
def test_datasets_in_a_child_leaves_this_process_environment_alone(tmp_path):
    """The cause, measured: `load_dataset` in the process writes its environment (each variable unset and set
    again); through DatasetsProcess it writes none here, so LanceDB's getenv has nothing to race with."""
    if not have_datasets():
        pytest.skip("datasets is not installed")
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": None, "chosen": "Red.", "rejected": "Blue."}) + "\n")
    writes = {}
    for where in ("in-process", "child"):
        run = subprocess.run([sys.executable, "-c", COUNT_ENV_WRITES, str(path), where, str(REPO)], capture_output=True,
                             text=True, timeout=300, env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / f"hf-{where}")})
        assert run.returncode == 0, run.stderr[-3000:]
        writes[where] = json.loads(run.stdout.splitlines()[-1])
    assert writes["in-process"] > 0, writes  # what made the workers crash: so this check can fail
    assert writes["child"] == 0, writes


def test_pytest_writes_no_environment_variable_per_test():
    """pytest's PYTEST_CURRENT_TEST (set and deleted at each phase of every test: environment writes beside
    LanceDB's getenv, the race above) is not written (tests/conftest.py)."""
    assert "PYTEST_CURRENT_TEST" not in os.environ
