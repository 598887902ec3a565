"""The evaluation protocol: every preference model measured the same way.

Seen users: train on their train pairs, report macro per-user and pooled accuracy on their test
pairs, accuracy per group and the worst group. Unseen users: for each k, fit each new user from
the first k pairs of its support pool and score its query pairs (macro over users with >= k
support pairs). On synthetic populations, the adjusted Rand index of the model's user clusters.
A mixture that chose its K from the data reports `k_selected` and the criterion per K tried.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pluralign.data.persona import PersonaConfig, build_persona
from pluralign.data.splits import SHOTS, Protocol, file_protocol, ukp_protocol
from pluralign.data.ukp import load_ukp
from pluralign.embed.base import Encoder
from pluralign.fairness.metrics import credit
from pluralign.reward.base import PreferenceModel
from pluralign.reward.features import PairBatch, embed_pairs

MIN_GROUP_PAIRS = 20  # groups with fewer test pairs are reported but not ranked as worst


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "persona"  # "persona", "ukp", or "file" (a preference file at `path`)
    path: str | None = None  # protocol "file": a JSONL or Parquet preference file
    data_dir: str = "../shared/data"
    groups: int = 4  # persona only
    unseen_users_per_group: int = 10  # persona only: new users per group (more users, narrower intervals)
    query_size: int = 20  # persona only: each new user's held-out query comparisons
    seed: int = 0
    shots: tuple[int, ...] = SHOTS


def load_protocol(config: EvalConfig) -> Protocol:
    data_dir = Path(config.data_dir)
    if config.protocol == "ukp":
        records, _ = load_ukp(data_dir / "ukp_convarg1")
        return ukp_protocol(records, seed=config.seed)
    if config.protocol == "persona":
        return build_persona(PersonaConfig(groups=config.groups, seed=config.seed, unseen_users_per_group=config.unseen_users_per_group,
                                           query_size=config.query_size), data_dir)
    if config.protocol == "file":
        if not config.path:
            raise ValueError("protocol `file` needs a preference file (`--data PATH`)")
        from pluralign.data.io import read_preferences

        records, _ = read_preferences(config.path)
        return file_protocol(records, seed=config.seed)
    raise ValueError(f"unknown protocol {config.protocol!r}: expected `ukp`, `persona` or `file`")


def accuracy(p: np.ndarray) -> np.ndarray:
    """Per-pair credit: 1 when P(chosen) > 0.5, 0.5 on an exact tie, else 0. Raises ValueError when
    a model's P is not a probability (a NaN would count as a wrong prediction and pass unseen)."""
    return credit(p)


def _same_length(correct, labels, name: str, what: str) -> np.ndarray:
    """`correct` as a float64 array (N,) of credits, checked: ValueError for a value that is not 0,
    0.5 or 1 (a probability's mean would pass for an accuracy), `correct` of more than one dimension
    or `labels` of another length than `correct`, TypeError for labels given as one string (each letter would be a label)."""
    if isinstance(labels, str | bytes):
        raise TypeError(f"`{name}` must be a list of labels, one per comparison, not one {type(labels).__name__}")
    if hasattr(correct, "detach"):  # a torch tensor
        correct = correct.detach().cpu()
    correct = np.asarray(correct, np.float64)
    if correct.ndim > 1:  # a table of credits is not one per comparison: refused, not flattened
        raise ValueError(f"`correct` must be one credit per comparison, (N,), got shape {correct.shape}")
    correct = correct.reshape(-1)
    bad = ~np.isin(correct, (0.0, 0.5, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`correct` must be credits (0, 0.5 or 1: credit(p)): element {i} is {float(correct[i])!r}; pass credit(p), not p")
    if len(labels) != len(correct):
        raise ValueError(f"`{name}` has {len(labels)} {what}, `correct` {len(correct)}: one per comparison")
    return correct


def _whole(value) -> bool:
    """Whether one user index is a whole number (a bool is not one)."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int | np.integer):
        return True
    return isinstance(value, float | np.floating) and bool(np.isfinite(value)) and value == round(value)


def _user_indices(users) -> np.ndarray:
    """`users` (N,) as an array of whole numbers; ValueError naming `users` for another shape (a table's rows are not
    read flattened, its first N entries taken as the users) or the first element that is not a
    whole number (a None, a name, 1.5), whatever the array's dtype (an object array: a pandas column)."""
    if hasattr(users, "detach"):  # a torch tensor
        users = users.detach().cpu().numpy()
    index = np.asarray(users)
    if index.ndim != 1:
        raise ValueError(f"`users` must be one user index per comparison, (N,), got shape {index.shape}")
    if index.dtype.kind in "iu":
        return index
    if index.dtype.kind == "f":
        bad = ~(np.isfinite(index) & (index == np.round(index)))
    else:  # object (a pandas column), str, bool: element by element
        bad = np.array([not _whole(u) for u in index.tolist()], bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`users` must be each pair's user index, a whole number (`PairBatch.user`): element {i} is {index.tolist()[i]!r}")
    return index


def user_accuracy(correct: np.ndarray, users: np.ndarray) -> dict[int, float]:
    """Per user index: the mean credit of that user's pairs. `correct` (N,) is `credit(p)`, `users`
    (N,) each pair's user index (whole numbers of any dtype: `PairBatch.user`); ValueError naming `users` when it has
    another length or shape or holds a value that is not a whole number (`_user_indices`; not cut by int(), which makes 1.2 and 1.7
    one user, and a name an int() error), and `correct` when it holds a value that is not a credit (0, 0.5 or 1)."""
    correct = _same_length(correct, users, "users", "entries")
    index = _user_indices(users)
    per_user = defaultdict(list)
    for c, u in zip(correct, index, strict=False):
        per_user[int(u)].append(c)
    return {u: float(np.mean(v)) for u, v in per_user.items()}


def macro(correct: np.ndarray, users: np.ndarray) -> float:
    """Macro accuracy: the mean over users of each user's mean credit (NaN for no pairs), so a user
    with many pairs counts as much as one with few. Raises as `user_accuracy` does."""
    per_user = user_accuracy(correct, users)
    return float(np.mean(list(per_user.values()))) if per_user else float("nan")


def group_accuracy(correct: np.ndarray, groups: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """({group: mean credit of its pairs}, {group: its pairs}) for `correct` (N,) (`credit(p)`) and
    each pair's group label (N,); the worst group is min(acc, key=acc.get). ValueError naming
    `groups` when it has another length and `correct` when it holds a value that is not a credit
    (probabilities: pass credit(p)) or is a table (more than one dimension), `groups` when its labels are of two kinds
    that do not order (a None among strings) or is not one label per comparison (N,); TypeError when `groups` is one
    string. A tensor's or array's labels, and a list's 0-d tensors and numpy scalars, are read as Python values
    (`tolist`, `item`): a 0-d tensor hashes by its identity, so read as they are each comparison would be its own group."""
    if hasattr(groups, "detach"):  # a torch tensor
        groups = groups.detach().cpu().numpy()
    if isinstance(groups, np.ndarray):
        if groups.ndim != 1:
            raise ValueError(f"`groups` must be one label per comparison, (N,), got shape {groups.shape}")
        groups = groups.tolist()
    elif not isinstance(groups, str | bytes):  # one string: refused by _same_length
        groups = [g.item() if isinstance(g, np.generic) or (hasattr(g, "detach") and g.ndim == 0) else g for g in groups]
    correct = _same_length(correct, groups, "groups", "labels")
    sums: dict[str, list[float]] = defaultdict(list)
    for c, g in zip(correct, groups, strict=False):
        sums[g].append(c)
    try:
        ordered = sorted(sums.items())
    except TypeError:  # labels of two kinds (a None among strings): named, not in sorted()'s own words
        kinds = [type(g) for g in groups]
        # the most common kind; str (what `groups` takes) wins a tie: ['a', None] names None (not whichever kind
        # `set` gives first: here 'a', the good label)
        common = max(dict.fromkeys(kinds), key=lambda kind: (kinds.count(kind), kind is str))
        i = next((i for i, kind in enumerate(kinds) if kind is not common), None)
        if i is None:  # one kind that does not order (complex numbers)
            raise ValueError(f"`groups` labels ({common.__name__}) do not order: give str labels") from None
        raise ValueError(f"`groups` element {i} is {groups[i]!r}, a {type(groups[i]).__name__} among {common.__name__} labels: "
                         "give every comparison a label of one kind") from None
    return {g: float(np.mean(v)) for g, v in ordered}, {g: len(v) for g, v in ordered}


def unseen_batches(protocol: Protocol, encoder: Encoder, k: int) -> tuple[PairBatch, PairBatch] | None:
    users = [u for u, pool in protocol.unseen.support.items() if len(pool) >= k]
    if not users:
        return None
    support = [r for u in users for r in protocol.unseen.support[u][:k]]
    query = [r for u in users for r in protocol.unseen.query[u]]
    attr = protocol.group_attribute
    return embed_pairs(support, encoder, users, attr), embed_pairs(query, encoder, users, attr)


def unseen_pool(protocol: Protocol, encoder: Encoder) -> tuple[PairBatch, PairBatch]:
    """(every unseen user's whole support pool, their query pairs), embedded, users in the
    protocol's order: what an active choice picks from and is measured on."""
    users = list(protocol.unseen.support)
    attr = protocol.group_attribute
    pool = embed_pairs([r for u in users for r in protocol.unseen.support[u]], encoder, users, attr)
    return pool, embed_pairs([r for u in users for r in protocol.unseen.query[u]], encoder, users, attr)


def active_unseen(model, protocol: Protocol, encoder: Encoder, shots=SHOTS, progress=None, selection: str = "model",
                  target: str = "coefficients") -> dict[str, float]:
    """Unseen users' macro accuracy per k when each user's k support comparisons are chosen from
    their whole support pool by the model's active criterion (`prob_new_users_active`: expected
    information gain on the user model's posterior) instead of the pool's first k (random order)."""
    users = list(protocol.unseen.support)
    pool, query = unseen_pool(protocol, encoder)
    out = {}
    for k in shots:
        if not any(len(protocol.unseen.support[u]) >= k for u in users):
            continue
        prob, _ = model.prob_new_users_active(pool, query, k, selection, target)
        out[str(k)] = macro(accuracy(prob), query.user.numpy())
        if progress:
            progress(k)
    return out


def unseen_by_k(prob_new_users, protocol: Protocol, encoder: Encoder, shots=SHOTS, progress=None) -> dict[str, float]:
    """Unseen users' macro accuracy on their query sets per k ({str(k): accuracy}), each user's
    first k support comparisons given to `prob_new_users(support, query)` (a model's
    `prob_new_users` or `prob_new_users_particles`: (Q,) probabilities that the chosen answer wins);
    a k no user has enough support for is left out. `progress(k)` after each k."""
    out: dict[str, float] = {}
    for k in shots:
        batches = unseen_batches(protocol, encoder, k)
        if batches is None:
            continue
        support, query = batches
        out[str(k)] = macro(accuracy(prob_new_users(support, query)), query.user.numpy())
        if progress:
            progress(k)
    return out


def evaluate(model: PreferenceModel, protocol: Protocol, encoder: Encoder, shots=SHOTS, progress=None, active: bool = False,
             per_user: bool = False, active_target: str = "coefficients") -> dict:
    """Train `model` on the protocol's seen users and measure it; returns the JSON-ready report.
    With `active`, also `unseen_active_acc_by_k` (support chosen by `active_unseen` with the
    criterion `active_target`: `coefficients`, BALD, or `predictive`, EPIG, both also from the seen
    users' spread in `unseen_active_population_acc_by_k`; or `group`, the information about which
    seen-user group the user is like, predicted by the seen users, with the pool's first k predicted
    the same way beside it in `unseen_particle_acc_by_k`); raises
    ValueError for a model without a posterior to choose by (only the `+residual` user models have one).
    `per_user` adds `seen_user_acc` ({user id: test accuracy}), the units a bootstrap over users
    resamples (benchmarks/ukp_seeds.py)."""
    if active and not hasattr(model, "prob_new_users_active"):
        raise ValueError(f"--shots active needs a model with a posterior (pal-a+residual, pal-b+residual), not {getattr(model, 'name', model)!r}")
    start = time.perf_counter()
    attr = protocol.group_attribute
    seen_users = sorted({r.user_id for r in protocol.seen.train})
    train = embed_pairs(protocol.seen.train, encoder, seen_users, attr)
    val = embed_pairs(protocol.seen.val, encoder, seen_users, attr)
    test = embed_pairs(protocol.seen.test, encoder, seen_users, attr)
    fit_metrics = model.fit(train, val)

    correct = accuracy(model.prob_seen(test))
    test_users = test.user.numpy()
    group_acc, group_n = group_accuracy(correct, test.group)
    ranked = [acc for g, acc in group_acc.items() if group_n[g] >= MIN_GROUP_PAIRS] or list(group_acc.values())

    unseen_acc = unseen_by_k(model.prob_new_users, protocol, encoder, shots, progress)

    active_acc = active_unseen(model, protocol, encoder, shots, progress, "model", active_target) if active else None
    population_acc = particle_acc = None
    if active and active_target == "group":  # like for like: the pool's first k, predicted by the seen users too
        particle_acc = unseen_by_k(model.prob_new_users_particles, protocol, encoder, shots)
    elif active:  # the same criterion started from the seen users' spread instead of the model's prior
        population_acc = active_unseen(model, protocol, encoder, shots, None, "population", active_target)

    report = {
        "model": getattr(model, "name", type(model).__name__),
        "protocol": protocol.name,
        "seen_users": len(seen_users),
        "unseen_users": len(protocol.unseen.support),
        "train_pairs": len(train),
        "test_pairs": len(test),
        "seen_macro_acc": macro(correct, test_users),
        "seen_pooled_acc": float(correct.mean()),
        "unseen_acc_by_k": unseen_acc,
        **({"unseen_active_acc_by_k": active_acc, "active_target": active_target} if active_acc is not None else {}),
        **({"unseen_active_population_acc_by_k": population_acc} if population_acc is not None else {}),
        **({"unseen_particle_acc_by_k": particle_acc} if particle_acc is not None else {}),
        "group_acc": group_acc,
        "group_pairs": group_n,
        "worst_group_acc": float(min(ranked)),
        "fit": fit_metrics,
    }
    if per_user:
        report["seen_user_acc"] = {seen_users[u]: acc for u, acc in sorted(user_accuracy(correct, test_users).items())}
    if "k_selected" in fit_metrics:  # the mixture chose its K from the data (pluralign.reward.model_selection)
        for key in ("k_selected", "k_best", "k_criterion", "k_criterion_se", "k_criterion_per_pair", "k_rule"):
            report[key] = fit_metrics[key]
    clusters = model.user_clusters()
    if protocol.true_groups and clusters:
        from sklearn.metrics import adjusted_rand_score

        users = [u for u in seen_users if u in clusters]
        report["ari"] = float(adjusted_rand_score([protocol.true_groups[u] for u in users], [clusters[u] for u in users]))
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report
