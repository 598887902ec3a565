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
