"""newlib56: SmolLM2's one-time conversion into the model cache leaves nothing behind when two processes make it at once
(two `pluralign` commands started together on a fresh machine, or `make test`'s workers)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERT = "from pluralign.embed.models import smollm2_dir; print(smollm2_dir())"


@pytest.mark.slow  # two real conversions of SmolLM2 at once: 278-307 s at load ~14 on two cores (make test-generation)
def test_two_processes_converting_smollm2_at_once_leave_one_model_and_no_temporary_folder(tmp_path):
    """Each process saved the fp32 model into `<cache>/smollm2-135m-instruct-fp32.tmp<pid>` and renamed it into place
    only when no other process had yet: the slower one's 517 MB folder stayed in the cache, for good (this machine's
    ~/.cache/pluralign/models held three of them, 1.5 GB, from one `make test`)."""
    cache = tmp_path / "model cache ü"
    env = {**os.environ, "PLURALIGN_MODEL_CACHE": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": REPO}
    runs = [subprocess.Popen([sys.executable, "-c", CONVERT], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [run.communicate(timeout=900) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in results]
    target = cache / "smollm2-135m-instruct-fp32"
    assert {out.strip() for out, _ in results} == {str(target)}
    assert sorted(p.name for p in cache.iterdir()) == [target.name]
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
