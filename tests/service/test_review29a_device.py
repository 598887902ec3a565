"""`PLURALIGN_DEVICE` naming a device this machine lacks (`cuda` on a CPU-only machine, a typo such
as `gpu`) is refused at start, naming the variable, by every command and by the service's settings,
and by the library's `default_device()`: before, `pluralign train em` loaded its data and encoder
and then died with torch's traceback ("AssertionError: Torch not compiled with CUDA enabled", or
"RuntimeError: Expected one of cpu, cuda, ... device type at start of device string: gpu")."""

from __future__ import annotations

import json

import pytest
import torch

from pluralign import device as device_module
from service.settings import Settings
from tests.service.test_break26b_unknown_variables import pluralign

ABSENT = "cuda:7" if torch.cuda.device_count() < 8 else "cuda:99"  # no machine here has 100 GPUs


def test_a_training_command_refuses_a_device_this_machine_lacks_before_any_work(tmp_path):
    with open(tmp_path / "prefs.jsonl", "w") as f:
        for user in "abc":
            for i in range(6):
                f.write(json.dumps({"user_id": user, "prompt": f"question {i}?", "chosen": f"short {i}", "rejected": f"a longer answer {i}"}) + "\n")
    result = pluralign(tmp_path, "train", "em", "--k", "1", "--protocol", "file", "--data", "prefs.jsonl", "--out", "em",
                       PLURALIGN_DEVICE=ABSENT)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pluralign: error: PLURALIGN_DEVICE {ABSENT!r} is not available on this machine ("), line
    assert "unset it" in line and not (tmp_path / "em").exists()


def test_the_service_settings_and_the_library_name_the_variable():
    with pytest.raises(ValueError, match=r"^PLURALIGN_DEVICE 'gpu' is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        Settings.load({"PLURALIGN_DEVICE": "gpu"})
    with pytest.raises(ValueError, match=rf"^PLURALIGN_DEVICE {ABSENT!r} is not available on this machine"):
        Settings.load({"PLURALIGN_DEVICE": ABSENT})
    assert Settings.load({"PLURALIGN_DEVICE": "cpu"}) is not None
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setenv("PLURALIGN_DEVICE", "gpu")
        device_module.default_device.cache_clear()
        with pytest.raises(ValueError, match=r"^PLURALIGN_DEVICE 'gpu' is not a torch device"):
            device_module.default_device()
    finally:
        monkeypatch.undo()
        device_module.default_device.cache_clear()
