"""The compute device, chosen once per process: CUDA when present, else CPU."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import torch

VARIABLE = "PLURALIGN_DEVICE"
_VARIABLE_FIX = f"set {VARIABLE}=cpu, or unset it (the first CUDA device when there is one, else the CPU)"


@functools.cache
def default_device() -> torch.device:
    """`PLURALIGN_DEVICE` overrides (ValueError naming it when this machine lacks that device, as
    `check_device_variable` says); otherwise the first CUDA device when one is visible."""
    name = os.environ.get(VARIABLE)
    if name:
        return usable_device(name, VARIABLE, _VARIABLE_FIX)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device_variable(environ: Mapping[str, str]) -> None:
    """At start (every CLI command, the service's settings): ValueError naming PLURALIGN_DEVICE when
    `environ` sets it to a name torch does not know or a device this machine lacks, before any work
    (not torch's AssertionError once data and models are loaded)."""
    if environ.get(VARIABLE):
        usable_device(environ[VARIABLE], VARIABLE, _VARIABLE_FIX)


def usable_device(device, name: str = "`device`", fix: str = "load with device='cpu'") -> torch.device:
    """`device` (a torch.device, or a name such as "cpu", "cuda:0", "mps") as a torch.device this
    machine has, the way `torch.load(map_location=...)` is used to bring a GPU-trained artifact to
    a CPU. None is `default_device()`. Raises ValueError naming `name` for a string torch does not
    know, and for a CUDA or MPS device this machine lacks (no GPU, or no such index; `fix` says
    what to do), before anything is read, rather than torch's AssertionError part way through a load."""
    if device is None:
        return default_device()
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} {device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise ValueError(f"{name} {device!r} is not available on this machine ({count} CUDA devices): {fix}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {device!r} is not available on this machine (no MPS): {fix}")
    return dev
