"""The compute device, chosen once per process: CUDA when present, else CPU."""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def default_device() -> torch.device:
    """`PLURALIGN_DEVICE` overrides; otherwise the first CUDA device when one is visible."""
    name = os.environ.get("PLURALIGN_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def usable_device(device, name: str = "device") -> torch.device:
    """`device` (a torch.device, or a name such as "cpu", "cuda:0", "mps") as a torch.device this
    machine has, the way `torch.load(map_location=...)` is used to bring a GPU-trained artifact to
    a CPU. None is `default_device()`. Raises ValueError naming `name` for a string torch does not
    know, and for a CUDA or MPS device this machine lacks (no GPU, or no such index), before
    anything is read, rather than torch's AssertionError part way through a load."""
    if device is None:
        return default_device()
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"`{name}` {device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise ValueError(f"`{name}` {device!r} is not available on this machine ({count} CUDA devices): "
                             "load with device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"`{name}` {device!r} is not available on this machine (no MPS): load with device='cpu'")
    return dev
