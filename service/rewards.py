"""The PAL reward model as the service uses it: a population prior, per-user scoring and fast refits.

At first start with no checkpoint in the data folder, one is trained on a small persona population
(from the shared data folder, on cached MiniLM embeddings: a few seconds) and saved there. Without
that data the service falls back to an untrained model and says so in /health.
"""

from __future__ import annotations

import hashlib
import logging
from itertools import combinations
from pathlib import Path

import msgspec
import numpy as np
import torch

from pluralign.data.record import Persisted
from pluralign.embed.base import Encoder
from pluralign.files import DECODE_ERRORS, FilesDiffer, file_digests, folder_lock, read_description, stopped_artifact
from pluralign.reward.em import SCHEMA_VERSION as EM_SCHEMA
from pluralign.reward.em import USERS_FILE, EMMeta, EMMixture
from pluralign.reward.pal import PALConfig, PALModel, PALTrainConfig, load_pal, save_pal, train_pal
from pluralign.reward.pal_checkpoint import META_FILE, PAL_FILES, USER_WEIGHTS_FILE, PALMeta, read_meta
from pluralign.reward.training_users import artifact_kind, record_rewritten_per_user_file
from pluralign.reward.user_weights import UserWeights
from pluralign.user import UserModel

log = logging.getLogger("pluralign.service")

BOOTSTRAP_GROUPS = 4  # persona groups (and PAL prototypes) of the bootstrap checkpoint


def checkpoint_version(folder: Path, fields: frozenset[str] | None = None) -> str:
    """A short hash of the population model in the checkpoint: user logits record it and are
    refitted when it changes. The training users' own rows are left out (PAL's user_weights.json
    rows, of which only K and the prior are hashed; EM's users.jsonl; meta.json's `users` count and `files` digests,
    the files being hashed themselves), so
    a DELETE removing one of them (`pluralign.reward.training_users`) makes no other user's fit stale. Hidden files
    (a rewrite's temp file, ".<file>.<random>", under way or left by a kill) are no part of the model: hashed, one
    would have a replica started beside it serve the model under another version.
    `fields`: the meta.json fields hashed (default: those this release reads; `checkpoint_versions` gives those
    another release reads, for the version it gives the folder)."""
    return _version_of(_hashed_parts(folder), fields)


class _PerUserFile(msgspec.Struct, forbid_unknown_fields=False):
    """What `checkpoint_version` hashes of PAL's user_weights.json: K and the prior, not the training users' rows
    (skipped unread: a 100,000-user file decoded whole took ~1 s)."""

    k: object = None
    prior: object = None


_read_per_user_file = msgspec.json.Decoder(_PerUserFile).decode


def _hashed_parts(folder: Path) -> list[tuple[str, bytes | dict]]:
    """(file name, what `checkpoint_version` hashes of it) of each file of the model in `folder`, in order: meta.json's
    JSON object decoded (its fields are chosen by `_version_of`), every other file as bytes."""
    parts: list[tuple[str, bytes | dict]] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.name == USERS_FILE:
            continue
        data = path.read_bytes()
        if path.name == USER_WEIGHTS_FILE:
            try:
                header = _read_per_user_file(data)
            except DECODE_ERRORS:  # not a JSON object: hashed as it is (loading refuses it)
                header = None
            if header is not None:
                data = msgspec.json.encode({"k": header.k, "prior": header.prior})
        elif path.name == META_FILE:
            try:
                decoded = msgspec.json.decode(data)
            except DECODE_ERRORS:
                decoded = None  # hashed as it is: loading refuses it anyway
            if isinstance(decoded, dict):
                parts.append((path.name, decoded))
                continue
        parts.append((path.name, data))
    return parts


def _version_of(parts: list[tuple[str, bytes | dict]], fields: frozenset[str] | None) -> str:
    """`checkpoint_version` of the files `_hashed_parts` read, meta.json's `fields` hashed (None: this release's)."""
    digest = hashlib.sha256()
    for name, data in parts:
        if isinstance(data, dict):
            known = _described_fields(data)
            known = known if known is None or fields is None else fields
            data = msgspec.json.encode({k: v for k, v in data.items()
                                        if k not in ("users", "files") and (known is None or k in known)}, order="sorted")
        digest.update(name.encode())
        digest.update(data)
    return digest.hexdigest()[:16]


# the meta.json fields every release since upgrade51 reads (and hashes into its version), PALMeta's and EMMeta's as of
# release versions53: a later release knows these and maybe more (`checkpoint_versions`). Written out, not read off the
# structs, which a later release extends
DESCRIBED_SINCE_UPGRADE51 = {
    "pal": frozenset({"schema_version", "encoder_id", "variant", "k", "input_dim", "latent_dim", "hidden", "users",
                      "metrics", "files"}),
    "em": frozenset({"schema_version", "kind", "encoder_id", "k", "dim", "features", "assignment", "files"}),
}
OTHER_RELEASES_FIELDS = 4  # most further meta.json fields whose every combination `checkpoint_versions` hashes


def checkpoint_versions(folder: Path) -> set[str]:
    """The population versions (`checkpoint_version`) releases give the model in `folder`, /health's `pal.version`
    in each: a release hashes the meta.json fields it knows (releases since upgrade51), so a field only some releases
    know (a later release's) is hashed by those alone. This release's version, and the version over the fields every
    release knows (DESCRIBED_SINCE_UPGRADE51) with each combination of the others meta.json has (every one up to
    OTHER_RELEASES_FIELDS of them; past that, none and all, as a release before upgrade51 hashed). What `pluralign
    promote --if-version` takes, so a version read off another release's /health is not refused for the same folder."""
    try:
        meta = msgspec.json.decode((Path(folder) / META_FILE).read_bytes())
    except (OSError, *DECODE_ERRORS):
        meta = None
    if not isinstance(meta, dict) or _described_fields(meta) is None:  # no description a release reads: hashed whole
        return {checkpoint_version(folder)}
    base = DESCRIBED_SINCE_UPGRADE51["em" if "kind" in meta else "pal"]
    others = sorted(set(meta) - base)
    sizes = range(len(others) + 1) if len(others) <= OTHER_RELEASES_FIELDS else (0, len(others))
    parts = _hashed_parts(folder)  # the files read once, only meta.json's fields vary (each
    # version reading them afresh: 17 reads of a 12 MB user_weights.json, 19 s under `.pal.lock` in `promote --if-version`)
    return {_version_of(parts, None), *(_version_of(parts, base | frozenset(chosen))
                                        for size in sizes for chosen in combinations(others, size))}


WEIGHTS_SUFFIX = ".safetensors"  # a population model's weights: PAL's model.safetensors, an EM mixture's heads.safetensors


def weights_digest(folder: Path) -> str | None:
    """A short sha256 of the population model's weights in `folder` (each `*.safetensors` file's name and sha256, in
    name order; `pluralign.files.file_digests`), or None when it holds none. Unlike `checkpoint_version`, it depends on
    the files' bytes alone, not on which meta.json fields the running release knows: two releases serving one folder
    say the same (replicas compare it at start: `service.runtime.refuse_another_model`). Descriptions, metrics and
    the per-user files a DELETE rewrites are no part of it. Raises OSError when a weights file cannot be read."""
    names = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WEIGHTS_SUFFIX)
                   and not p.name.startswith("."))  # a rewrite's temp file is no part of the model
    if not names:
        return None
    digest = hashlib.sha256()
    for name, sha in file_digests(folder, names).items():
        digest.update(f"{name} {sha}\n".encode())
    return digest.hexdigest()[:16]


# what a PAL checkpoint's and an EM mixture's meta.json say that changes what is served (how the weights are read, and
# on which encoder's vectors): `model_digest` hashes these, not the metrics, counts and digests a DELETE or a later
# release changes
SERVED_FIELDS = {"pal": ("encoder_id", "variant", "k", "input_dim", "latent_dim", "hidden"),
                 "em": ("kind", "encoder_id", "k", "dim", "features", "assignment")}


class _PriorOnly(Persisted):
    """What `model_digest` reads of PAL's user_weights.json: the population prior (K,), not the training users' rows."""

    prior: list[float]


_read_prior = msgspec.json.Decoder(_PriorOnly).decode


def model_digest(folder: Path) -> str | None:
    """A short sha256 of everything in `folder` that changes what is served, and nothing else: each `*.safetensors`
    file's name and sha256 (`weights_digest`'s lines: PAL's model.safetensors, an EM mixture's heads.safetensors,
    whose log mixing weights are its prior), the meta.json fields that say how they are read (SERVED_FIELDS), and
    PAL's population prior (user_weights.json's `prior`, as served: float32). Not metrics.json, meta.json's `metrics`,
    `users` or `files`, nor the training users' rows (user_weights.json's, users.jsonl), which a DELETE rewrites. It
    depends on the values alone, not on which fields the running release knows nor on how a writer spells a number, so
    two releases serving one folder give the same: `/health`'s `pal.digest`, what `pluralign promote --if-version`
    takes, and what replicas compare at start (`service.runtime.refuse_another_model`). Not `weights_digest`
    alone, by which two folders of the same weights with other priors would read as the same model.
    None when `folder` holds no weights file. Raises OSError when a file cannot be read."""
    folder = Path(folder)
    weights = weights_digest(folder)
    if weights is None:
        return None
    kind = artifact_kind(folder)
    try:
        meta = msgspec.json.decode((folder / META_FILE).read_bytes())
    except (OSError, *DECODE_ERRORS):
        meta = None
    served: dict = {"weights": weights}
    if isinstance(meta, dict):
        # a field absent is left out, not hashed as null: a later release reading one more (SERVED_FIELDS) gives a
        # folder without it this release's digest (not another, for every such folder)
        served["meta"] = {name: meta[name] for name in SERVED_FIELDS.get(kind or "pal", ()) if name in meta}
    if kind == "pal":
        data = (folder / USER_WEIGHTS_FILE).read_bytes() if (folder / USER_WEIGHTS_FILE).is_file() else b""
        try:
            served["prior"] = np.asarray(_read_prior(data).prior, np.float32).tolist()  # as `UserWeights.load` serves it
        except (msgspec.DecodeError, ValueError, OverflowError):
            served["prior"] = hashlib.sha256(data).hexdigest()  # loading refuses it: hashed as it is
    return hashlib.sha256(msgspec.json.encode(served, order="sorted")).hexdigest()[:16]


def _described_fields(meta: dict) -> frozenset[str] | None:
    """The fields of a PAL checkpoint's (no `kind`) or an EM mixture's meta.json this release reads, which alone are
    hashed into `checkpoint_version`: a field a later release adds to the description of the same model (as replicas50
    added `files`) then changes no version here, so no user is refitted for it nor the model taken up again.
    None for another kind's description (loading refuses it): hashed whole."""
    if "kind" not in meta:
        return frozenset(PALMeta.__struct_fields__)
    if meta["kind"] == "em-bt-mixture":
        return frozenset(EMMeta.__struct_fields__)
    return None


class UserRewards:
    """The served population model (a PAL or an EM mixture, trained or, failing data, untrained)
    with its population prior, and the user model on top of it."""

    def __init__(self, model: PALModel | EMMixture, prior_logits: np.ndarray, version: str, trained: bool, note: str = "",
                 weights: str | None = None, digest: str | None = None):
        self.model = model.eval() if isinstance(model, PALModel) else model
        self._prior = np.asarray(prior_logits, np.float32)  # (K,)
        self.version = version
        self.weights = weights  # `weights_digest` of the folder it was loaded from (None: untrained, built here)
        self.digest = digest  # and its `model_digest`, the same whatever the release (None likewise)
        self.trained = trained
        self.note = note
        self.user_model = UserModel(self.model, population=version, prior_logits=self._prior)  # population + each user's own part
        self.kind = self.user_model.base.kind

    @staticmethod
    def check_description(folder: str | Path) -> None:
        """Read the meta.json of the checkpoint or mixture `load` would read at `folder`, without its
        weights (a start checks it before loading any model): raises ValueError naming the file when
        it is damaged or describes another artifact. A folder without meta.json passes (none there,
        or what a stopped bootstrap left: `load_or_bootstrap` trains again)."""
        folder = Path(folder)
        if (folder / META_FILE).exists() and artifact_kind(folder) != "em":
            read_meta(folder)

    @staticmethod
    def check_rewritable(folder: str | Path) -> None:
        """Check the descriptions of the population model at `folder` that a DELETE rewrites without being served
        (PLURALIGN_PAL_DIR while a promoted model is: `Runtime.forget_population_users`): a PAL checkpoint's meta.json
        and the header of its user_weights.json, an EM mixture's meta.json. Raises ValueError naming the file, its
        schema and the one this release reads (`pluralign.files.other_schema`) when it is of another schema or damaged.
        A folder without meta.json passes (nothing there to rewrite)."""
        folder = Path(folder)
        if not (folder / META_FILE).exists():
            return
        if artifact_kind(folder) == "em":
            read_description(folder, "em-bt-mixture", EM_SCHEMA, EMMeta, "an EM mixture artifact (em-bt-mixture)")
            return
        meta = read_meta(folder)
        UserWeights.check_header(folder / USER_WEIGHTS_FILE, k=meta.k)

    @classmethod
    def load(cls, folder: str | Path, encoder_id: str, dim: int | None = None) -> UserRewards:
        """A PAL checkpoint or an EM mixture artifact (told apart by its meta.json); raises
        ValueError naming the file for one trained on another encoder or on vectors of another size than
        `dim` (the served encoder's: each score would fail), written by another schema, or
        damaged (a meta.json that is not a JSON object is read as a PAL checkpoint's, and refused so)."""
        folder = Path(folder)
        if artifact_kind(folder) == "em":
            mixture = EMMixture.load(folder, encoder_id, dim)
            prior = mixture._heads()[1].double().cpu().numpy()  # log mixing weights
            return cls(mixture, prior, checkpoint_version(folder), trained=True, note=f"EM mixture loaded from {folder}",
                       weights=weights_digest(folder), digest=model_digest(folder))
        model, user_weights, _ = load_pal(folder, encoder_id=encoder_id, dim=dim)
        prior = torch.as_tensor(user_weights.prior()).detach().float().cpu().numpy()
        return cls(model, prior, checkpoint_version(folder), trained=True, note=f"loaded from {folder}",
                   weights=weights_digest(folder), digest=model_digest(folder))

    @classmethod
    def load_after_rewrites(cls, folder: str | Path, encoder_id: str, dim: int | None = None) -> UserRewards:
        """`load`, taking up a per-user file a DELETE rewrote after meta.json without recording its digest there (a
        release before replicas50's DELETE during a rolling upgrade, or one of this release killed between its two
        writes: `training_users.record_rewritten_per_user_file`): the digest is recorded and a WARNING names the
        file. Any other file that differs (a copy under way, a mix of two) is refused as `load` refuses it
        (`pluralign.files.FilesDiffer`). For a caller holding the folder's lock where others share it (a start, a
        DELETE's reload of the model it serves, a replica taking up a new EM mixture once the folder settled:
        `service.pal_dir`). Refused,
        such a folder would stop a start until the next promotion, and every DELETE of one of
        an EM mixture's training users would answer 500, its row left in the mixture served."""
        try:
            return cls.load(folder, encoder_id, dim)
        except FilesDiffer as exc:
            name = record_rewritten_per_user_file(folder)
            if name is None:
                raise
            log.warning("%s was rewritten after %s/meta.json without its digest recorded there (a DELETE by a release "
                        "before replicas50, or one killed part way), while every other file is the one meta.json "
                        "records: its digest is recorded now and the model served (%s)", Path(folder) / name, folder, exc)
        return cls.load(folder, encoder_id, dim)

    @classmethod
    def load_or_bootstrap(cls, folder: str | Path, encoder: Encoder, shared_data: str | Path) -> UserRewards:
        """The checkpoint in `folder`, trained there first when there is none: the folder is missing,
        empty, or holds only what a stopped bootstrap left (checkpoint files without meta.json,
        which is written last). Without persona data at `shared_data`, an untrained model that says
        so. Raises ValueError or FileNotFoundError (naming the file) for a folder holding anything
        else that is not a whole checkpoint."""
        folder = Path(folder)
        if _holds_more_than_a_stopped_bootstrap(folder):
            with folder_lock(folder):  # no DELETE's rewrite of its user weights half done (meta.json's digest after them)
                return cls.load_after_rewrites(folder, encoder.encoder_id, encoder.dim)
        folder.parent.mkdir(parents=True, exist_ok=True)
        # replicas starting together on one empty PLURALIGN_PAL_DIR: one trains, the others wait and load its checkpoint
        # (each training its own would serve its own while the folder held the last one saved)
        with folder_lock(folder):
            if _holds_more_than_a_stopped_bootstrap(folder):
                log.info("%s: loading the PAL checkpoint another process bootstrapped there while this one waited", folder)
                return cls.load_after_rewrites(folder, encoder.encoder_id, encoder.dim)
            return cls._bootstrap(folder, encoder, shared_data)

    @classmethod
    def _bootstrap(cls, folder: Path, encoder: Encoder, shared_data: str | Path) -> UserRewards:
        """`load_or_bootstrap`'s training, under the folder's lock."""
        if stopped_artifact(folder, PAL_FILES):
            log.warning("%s holds what a stopped PAL bootstrap left (no %s): training it again", folder, PAL_FILES[0])
        log.info("no PAL checkpoint in %s: training one on persona data from %s (first start only, about a minute)", folder, shared_data)
        try:
            bootstrap(folder, encoder, Path(shared_data))
        except FileNotFoundError as exc:
            note = f"UNTRAINED reward model: no persona data to bootstrap from ({exc}); set PLURALIGN_SHARED_DATA"
            log.info(note)  # `pluralign serve` says it loudly once the service can start (training.commands.serve)
            torch.manual_seed(0)
            model = PALModel(PALConfig(k=BOOTSTRAP_GROUPS, input_dim=encoder.dim))
            return cls(model, np.zeros(BOOTSTRAP_GROUPS, np.float32), "untrained", trained=False, note=note)
        rewards = cls.load(folder, encoder.encoder_id, encoder.dim)
        rewards.note = f"bootstrapped on persona data from {shared_data} into {folder}"
        return rewards

    @property
    def k(self) -> int:
        return int(self._prior.shape[0])

    def prior(self) -> np.ndarray:
        return self._prior.copy()

    @torch.no_grad()
    def score(self, logits: np.ndarray, prompt: np.ndarray, response: np.ndarray) -> np.ndarray:
        """The population model's rewards (N,) of responses (N, d) to prompts (N, d) for a user with `logits` (K,)."""
        base = self.user_model.base
        as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=base.device())  # noqa: E731
        return base.reward(np.asarray(logits), as_tensor(prompt), as_tensor(response)).float().cpu().numpy()

    def prototype_logits(self) -> list[np.ndarray]:
        """Logits (K,) that put (nearly) all weight on one prototype (or head) each: groups of users."""
        return [np.where(np.arange(self.k) == k, 30.0, 0.0).astype(np.float32) for k in range(self.k)]

    def fit(self, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
        """The user's logits (K,) fitted on their comparisons (each (N, d)), around the prior."""
        return self.user_model.fit_logits(prompt, chosen, rejected, self._prior).astype(np.float32)

    def describe(self) -> dict:
        """/health's `pal`: `version` (`checkpoint_version`: what users' fits record, `user_model.population`) and
        `digest` (`model_digest`: the same whatever the release; null for an untrained model built here)."""
        return {"trained": self.trained, "version": self.version, "digest": self.digest, "k": self.k, "kind": self.kind,
                "note": self.note}


def holds_a_model(folder: str | Path) -> bool:
    """Whether `folder` holds a population model to load (or to refuse, naming a file), so that no start bootstraps one
    there: it is not missing, not empty, and not only what a stopped bootstrap left."""
    return _holds_more_than_a_stopped_bootstrap(Path(folder))


def _holds_more_than_a_stopped_bootstrap(folder: Path) -> bool:
    """Whether `folder` holds something `UserRewards.load` reads (or refuses, naming it): not missing, not empty, and
    not what a stopped bootstrap left (`stopped_artifact`)."""
    return folder.is_dir() and any(folder.iterdir()) and not stopped_artifact(folder, PAL_FILES)


def bootstrap(folder: Path, encoder: Encoder, shared_data: Path) -> None:
    """Train PAL on a small persona population and save it to `folder`."""
    from pluralign.data.persona import PersonaConfig, build_persona
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache, default_cache_path
    from pluralign.reward.features import embed_pairs

    if not (shared_data / "anthropic_persona").is_dir() and not (shared_data / "persona").is_dir():
        raise FileNotFoundError(f"no anthropic_persona folder under {shared_data}")
    protocol = build_persona(PersonaConfig(groups=BOOTSTRAP_GROUPS, users_per_group=10, comparisons_per_user=40), shared_data)
    cached = CachedEncoder(encoder, EmbeddingCache(default_cache_path()))
    users = sorted({r.user_id for r in protocol.seen.train})
    log.info("PAL bootstrap 1/3: embedding %d comparisons of %d users", len(protocol.seen.train) + len(protocol.seen.val), len(users))
    train = embed_pairs(protocol.seen.train, cached, users)
    val = embed_pairs(protocol.seen.val, cached, users)
    config = PALConfig(k=BOOTSTRAP_GROUPS, input_dim=encoder.dim)
    log.info("PAL bootstrap 2/3: training K=%d prototypes (at most 30 epochs or 60 s)", BOOTSTRAP_GROUPS)
    result = train_pal(train, val, config, PALTrainConfig(max_epochs=30, max_seconds=60))
    log.info("PAL bootstrap 3/3: saving the checkpoint")
    save_pal(folder, result.model, result.user_weights, encoder.encoder_id, metrics=result.metrics)
    log.info("bootstrapped a PAL checkpoint in %s: %s", folder, result.metrics)
