"""Checks of what a caller hands the reward models: embeddings, a user's logits, a positive knob.

Each raises ValueError naming the argument and what is wrong with it, before anything is fitted:
a fit on NaN embeddings takes no step and returns its prior as if it had learned, and a wrong
width or count otherwise fails deep inside a matrix product with a message about `mat1`."""

from __future__ import annotations

import math

import numpy as np
import torch

# the config checks live torch-free in pluralign.checks (the audit's process imports no torch); importable from here too
from pluralign.checks import above_zero as above_zero
from pluralign.checks import at_least as at_least
from pluralign.checks import seed_in_range as seed_in_range
from pluralign.checks import whole as whole

_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def as_numbers(name: str, value, what: str) -> torch.Tensor:
    """`value` (a tensor, a numpy array or nested sequences) as a tensor of its own real dtype;
    ValueError naming `name` when it is not numbers or is a tensor on the meta device (`what` says
    what was expected)."""
    try:
        if isinstance(value, torch.Tensor):
            t = value
        else:
            array = np.asarray(value)
            t = torch.as_tensor(array if array.flags.writeable else array.copy())  # torch warns on read-only arrays
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"`{name}` is not {what}") from None
    if t.is_meta:  # a shape without numbers (a model built under init_empty_weights): nothing can be copied out
        raise ValueError(f"`{name}` is on the meta device: it holds no numbers; give {what} on the CPU or the model's device")
    if not (t.is_floating_point() or t.dtype in _INTEGER):
        raise ValueError(f"`{name}` holds {t.dtype}, not real numbers")
    return t


def first_bad_row(t: torch.Tensor) -> int | None:
    """The first row (along dim 0) holding a NaN or inf, or None."""
    finite = torch.isfinite(t.reshape(t.shape[0], -1)).all(-1) if t.dim() else torch.isfinite(t).reshape(1)
    return None if bool(finite.all()) else int((~finite).nonzero()[0, 0])


def one_row(value, dim: int):
    """One comparison's embedding given as (dim,) as the one row (1, dim) it is (`fit_user` reads one
    comparison so); anything else as it is, for `comparison_rows` to check (and name its shape)."""
    if np.ndim(value) != 1 or len(value) != dim:
        return value
    return value[None] if isinstance(value, torch.Tensor) else np.asarray(value)[None]


def comparison_rows(dim: int, device: torch.device | str | None = None, **named) -> list[torch.Tensor]:
    """Embeddings of N comparisons, each named argument (N, dim), as float32 tensors on `device`,
    in the order given: `comparison_rows(8, prompt=p, chosen=c, rejected=r)`. Takes tensors or
    numpy arrays of any real dtype. Raises ValueError naming the argument that is not numbers, is
    not (N, dim) (`dim`: the width the model reads, its input_dim), has another number of rows than
    the first, or holds a value that is not finite (NaN or inf; the first such row is named)."""
    out: list[torch.Tensor] = []
    first: tuple[str, int] | None = None
    for name, value in named.items():
        t = as_numbers(name, value, f"an (N, {dim}) array of numbers")
        if t.dim() != 2 or t.shape[1] != dim:
            raise ValueError(f"`{name}` has shape {tuple(t.shape)}; the model reads (N, {dim}) embeddings (input_dim={dim})")
        if first is None:
            first = (name, t.shape[0])
        elif t.shape[0] != first[1]:
            raise ValueError(f"`{name}` has {t.shape[0]} rows, `{first[0]}` has {first[1]}: one row per comparison")
        t = t.to(device=device, dtype=torch.float32)
        row = first_bad_row(t) if len(t) else None
        if row is not None:
            raise ValueError(f"`{name}` row {row} is not finite (NaN or inf): embeddings must be finite numbers")
        out.append(t)
    return out


def logits_row(name: str, logits, k: int, minus_inf: bool = False) -> torch.Tensor:
    """A user's K logits as a float32 tensor (K,) on the CPU; ValueError naming `name` when they
    are not K finite numbers. `minus_inf` lets a component have no weight at all (-inf: an EM
    head no training user chose)."""
    t = as_numbers(name, logits, f"{k} numbers").detach().cpu().float()
    if t.dim() != 1 or t.shape[0] != k:
        raise ValueError(f"`{name}` has {t.numel()} values (shape {tuple(t.shape)}), the model has K={k}")
    if not bool((torch.isfinite(t) | (minus_inf & (t == float("-inf")))).all()):
        raise ValueError(f"`{name}` is not finite (NaN or inf): {t.tolist()}")
    return t


def positive(name: str, value) -> float:
    """`value` as a float when it is a finite number > 0; else a ValueError naming `name`."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    return float(value)


def owners(user, n_rows: int, n_users: int, name: str = "user") -> torch.Tensor:
    """Each comparison's user index (N,) as int64 on the CPU; ValueError naming `name` when it is not
    N integers in 0 .. n_users - 1."""
    t = as_numbers(name, user, f"{n_rows} user indices").detach().cpu()
    if t.dim() != 1 or t.shape[0] != n_rows:
        raise ValueError(f"`{name}` has {t.shape[0] if t.dim() else 0} rows (shape {tuple(t.shape)}), the comparisons {n_rows}: "
                         "one user index per comparison")
    if t.is_floating_point():
        raise ValueError(f"`{name}` holds {t.dtype}, not integer user indices")
    if n_rows and (int(t.min()) < 0 or int(t.max()) >= n_users):
        bad = int(t[(t < 0) | (t >= n_users)][0])
        raise ValueError(f"`{name}` must index the users 0 .. {n_users - 1} (n_users={n_users}), got {bad}")
    return t.long()


