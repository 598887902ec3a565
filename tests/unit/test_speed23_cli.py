"""Usage errors of `pluralign eval` come before the command imports torch and the models (seconds
on a busy machine): the real CLI in a child process, its imports listed by `python -X importtime`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("flags, said", [
    (["--protocol", "persona", "--active-target", "group"], "--active-target group chooses how --shots active picks"),
    (["--protocol", "ukp", "--query-size", "30"], "--query-size 30: persona only"),
    # eval45's `check_protocol_data`, said to come before the imports: nothing guarded it (review eval45 took it out of
    # `run` and every test passed; `load_training_protocol` says it too, after torch)
    (["--protocol", "file"], "--protocol file needs --data PATH"),
])
def test_eval_usage_errors_come_before_torch_is_imported(flags, said):
    """Before: both errors were printed (exit 2) only after `pluralign.evaluation` and the model
    registry were imported, torch with them: about 2 s on an idle machine, 3 s a run under load."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", "eval", "--model", "bt", *flags],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and said in result.stderr, result.stderr[-1000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "pluralign.evaluation" not in imported, sorted(m for m in imported if "torch" in m)[:5]


def test_serve_on_a_file_as_data_folder_fails_before_the_service_is_imported(tmp_path):
    """Before: the service's modules (torch, lancedb, the models' libraries: 5 s idle) were imported
    before the data folder was looked at, so a file given as PLURALIGN_DATA_DIR took that long to
    report (the message itself: tests/unit/test_left22a_cli.py)."""
    data = tmp_path / "data"
    data.write_text("not a folder")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PLURALIGN_DATA_DIR": str(data)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", "serve", "--port", "0"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr, result.stderr[-1000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "service.app" not in imported and "uvicorn" not in imported


def test_serve_on_a_damaged_promotions_file_fails_before_the_service_is_imported(tmp_path):
    """Before: jobs/promotions.json was first read by `create_app`, after the service's modules (torch,
    lancedb, litestar) were imported: 20 s and more a run on a loaded machine to print one line (the
    message and that no key is issued: tests/unit/test_left22a_cli.py)."""
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / "promotions.json").write_text("{")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PLURALIGN_DATA_DIR": str(data),
           "PLURALIGN_SHARED_DATA": str(tmp_path / "no-shared-data"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", "serve", "--port", "0"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "promotions.json: not a promotions file" in result.stderr, result.stderr[-1000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "service.app" not in imported and "lancedb" not in imported, sorted(imported)[:20]
    assert not (data / "api_keys.json").exists()
