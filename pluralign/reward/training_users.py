"""The training users a population artifact names (a PAL checkpoint's user weights, an EM mixture's
memberships), and removing them for a DELETE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from pluralign.reward import em, pal_checkpoint


def artifact_kind(folder: str | Path) -> str | None:
    """"pal" or "em" for a whole PAL checkpoint or EM mixture (told apart by meta.json), None for
    any other folder: no meta.json (another artifact, or one whose write has not finished), or
    one that is not JSON or describes something else."""
    path = Path(folder) / "meta.json"
    try:
        meta = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("kind") == "em-bt-mixture":
        return "em"
    return "pal" if "variant" in meta and "kind" not in meta else None


def forget_training_users(folder: str | Path, forget: Callable[[str], bool]) -> int:
    """Remove the per-user rows of the training users `forget(user_id)` picks from the PAL
    checkpoint or EM mixture at `folder` (`pal_checkpoint.forget_users`, `em.forget_users`); any
    other folder is left alone. What the shared parameters learned from those users stays: only a
    retrain without them removes it. Returns the rows removed."""
    kind = artifact_kind(folder)
    if kind == "pal":
        return pal_checkpoint.forget_users(folder, forget)
    if kind == "em":
        return em.forget_users(folder, forget)
    return 0
