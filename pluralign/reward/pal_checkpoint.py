"""A PAL checkpoint is a folder:

    model.safetensors    shared parameters only
    meta.json            msgspec `PALMeta`: schema version, encoder id, variant, K, sizes, metrics, and the sha256
                         of model.safetensors and user_weights.json (written last: `load_pal` checks them)
    user_weights.json    the `UserWeights` table of the training users, with the population prior

Loading checks the schema version, the encoder id (when the caller names one) and that the user
weights have the model's K, and refuses a mismatch with a ValueError that says what differs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
from safetensors.torch import save

from pluralign.checks import encoder_named
from pluralign.data.record import Persisted
from pluralign.device import usable_device
from pluralign.files import (
    PAL_CHECKPOINT,
    check_digests,
    file_digests,
    may_hold,
    read_description,
    read_safetensors,
    rewrite_description,
    rewritten_after_description,
    still_recorded,
    with_new_digest,
    write_atomic,
    write_description,
    writing_artifact,
)
from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.reward.user_weights import UserWeights

PAL_SCHEMA = 1
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
USER_WEIGHTS_FILE = "user_weights.json"


class PALMeta(Persisted):
    """A PAL checkpoint's meta.json: its schema, the encoder its D-d embeddings came from, the model's shape (`config`)
    and the digests `load_pal` checks its files against."""

    schema_version: int
    encoder_id: str
    variant: str
    k: int
    input_dim: int
    latent_dim: int
    hidden: int
    users: int = 0  # training users in user_weights.json
    # finite numbers only (`save_pal`); a null (a NaN an earlier release wrote) is dropped on reading
    metrics: dict[str, float | None] = {}
    # sha256 of model.safetensors and user_weights.json as written (a DELETE's rewrite records the new user_weights.json's);
    # `load_pal` refuses files that differ (`pluralign.files.FilesDiffer`): a replica watching PLURALIGN_PAL_DIR never
    # serves a copy under way (`cp` writes meta.json first) or a mix of two. {}: written by an earlier release, before digests were recorded
    files: dict[str, str] = {}

    def __post_init__(self) -> None:
        if any(v is None for v in self.metrics.values()):  # else load_pal and forget_users refused the checkpoint
            self.metrics = {k: v for k, v in self.metrics.items() if v is not None}

    def config(self) -> PALConfig:
        """The `PALConfig` the checkpoint's model was built with."""
        return PALConfig(variant=self.variant, k=self.k, input_dim=self.input_dim, latent_dim=self.latent_dim, hidden=self.hidden)


PAL_FILES = (META_FILE, MODEL_FILE, USER_WEIGHTS_FILE, "metrics.json")  # meta.json first: see save_pal


def _metric(name: str, value) -> float | None:
    """A metric as meta.json records it: a real number (numpy's too), or a 0-d tensor or numpy array of one (what
    `loss.detach()` gives), as a float; None (left out) for NaN, inf and what is no number (None, a note's text).
    ValueError naming `metrics[name]` for a tensor or array of more than one value or of complex numbers: such a
    tensor is not left out silently, a 0-d one too."""
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        shape = tuple(value.shape)
        held = value.detach().cpu() if hasattr(value, "detach") else value
        item = held.item() if not shape else None
        if not isinstance(item, numbers.Real):
            raise ValueError(f"`metrics[{name!r}]` must be a real number (or a 0-d tensor or array of one), got a "
                             f"{type(value).__name__} of shape {shape}" + (f" holding {item!r}" if item is not None else ""))
        value = item
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def save_pal(folder: str | Path, model: PALModel, user_weights: UserWeights, encoder_id: str, metrics: dict | None = None) -> None:
    """Write the checkpoint folder (created if missing). `folder` may hold only an earlier PAL
    checkpoint's files (PAL_FILES), which are replaced; anything else is a ValueError and nothing
    is written (`pluralign.files.check_artifact_folder`), and so is an `encoder_id` that names no encoder (not a
    str with a visible character: `pluralign.checks.encoder_named`). Each file is written whole (temp file and
    rename) and meta.json last, so a write stopped part way leaves no folder `load_pal` takes; another
    save into `folder` meanwhile is a `pluralign.files.ArtifactBusy` (ValueError) naming it. `metrics`:
    its finite real numbers (numpy scalars, 0-d tensors and arrays too) are recorded in meta.json (`PALMeta.metrics`),
    NaN, inf and what is no number left out, a tensor or array of more than one value a ValueError naming `metrics[name]`
    before anything is written: JSON holds no
    NaN or inf (`evaluate_pairs` gives NaN for no pairs); an earlier release wrote such a value as null (which
    an older `load_pal` refused, "not a description of a PAL checkpoint"): such a checkpoint loads, its null left out
    of `PALMeta.metrics`."""
    if user_weights.k != model.config.k:
        raise ValueError(f"user weights have K={user_weights.k}, the model has K={model.config.k}")
    encoder_named(encoder_id)
    c = model.config
    meta = PALMeta(
        schema_version=PAL_SCHEMA, encoder_id=encoder_id, variant=c.variant, k=c.k, input_dim=c.input_dim,
        latent_dim=c.latent_dim, hidden=c.hidden, users=len(user_weights),
        metrics={k: m for k, v in (metrics or {}).items() if (m := _metric(k, v)) is not None},
    )
    with writing_artifact(folder, PAL_FILES, "PAL checkpoint") as folder:
        write_atomic(folder / MODEL_FILE, save({name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}))
        user_weights.save(folder / USER_WEIGHTS_FILE)
        meta = msgspec.structs.replace(meta, files=file_digests(folder, (MODEL_FILE, USER_WEIGHTS_FILE)))
        write_description(folder, meta)


def read_meta(folder: str | Path) -> PALMeta:
    """The checkpoint's `PALMeta` (`pluralign.files.read_description`). Raises FileNotFoundError when `folder` has
    no meta.json (not a checkpoint, or one whose writing stopped part way: meta.json is written last), and
    ValueError naming the file when it is not JSON, describes another kind of artifact (an EM mixture's `kind`),
    another schema version, or lacks or mistypes a field."""
    return read_description(Path(folder), PAL_CHECKPOINT, PAL_SCHEMA, PALMeta, "a PAL checkpoint",
                            description="a PAL checkpoint description")


def load_pal(folder: str | Path, encoder_id: str | None = None, device=None, *, dim: int | None = None) -> tuple[PALModel, UserWeights, PALMeta]:
    """Rebuild the model (in eval mode, on `device` or the default one) and its user-weights table
    (K logits per training user, float32). `device` ("cpu", "cuda:0", a torch.device) plays
    `map_location`'s part: a checkpoint trained on a GPU loads on a CPU-only machine with
    device="cpu". Raises FileNotFoundError for a missing file, ValueError naming `device` when
    this machine lacks it (`pluralign.device.usable_device`), and ValueError naming the file for
    any other mismatch: another encoder, vectors of another size than `dim` (the encoder's: a
    checkpoint of input_dim 768 would fail every score on 384-d vectors), a truncated
    model.safetensors, weights whose shapes disagree with meta.json, user weights of another K; and
    `pluralign.files.FilesDiffer` (a ValueError) naming the file that is not the one meta.json records (a copy under way,
    two copies mixed: unchecked, a model.safetensors of the same shapes would load beside another's meta.json)."""
    device = usable_device(device)
    folder = Path(folder)
    meta = read_meta(folder)
    if encoder_id is not None and meta.encoder_id != encoder_id:
        raise ValueError(
            f"{folder} was trained on embeddings from {meta.encoder_id!r}, not {encoder_id!r}: "
            "its rewards mean nothing on another encoder's vectors; retrain or pick the matching encoder"
        )
    if dim is not None and meta.input_dim != dim:
        raise ValueError(
            f"{folder / META_FILE}: the checkpoint scores vectors of input_dim={meta.input_dim}, the encoder "
            f"{encoder_id or ''}{' ' if encoder_id else ''}gives {dim}-d vectors: retrain it on this encoder's embeddings"
        )
    try:  # a variant this release does not know (a later one's), a K of 0: named with the file, as every mismatch is
        config = meta.config()
    except ValueError as exc:
        raise ValueError(f"{folder / META_FILE}: describes no PAL model this release builds: {exc}") from None
    model = PALModel(config)
    try:
        model.load_state_dict(read_safetensors(folder / MODEL_FILE))
    except RuntimeError as exc:  # missing, unexpected or differently shaped parameters
        problem = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ValueError(
            f"{folder / MODEL_FILE} does not match {META_FILE} (variant {meta.variant}, K={meta.k}, input_dim={meta.input_dim}, "
            f"latent_dim={meta.latent_dim}, hidden={meta.hidden}): {problem}"
        ) from None
    user_weights = UserWeights.load(folder / USER_WEIGHTS_FILE, k=meta.k)
    check_digests(folder, meta.files)  # last: a damaged file is named for what is wrong with it first
    return model.to(device).eval(), user_weights, meta


def forget_users(folder: str | Path, forget: Callable[[str], bool]) -> int:
    """Remove the user-weights rows of the training users `forget(user_id)` picks, for a DELETE.

    Only their rows go: the shared parameters (prototypes) and the population prior were learned
    from them too and stay until a retrain. user_weights.json is rewritten whole (temp file and
    rename), then meta.json with the new `users` count, so the checkpoint loads at every step.
    Returns the rows removed (0: nothing written). Raises what `read_meta` and `UserWeights.load` do
    for a folder that is not a whole PAL checkpoint, once its user_weights.json's bytes may hold a user `forget` picks
    (`may_hold`): a checkpoint this release cannot read (put into PLURALIGN_PAL_DIR, not served) fails the DELETEs of
    its own training users only (not every DELETE's: meta.json is not read first)."""
    folder = Path(folder)
    if (folder / USER_WEIGHTS_FILE).is_file() and not may_hold(forget, folder / USER_WEIGHTS_FILE):
        return 0
    meta = read_meta(folder)
    matched = still_recorded(folder, meta.files, USER_WEIGHTS_FILE)  # a DELETE must not make a mix load
    gone, left = forget_weight_rows(folder / USER_WEIGHTS_FILE, forget, k=meta.k)
    if gone:
        files = with_new_digest(folder, meta.files, USER_WEIGHTS_FILE) if matched else meta.files
        rewrite_description(folder, {"users": left, "metrics": meta.metrics, "files": files}, META_FILE)
    return gone


def record_rewritten_user_weights(folder: str | Path) -> bool:
    """Record in meta.json the digest (and `users` count) of a user_weights.json a DELETE rewrote without doing so
    (`pluralign.files.rewritten_after_description`: a release before replicas50's, or one of this release killed
    between its two writes), when every other file is the one meta.json records; else change nothing. Returns whether
    it was recorded. For the caller holding the folder's lock (`pluralign.files.folder_lock`), no copy under way.
    Raises what `read_meta` and `UserWeights.load` do."""
    folder = Path(folder)
    meta = read_meta(folder)
    if not rewritten_after_description(folder, meta.files, USER_WEIGHTS_FILE, META_FILE):
        return False
    left = len(UserWeights.load(folder / USER_WEIGHTS_FILE, k=meta.k))
    files = with_new_digest(folder, meta.files, USER_WEIGHTS_FILE)
    rewrite_description(folder, {"users": left, "metrics": meta.metrics, "files": files}, META_FILE)
    return True


def forget_weight_rows(path: str | Path, forget: Callable[[str], bool], k: int | None = None) -> tuple[int, int]:
    """Rewrite the user-weights file at `path` (temp file and rename) without the rows `forget(user_id)`
    picks; nothing is written when none is picked. Returns (rows removed, rows left). Raises what
    `UserWeights.load` does (`k`: the K it must have). When `forget` says which names it may be written as
    (`may_name`: a DELETE's `pluralign.store.deletions.Forget`) and the file's bytes hold none of them, it is
    not decoded: (0, -1), rows left not counted (a DELETE of a user outside a 100,000-user file: 9 ms, not 235)."""
    if not may_hold(forget, path):
        return 0, -1
    data = Path(path).read_bytes()
    weights = UserWeights.load(path, k=k)  # checked whole first: a file this release cannot read is not rewritten
    gone = [u for u in weights.users() if forget(u)]
    if gone:  # the rows left as the file holds them: a field a later release added to the file or a row stays
        raw = msgspec.json.decode(data)
        for user_id in gone:
            del raw["users"][user_id]
        write_atomic(path, msgspec.json.encode(raw))
    return len(gone), len(weights) - len(gone)
