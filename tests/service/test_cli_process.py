"""The `pluralign` process: offline for the model hub, whatever the caller's environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SAVE_ADAPTER = """
import training.cli  # the entry point: sets the process offline
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from pluralign.policy.adapters import AdapterMeta, save_adapter
model = get_peft_model(AutoModelForCausalLM.from_pretrained({folder!r}), LoraConfig(r=2, target_modules=["q_proj"]))
meta = AdapterMeta(kind="user", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", shots=0, data_version="x")  # a hub id, as served
save_adapter(model, {out!r}, meta)
print("offline:", __import__("huggingface_hub").constants.HF_HUB_OFFLINE)
"""


OFFLINE_AT_IMPORT = """
import training.cli  # the entry point: sets the process offline before anything imports huggingface_hub
import os, sys, huggingface_hub.constants as hub
print("offline:", hub.HF_HUB_OFFLINE, os.environ.get("TRANSFORMERS_OFFLINE"), "torch" in sys.modules)
"""


def test_the_entry_point_sets_the_process_offline_before_the_hub_is_imported():
    """What keeps the slow test below in the default suite: a process whose caller's environment says nothing of the
    hub is offline once `training.cli` is imported (the hub reads HF_HUB_OFFLINE once, at its import), so peft's save
    asks the hub for nothing. A process without torch or a model (~0.1 CPU-s against ~8)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", OFFLINE_AT_IMPORT], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "offline: True 1 False" in result.stdout, (result.stdout, result.stderr)


# ~8 CPU-s (a process loading torch, transformers and peft); fast: the test above and, the save asking the hub nothing,
# tests/service/test_reviewtail61a.py (`make test-cli`)
@pytest.mark.slow
def test_saving_an_adapter_does_not_reach_for_the_hub(tiny_generator_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = SAVE_ADAPTER.format(folder=str(tiny_generator_dir), out=str(tmp_path / "adapter"))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "offline: True" in result.stdout, result.stderr
    assert "Unable to fetch remote file" not in result.stderr and "Could not find a config file" not in result.stderr, result.stderr
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_first_start_shows_its_setup_progress(tiny_generator_dir, minilm, tmp_path, caplog):
    """`pluralign serve` logs each setup step with the time so far (the first start spends about a
    minute converting SmolLM2 and training the PAL checkpoint, which now says so as it starts)."""
    import logging

    from service.runtime import Runtime
    from service.settings import Settings

    # generating in this process: a generation child would cost seconds to start and the steps are the same
    settings = Settings(data_dir=str(tmp_path / "data"), generator=str(tiny_generator_dir), shared_data=str(tmp_path / "no-data"),
                        generation_process=False)
    with caplog.at_level(logging.INFO, logger="pluralign.service"):
        Runtime.build(settings, encoder=minilm)
    steps = [r.getMessage() for r in caplog.records if r.name == "pluralign.service"]
    wanted = ["loading the encoder", "loading the generator", "opening the tables", "loading the PAL reward model",
              "no PAL checkpoint", "done"]
    positions = [next(i for i, m in enumerate(steps) if w in m) for w in wanted]
    assert positions == sorted(positions), steps
    assert all(m.startswith("setup [") for m in steps if "loading the" in m)
