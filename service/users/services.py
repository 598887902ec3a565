"""A user's reward weights (kept in the users table) and everything else the service holds about them."""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from pluralign.policy.adapters import META_FILE, AdapterMeta, adapter_name, check_base, read_meta, write_meta
from pluralign.store import StoredPreference, UserRecord
from pluralign.user import FEATURE_NAMES, UserState
from service.rewards import UserRewards
from service.runtime import Runtime

log = logging.getLogger("pluralign.service")


@dataclass(frozen=True)
class UserWeights:
    logits: np.ndarray  # (K,)
    prior: bool  # True when nothing of the user has been fitted yet
    record: UserRecord | None
    state: UserState | None = None  # the per-user residual (setting `user_model = residual`), None = PAL alone
    rewards: UserRewards | None = None  # the population model the logits and state were fitted with


def residual_on(rt: Runtime) -> bool:
    return rt.settings.user_model == "residual"


def stored_state(record: UserRecord | None) -> UserState | None:
    if record is None or record.user_model is None:
        return None
    try:
        return UserState.decode(record.user_model)
    except (msgspec.DecodeError, msgspec.ValidationError):  # an unreadable state is refitted, not served
        return None


def adapter_folder(rt: Runtime, tenant: str, user_id: str):
    return rt.adapters.registry.folder(tenant, user_id)


def refit(
    rt: Runtime, tenant: str, user_id: str, attributes: dict[str, str] | None = None, rewards: UserRewards | None = None
) -> UserWeights:
    """Fit the user's PAL logits on every stored comparison of theirs and store them. The user's
    attributes gather those their feedback carried (later ones win), then `attributes`.

    Runs under the user's lock, so a DELETE is either before it (nothing to fit: no row is written,
    the user stays deleted) or after it (the DELETE removes what it wrote)."""
    with rt.user_lock(tenant, user_id):
        return _refit(rt, tenant, user_id, attributes, rewards)


def _refit(rt: Runtime, tenant: str, user_id: str, attributes: dict[str, str] | None, rewards: UserRewards | None) -> UserWeights:
    # one snapshot of the history for vectors, texts and attributes: feedback moved into the table
    # meanwhile must not make them disagree (the next read sees the new rows as stale and refits)
    history = rt.store.history(tenant, user_id)
    prompt, chosen, rejected, chosen_texts, rejected_texts = history.comparison_set()  # (N, d) x 3, N texts x 2
    from_feedback: dict[str, str] = {}
    for row in sorted(history.rows, key=lambda r: r["created_at"]):
        from_feedback.update(json.loads(row["attributes"]))
    record = rt.store.get_user(tenant, user_id)
    now = time.time()
    rewards = rewards or rt.rewards  # one model for the whole refit, even if a new one is swapped in meanwhile
    state = None
    if len(prompt):
        prior = False
        if residual_on(rt):  # PAL's logits and the residual in one pass
            logits, state = rewards.user_model.fit_user(
                prompt, chosen, rejected, chosen_texts, rejected_texts, prior_logits=rewards.prior(), fitted_at=now
            )
        else:
            logits = rewards.fit(prompt, chosen, rejected)
    else:
        logits, prior = rewards.prior(), True
        if record is None and not len(history):
            return UserWeights(logits=logits, prior=True, record=None, rewards=rewards)  # deleted (or never seen): no row from nothing
    record = UserRecord(
        tenant=tenant,
        user_id=user_id,
        created_at=record.created_at if record else now,
        updated_at=now,
        attributes={**(record.attributes if record else {}), **from_feedback, **(attributes or {})},
        pal_logits=None if prior else [float(x) for x in logits],
        pal_version=rewards.version,
        adapter=record.adapter if record else None,
        n_preferences=int(len(prompt)),
        n_interactions=rt.store.count_interactions(tenant, user_id),
        user_model=state.encode() if state is not None else None,
    )
    rt.store.put_user(record)
    return UserWeights(logits=logits, prior=prior, record=record, state=state, rewards=rewards)


def schedule_refit(rt: Runtime, tenant: str, user_id: str, attributes: dict[str, str] | None = None) -> None:
    """Refit the user in the background; refits queued for the same user coalesce into one.

    Correctness does not hang on it: `user_weights` refits stale weights itself, so the next
    request of the user uses every acknowledged comparison even if this refit has not run yet."""
    key = (tenant, user_id)
    with rt.refit_lock:
        if key in rt.pending_refits:
            rt.pending_refits[key].update(attributes or {})
            return
        rt.pending_refits[key] = dict(attributes or {})

    def run() -> None:
        with rt.refit_lock:
            merged = rt.pending_refits.pop(key)
        try:
            refit(rt, tenant, user_id, attributes=merged or None)
        except Exception:  # the next request of the user refits instead
            log.exception("background refit of %s/%s failed", tenant, user_id)

    rt.background.submit(run)


def user_weights(rt: Runtime, tenant: str, user_id: str) -> UserWeights:
    """The stored logits (and residual), refitted first when they are stale (another population
    checkpoint, or rows written after the last fit, e.g. by a process that crashed between its write
    and its refit). The user's feedback still pending in the log is moved into the table first. The
    result names the population model it belongs to: score with `weights.rewards`, not whatever
    model was swapped in since."""
    rt.ingest.flush_user(tenant, user_id)
    rewards = rt.rewards
    record = rt.store.get_user(tenant, user_id)
    if record is None:
        if rt.store.count_preferences(tenant, user_id) == 0:
            return UserWeights(logits=rewards.prior(), prior=True, record=None, rewards=rewards)
        return refit(rt, tenant, user_id, rewards=rewards)
    stale = record.pal_version != rewards.version or record.n_preferences != rt.store.count_comparisons(tenant, user_id)
    if stale:
        return refit(rt, tenant, user_id, rewards=rewards)
    if record.pal_logits is None:
        return UserWeights(logits=rewards.prior(), prior=True, record=record, rewards=rewards)
    state = stored_state(record) if residual_on(rt) else None
    if residual_on(rt) and not rewards.user_model.fits(state):  # fitted by an older model or feature set
        return refit(rt, tenant, user_id, rewards=rewards)
    return UserWeights(logits=np.asarray(record.pal_logits, np.float32), prior=False, record=record, state=state, rewards=rewards)


class PalProfile(msgspec.Struct):
    logits: list[float]
    weights: list[float]  # softmax of the logits: the user's mixture over prototypes
    nearest_prototype: int
    version: str
    prior: bool


class FeatureBelief(msgspec.Struct):
    weight: float  # posterior mean of the user's coefficient on the feature
    sd: float  # its posterior standard deviation


class UserModelProfile(msgspec.Struct):
    """The user's own model in readable form: their weight on each PAL prototype (around the
    population's mixture; off the simplex = beyond every prototype) and on each named feature."""

    prototypes: list[FeatureBelief]  # (K,) weights on the prototypes' ideal-point terms
    features: dict[str, FeatureBelief]  # FEATURE_NAMES -> belief; positive = prefers more of it
    comparisons: int
    population: str  # the population checkpoint the residual was fitted against


def model_profile(state: UserState | None) -> UserModelProfile | None:
    if state is None:
        return None
    belief = lambda name: FeatureBelief(*state.coefficient(name))  # noqa: E731
    return UserModelProfile(
        prototypes=[belief(n) for n in state.names if n.startswith("prototype_")],
        features={name: belief(name) for name in FEATURE_NAMES}, comparisons=state.n,
        population=state.population,
    )


class Counts(msgspec.Struct):
    preferences: int
    interactions: int


class UserProfile(msgspec.Struct):
    user: str
    attributes: dict[str, str]
    pal: PalProfile
    counts: Counts
    adapter: str | None
    created_at: float | None
    updated_at: float | None
    user_model: UserModelProfile | None = None  # null until the user has comparisons (or with `user_model = prototypes`)


def profile(rt: Runtime, tenant: str, user_id: str) -> UserProfile | None:
    weights = user_weights(rt, tenant, user_id)
    counts = Counts(
        preferences=rt.store.count_preferences(tenant, user_id),
        interactions=rt.store.count_interactions(tenant, user_id),
    )
    if weights.record is None and counts.preferences == 0 and counts.interactions == 0:
        return None
    logits = np.asarray(weights.logits, np.float64)
    mix = np.exp(logits - logits.max())
    mix /= mix.sum()
    record = weights.record
    return UserProfile(
        user=user_id,
        attributes=record.attributes if record else {},
        pal=PalProfile(
            logits=logits.tolist(), weights=mix.tolist(), nearest_prototype=int(mix.argmax()),
            version=(weights.rewards or rt.rewards).version, prior=weights.prior,
        ),
        counts=counts,
        adapter=record.adapter if record else None,
        created_at=record.created_at if record else None,
        updated_at=record.updated_at if record else None,
        user_model=model_profile(weights.state),
    )


def register_adapter(rt: Runtime, tenant: str, user_id: str, source: Path) -> str:
    """Copy a saved LoRA adapter (peft `save_pretrained` folder) in as the user's adapter; the
    next chat request of the user generates with it. Returns the adapter name."""
    if not (source / "adapter_config.json").exists():
        raise ValueError(f"{source} holds no adapter_config.json (save the adapter with peft's save_pretrained)")
    if (source / META_FILE).exists():  # built by pluralign: refuse one trained on another base model
        check_base(read_meta(source), rt.generator.model_id, source)
    name = adapter_name(tenant, user_id)
    folder = adapter_folder(rt, tenant, user_id)
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    if not (folder / META_FILE).exists():  # a bare peft folder: registered for the model served here
        write_meta(folder, AdapterMeta(kind="user", base_model=rt.generator.model_id, shots=0, data_version="registered"))
    rt.adapters.forget(tenant, user_id)  # a re-registered adapter is reloaded from its new files
    weights = user_weights(rt, tenant, user_id)
    now = time.time()
    record = weights.record or UserRecord(tenant=tenant, user_id=user_id, created_at=now, updated_at=now, pal_version=rt.rewards.version)
    rt.store.put_user(msgspec.structs.replace(record, adapter=name, updated_at=now))
    return name


def export_lines(rt: Runtime, tenant: str, user_id: str) -> Iterator[bytes]:
    """JSONL: one `user` line, then a line per preference and per interaction, each tagged by `type`."""
    encode = msgspec.json.encode
    rt.ingest.flush_user(tenant, user_id)
    record = rt.store.get_user(tenant, user_id)
    if record is not None:
        line = msgspec.to_builtins(msgspec.structs.replace(record, user_model=None))
        line["user_model"] = msgspec.to_builtins(stored_state(record))  # the residual posterior, readable
        yield encode({"type": "user", **line}) + b"\n"
    preferences, _ = rt.store.preferences_for(tenant, user_id)
    for row in preferences:
        yield encode({"type": "preference", **msgspec.to_builtins(row)}) + b"\n"
    for item in rt.store.interactions_for(tenant, user_id):
        yield encode({"type": "interaction", **msgspec.to_builtins(item)}) + b"\n"


def export_preference_lines(rt: Runtime, tenant: str, user_id: str) -> Iterator[bytes]:
    """JSONL in the preference-file form (`pluralign.data.io.preference_row`: TRL's prompt/chosen/
    rejected plus user_id, margin, tie, source, created_at, attributes): what `import_preferences`,
    `pluralign data import` and TRL read. Rating rows without a rival answer (nothing to compare) are left out."""
    from pluralign.data.io import preference_row
    from pluralign.data.record import Preference

    rt.ingest.flush_user(tenant, user_id)
    preferences, _ = rt.store.preferences_for(tenant, user_id)
    for row in preferences:
        if not row.rejected.strip():
            continue
        record = Preference(
            user_id=row.user_id, prompt=row.prompt, chosen=row.chosen, rejected=row.rejected, margin=row.margin,
            tie=row.tie, source=row.source, created_at=row.created_at, attributes=row.attributes,
        )
        yield msgspec.json.encode(preference_row(record)) + b"\n"


def import_rows(tenant: str, user_id: str, records: list) -> list[StoredPreference]:
    """Stored comparison rows for `user_id` from preference records (their times and labels kept)."""
    now = time.time()
    return [
        StoredPreference(
            tenant=tenant, user_id=user_id, pref_id=uuid.uuid4().hex, kind="comparison",
            created_at=r.created_at if r.created_at is not None else now + i * 1e-6,
            prompt=r.prompt, chosen=r.chosen, rejected=r.rejected, tie=r.tie, margin=r.margin,
            source=r.source or "import", attributes=r.attributes,
        )
        for i, r in enumerate(records)
    ]


def delete(rt: Runtime, tenant: str, user_id: str) -> dict[str, int]:
    """Every row, the weights and the adapter files of the user; old table versions are purged too,
    and so is their feedback still pending in the log (from memory and the log's files); their
    queued or running jobs are stopped and every job file naming them removed (`delete_hooks`).
    Returns counts by kind: preferences, interactions, users, adapter_files, job_files."""
    with rt.user_lock(tenant, user_id):  # no refit or adapter promotion of the user runs meanwhile
        job_files = sum(hook(tenant, user_id) for hook in list(rt.delete_hooks))  # their jobs stop first
        pending = rt.ingest.forget_user(tenant, user_id)
        counts = rt.store.delete_user(tenant, user_id)
        counts["preferences"] += pending  # acknowledged rows, wherever they were
        folder = adapter_folder(rt, tenant, user_id)
        counts["adapter_files"] = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
        if folder.exists():
            shutil.rmtree(folder)
        rt.adapters.forget(tenant, user_id)
        counts["job_files"] = job_files
    return counts

