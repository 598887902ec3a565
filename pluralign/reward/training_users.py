"""The training users a population artifact names (a PAL checkpoint's user weights, an EM mixture's
memberships), and removing them for a DELETE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from pluralign.files import DECODE_ERRORS, folder_lock, stopped_artifact
from pluralign.reward import em, pal_checkpoint


def artifact_kind(folder: str | Path) -> str | None:
    """"pal" or "em" for a whole PAL checkpoint or EM mixture (told apart by meta.json), None for
    any other folder: no meta.json (another artifact, or one whose write has not finished), or
    one that is not JSON or describes something else."""
    path = Path(folder) / "meta.json"
    try:
        meta = msgspec.json.decode(path.read_bytes())
    except (OSError, *DECODE_ERRORS):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("kind") == "em-bt-mixture":
        return "em"
    return "pal" if "variant" in meta and "kind" not in meta else None


def forget_training_users(folder: str | Path, forget: Callable[[str], bool], *, shared: bool = False) -> int:
    """Remove the per-user rows of the training users `forget(user_id)` picks from the PAL
    checkpoint or EM mixture at `folder` (`pal_checkpoint.forget_users`, `em.forget_users`), and from the other kind's
    per-user file an earlier model copied there left beside it (`_forget_left_behind`); any other folder is left alone. What the shared parameters learned from those users stays: only a
    retrain without them removes it. Returns the rows removed.

    `shared`: other processes rewrite `folder` too (PLURALIGN_PAL_DIR, which replicas share): the read and the
    rewrite are made under `pluralign.files.folder_lock`, so they take turns: otherwise two
    replicas each removing a user would rewrite the file from what each had read, one putting the other's user back."""
    if shared and artifact_kind(folder) is not None:  # (no lock file is made beside a folder holding no model)
        with folder_lock(folder):
            return forget_training_users(folder, forget)
    kind = artifact_kind(folder)
    if kind == "pal":
        return pal_checkpoint.forget_users(folder, forget) + _forget_left_behind(folder, em.USERS_FILE, forget)
    if kind == "em":
        return em.forget_users(folder, forget) + _forget_left_behind(folder, pal_checkpoint.USER_WEIGHTS_FILE, forget)
    return 0


def record_rewritten_per_user_file(folder: str | Path) -> str | None:
    """The per-user file (user_weights.json, users.jsonl) of the PAL checkpoint or EM mixture at `folder` whose digest
    meta.json records anew because a DELETE rewrote it after meta.json and did not (`pal_checkpoint.
    record_rewritten_user_weights`, `em.record_rewritten_users`); None when nothing was recorded (the files match, or
    differ otherwise: a copy under way, a mix of two, a damaged file). For a caller holding the folder's lock."""
    kind = artifact_kind(folder)
    if kind == "pal" and pal_checkpoint.record_rewritten_user_weights(folder):
        return pal_checkpoint.USER_WEIGHTS_FILE
    if kind == "em" and em.record_rewritten_users(folder):
        return em.USERS_FILE
    return None


def _forget_left_behind(folder: str | Path, per_user: str, forget: Callable[[str], bool]) -> int:
    """The other kind's per-user file in `folder`, left by the model served there before (an EM mixture copied over
    a PAL checkpoint leaves its user_weights.json, a PAL checkpoint over an EM mixture its users.jsonl: deploy/README.md
    copies a job's artifact into PLURALIGN_PAL_DIR with `cp artifact/*`), rewritten without the users `forget` picks as
    the served one is, so a DELETE leaves no training user's row there. Returns the rows removed."""
    path = Path(folder) / per_user
    if not path.is_file():
        return 0
    if per_user == em.USERS_FILE:
        return em.forget_users(folder, forget)
    return pal_checkpoint.forget_weight_rows(path, forget)[0]


def forget_stopped_users(folder: str | Path, forget: Callable[[str], bool]) -> int:
    """What a stopped save of a PAL checkpoint or EM mixture left at `folder` (its files without
    meta.json, which is written last: `pluralign.files.stopped_artifact`) still holds the training
    users' rows: the per-user file (user_weights.json, users.jsonl) is rewritten without those
    `forget(user_id)` picks and the temp files of a write killed part way are removed. Only for a
    folder no save is writing to (its job has ended). Any other folder is left alone. Returns the
    files rewritten or removed."""
    folder = Path(folder)
    if stopped_artifact(folder, pal_checkpoint.PAL_FILES):
        per_user = pal_checkpoint.USER_WEIGHTS_FILE
    elif stopped_artifact(folder, em.EM_FILES):
        per_user = em.USERS_FILE
    else:
        return 0
    changed = 0
    for temp in folder.glob(f".{per_user}.*"):  # whatever it holds of the file, whole or not
        temp.unlink(missing_ok=True)
        changed += 1
    path = folder / per_user
    if not path.is_file():
        return changed
    if per_user == em.USERS_FILE:
        return changed + (1 if em.forget_users(folder, forget) else 0)
    return changed + (1 if pal_checkpoint.forget_weight_rows(path, forget)[0] else 0)
