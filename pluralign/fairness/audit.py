"""Audit how well each group of users is served, from comparisons with group labels.

Per group: users, comparisons, prequential accuracy of each user's personalized model, accuracy
of the one-size-fits-all (base) model on the same comparisons, calibration error and Brier score of both, and the
win rate of personalized over base responses where feedback compares them. Across groups: the
worst group and the best-minus-worst gap. Groups with fewer than `min_group_size` users are
suppressed, a group of one user always (`MIN_SHOWN_USERS`), so an audit never exposes individuals, nor do its overall
figures by subtraction (`overall` withheld while the suppressed groups hold too few users); groups with too few
comparisons are flagged. Intervals are given for groups (and the overall) of `INTERVAL_MIN_USERS` users or more only.

The base model is a ridge logistic regression on every principal direction of the response-embedding
differences (whitened; the top 64 only would understate it by 4.4 points on UKPConvArg1), fitted
by L-BFGS (scipy), cross-fitted by user (users in one half are scored by the model fitted on the other half) unless a
base margin is given. Groups come from a record attribute or from a user -> group mapping (e.g. each user's nearest
PAL prototype or EM cluster).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pluralign.checks import at_least, seed_in_range
from pluralign.data.record import Preference
from pluralign.data.text import answer_key, controls_escaped
from pluralign.embed.base import Encoder, checked_vectors
from pluralign.fairness.metrics import (
    brier_score,
    credit,
    expected_calibration_error,
    percentile_interval,
    range_half_width,
    resampled_means,
    win_rate,
)
from pluralign.fairness.online import (
    OnlineLogistic,
    OnlineLogisticConfig,
    OnlineUserModel,
    prequential,
    sigmoid,
    single_threaded,
)
from pluralign.fairness.report import (
    BASE_METHOD,
    INTERVAL_MIN_USERS,
    MIN_SHOWN_USERS,
    AuditReport,
    GroupMetrics,
    extremes,
)

# Feedback comparing a personalized and a base response names where each came from.
CHOSEN_POLICY = "chosen_policy"
REJECTED_POLICY = "rejected_policy"
PERSONALIZED, BASE = "personalized", "base"
# the group of comparisons whose `group_by` neither they nor their user carry (nor, for `pal_prototype`, PAL weights):
# a name no value can have, since a value's label is trimmed (`answer_key`); not "unknown", the value UKPConvArg1's
# importer gives a worker who stated no stance, which would make both kinds of users one group
NO_VALUE = " (no value)"
OLD_NO_VALUE = "unknown"  # what reports stored by earlier releases call that group (with the workers who stated "unknown")


@dataclass(frozen=True)
class AuditConfig:
    min_group_size: int = 1  # suppress groups with fewer users than this
    min_comparisons: int = 50  # flag groups with fewer scored comparisons than this
    # personal models see the top principal directions of the differences, at most one per ten distinct comparisons
    # (`personal_dims`)
    projection_dim: int = 32
    # the base model sees this many principal directions (fewer on small audits: ten comparisons a weight); None:
    # every one the differences span (384 for MiniLM). 64 would understate the one-size-fits-all model by 4.4
    # points on UKPConvArg1 (0.702 against 0.746) and so inflate the personalization gain
    base_dim: int | None = None
    base_l2: float = 1.0  # ridge strength of the cross-fitted base model
    base_max_rows: int = 20_000  # base model fitted on at most this many rows per fold
    ece_bins: int = 10
    resamples: int = 1000  # bootstrap resamples of each group's users for the 95% intervals
    since: float | None = None  # score only comparisons at or after this time (all are learned from)
    seed: int = 0
    online: OnlineLogisticConfig = OnlineLogisticConfig()

    def __post_init__(self) -> None:
        at_least("AuditConfig", 1, min_group_size=self.min_group_size, projection_dim=self.projection_dim,
                 base_max_rows=self.base_max_rows, ece_bins=self.ece_bins, resamples=self.resamples)
        if self.base_dim is not None:
            at_least("AuditConfig", 1, base_dim=self.base_dim)
        at_least("AuditConfig", 0, min_comparisons=self.min_comparisons, base_l2=self.base_l2)
        # unchecked, a seed of -1 or 1.5 would fail in the first draw naming no field, and a NaN `since` (no time is
        # at or after it) would score nothing and report an empty audit
        seed_in_range("AuditConfig", seed=self.seed)
        if self.since is not None:
            at_least("AuditConfig", 0, since=self.since)


@dataclass
class Comparisons:
    """Named fields for N comparisons to audit, in any order (`time` orders them)."""

    diff: np.ndarray  # (N, d) float32, chosen-minus-rejected response embedding
    user: np.ndarray  # (N,) int64 index into users
    users: list[str]
    group: np.ndarray  # (N,) int64 index into groups
    groups: list[str]
    time: np.ndarray  # (N,) float64 arrival order
    policy_win: np.ndarray  # (N,) int8: +1 personalized beat base, -1 base beat personalized, 0 other
    encoder_id: str
    base_margin: np.ndarray | None = None  # (N,) a given one-size-fits-all model's margin
    ties_skipped: int = 0
    # (ties_skipped,) float64: when each tie skipped was made (NaN: unknown), so that an audit with `since` counts only
    # those at or after it, as it scores only those comparisons, not every tie. None: unknown
    # (a caller's Comparisons of before), every tie counted
    tie_time: np.ndarray | None = None
    # (len(users),) each user's name as the cross-fitted base model's halves draw it (`base_margins`); None: `users`.
    # A store's users are `tenant/user`, and their halves are drawn from `user` alone: the same comparisons audit alike
    # whatever their tenant is called (not split otherwise under another tenant's name)
    fold_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.user)


class UnknownGroupBy(ValueError):
    """`group_by` names an attribute that no audited comparison (nor user) has: the audit would put
    every comparison in one group, NO_VALUE. `available` lists the attribute names that do exist."""

    SHOWN = 30  # attribute names listed in the message at most

    def __init__(self, group_by: str, available: set[str] | list[str], where: str = "comparison to audit"):
        self.group_by = group_by
        self.available = sorted(available)
        # a name stored with a newline or a bidi override (before feedback refused control characters) escaped: the
        # service reads the worker's error from its last line, and an override would reorder the message
        shown = ", ".join(map(controls_escaped, self.available[: self.SHOWN]))
        if len(self.available) > self.SHOWN:
            shown += f", ... ({len(self.available) - self.SHOWN} more)"
        listed = f"attributes that exist: {shown}" if self.available else "none has any attribute"
        super().__init__(f"no {where} has the attribute {group_by!r}; {listed}")


def index_labels(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(labels))
    position = {n: i for i, n in enumerate(names)}
    return np.fromiter((position[x] for x in labels), np.int64, len(labels)), names


def policy_outcome(attributes: Mapping[str, str]) -> int:
    """+1: a personalized response beat a base one; -1: the base one won; 0: not such a comparison."""
    pair = (attributes.get(CHOSEN_POLICY), attributes.get(REJECTED_POLICY))
    return 1 if pair == (PERSONALIZED, BASE) else -1 if pair == (BASE, PERSONALIZED) else 0


def comparisons_from_records(
    records: Sequence[Preference],
    encoder: Encoder,
    group_by: str,
    user_groups: Mapping[str, str] | None = None,
) -> Comparisons:
    """Embed each distinct response once; the group is `user_groups[user]` or the `group_by` attribute.

    A comparison without the attribute (with `user_groups`: of a user it does not name) is in group NO_VALUE; a
    group's name, attribute value or `user_groups` name, is compared as an answer is (`answer_key`: trimmed), so none is
    NO_VALUE. UnknownGroupBy (a ValueError) when no comparison has it (a misspelled name), and a ValueError naming
    `user_groups` when it names none of the users (keyed by numbers where the records' user ids are their text: everyone
    would be NO_VALUE), before anything is embedded."""
    pairs = [r for r in records if not r.tie]
    if not pairs:
        raise ValueError("no non-tie comparisons to audit")
    if user_groups is not None:
        _check_names_a_user(user_groups, pairs)
    group_by = answer_key(group_by)  # names and labels compared as answers are (answer_key): one group however a client spelt it
    named = [{answer_key(k): v for k, v in r.attributes.items()} for r in pairs]
    if user_groups is None and not any(group_by in a for a in named):
        raise UnknownGroupBy(group_by, {name for a in named for name in a})
    texts = list(dict.fromkeys(t for r in pairs for t in (r.chosen, r.rejected)))
    where = {t: i for i, t in enumerate(texts)}
    vectors = checked_vectors(encoder, encoder.encode(texts), len(texts))  # (T, d)
    chosen = np.fromiter((where[r.chosen] for r in pairs), np.int64, len(pairs))
    rejected = np.fromiter((where[r.rejected] for r in pairs), np.int64, len(pairs))
    user, users = index_labels([r.user_id for r in pairs])
    if user_groups is not None:
        # a user the mapping does not name has no value, as a user without the attribute in the service's audits; not
        # "unassigned", also a group name a mapping may give (and reports stored by earlier releases keep it). Its names
        # are labels as values are (answer_key: trimmed), so none is NO_VALUE: else a mapping's " (no value)" and the
        # users it did not name would be one group
        labels = [answer_key(user_groups[r.user_id]) if r.user_id in user_groups else NO_VALUE for r in pairs]
    else:
        labels = [answer_key(a[group_by]) if group_by in a else NO_VALUE for a in named]
    group, groups = index_labels(labels)
    stamps = [r.created_at for r in pairs]
    order = np.array(stamps, np.float64) if all(s is not None for s in stamps) else np.arange(len(pairs), dtype=np.float64)
    policy = np.array([policy_outcome(r.attributes) for r in pairs], np.int8)
    tie_time = np.array([np.nan if r.created_at is None else r.created_at for r in records if r.tie], np.float64)
    return Comparisons(
        diff=vectors[chosen] - vectors[rejected], user=user, users=users, group=group, groups=groups,
        time=order, policy_win=policy, encoder_id=encoder.encoder_id, ties_skipped=len(records) - len(pairs),
        tie_time=tie_time,
    )


# `distinct_comparisons`: keys less than this share of their root mean square apart are one comparison (cells of this
# width). The same text's vectors from two batches (1.1e-7 apart a coordinate: keys 2e-6 or so) are one; tried on the
# trial's 12 comparisons of 32 users, each vector's coordinates moved by 1e-7, 1e-6 or 1e-5 of themselves: 12, 13, 18
KEY_STEP = 1e-4


def principal_whitening(diff: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """Top principal directions of the differences, scaled to unit second moment.  # (d, dims) float32

    Uncentered, because the sign of a difference is the label. Most informative direction first."""
    rng = np.random.default_rng(seed)
    sample = diff[rng.choice(len(diff), min(len(diff), 20_000), replace=False)].astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(sample.T @ sample / len(sample))  # ascending
    keep = min(dims, int((eigenvalues > 1e-9 * max(eigenvalues[-1], 1e-30)).sum()))
    top = eigenvectors[:, ::-1][:, :keep] / np.sqrt(eigenvalues[::-1][:keep])
    return top.astype(np.float32)


def distinct_comparisons(diff: np.ndarray, seed: int, most: int = 20_000) -> int:
    """How many distinct comparisons a sample of at most `most` rows of `diff` (N, d) holds: rows alike, or one the
    other's negation (the same two answers, the other one chosen), count once. A lower bound of the whole's count when
    N > `most`. Each row is keyed by its product with a random direction, summed row by row in float64 (a row's
    negation, the key's negation), and keys within `KEY_STEP` of the keys' root mean square of each other are one (but
    for one cell's edge falling between them: then two). Not the exact bits: the service's ingest embeds a text in
    whatever batch it is pending with, and MiniLM gives the same text other low bits in another batch (1.1e-7 apart,
    padded beside a longer text), so a store can hold a comparison's vectors a float32 step or so apart from user to
    user; counted bit by bit, 32 users' 12 comparisons were 384 and the model kept every direction the 12 span
    (tests/unit/test_review_audit58.py). Distinct comparisons share a key's cell now and then, the more the more of
    them: 480 (40 users, 12 prompts each) count 472, persona 90/10's 2,965 count 2,755 and UKPConvArg1's 12,130 (in the
    sample) 8,831, all 32 directions as before. 0.05 s on 20,000 rows of 384, where sorting the rows took 2 s."""
    rng = np.random.default_rng(seed)
    sample = diff[rng.choice(len(diff), most, replace=False)] if len(diff) > most else diff
    key = np.abs((np.asarray(sample, np.float64) * rng.standard_normal(diff.shape[1])).sum(1))  # (n,)
    step = KEY_STEP * float(np.sqrt(np.mean(np.square(key)))) if key.size else 0.0
    return int(np.unique(np.floor(key / step) if step > 0 else key).size)


def personal_dims(diff: np.ndarray, projection_dim: int, seed: int) -> int:
    """How many leading whitened directions each user's online model sees: `projection_dim`, at most one per ten
    distinct comparisons (at least 2), as the base model's cap of ten comparisons a weight (Peduzzi et al. 1996, "A
    simulation study of the number of events per variable in logistic regression analysis").

    Whitening keeps every direction at unit spread: kept as many as the distinct comparisons span, it makes each
    comparison's features orthogonal to every other's (n distinct rows whitened in n directions: Z Z^T = n I), so
    nothing a user's model learns from one comparison moves its prediction of the next. 8 users, 4 always choosing the
    long answer and 4 the short one, 12 comparisons each on the same 12 prompts: 12 directions, every prediction 0.4996
    to 0.502 (a diagonal-covariance step's rounding, mostly below 0.5), personalized accuracy 0.25 against the base
    model's 0.50; 2 directions: 0.958 (tests/unit/test_audit58.py). Distinct comparisons, not rows: 24 such users are
    the same 12 comparisons, three times over. Real sets hold far more than ten distinct comparisons a direction
    (persona 90/10, UKPConvArg1): 32."""
    return min(projection_dim, max(2, distinct_comparisons(diff, seed) // 10))


def fit_logistic(z: np.ndarray, l2: float, max_steps: int = 500) -> np.ndarray:
    """Ridge logistic regression through the origin on rows where the chosen side won.  # (r,) float32

    Minimizes sum_n log(1 + exp(-z_n . w)) + l2 / 2 |w|^2 by L-BFGS (scipy's L-BFGS-B, Nocedal & Wright 2006, ch. 7):
    each step costs two (n, r) products, where Newton's would cost an (r, r) Hessian, n r^2, a step, which would
    keep the base model to 64 directions. `z`: (n, r) numbers. No direction (r = 0: every comparison's answers embed
    alike, `principal_whitening` keeps none) gives no weight, a margin of 0 for every row."""
    if z.shape[1] == 0:
        return np.zeros(0, np.float32)
    from scipy.optimize import minimize  # scipy.optimize: ~0.1 s to import, at the first audit of a process

    z = np.ascontiguousarray(z, np.float64)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        margin = z @ w  # (n,)
        value = np.logaddexp(0.0, -margin).sum() + 0.5 * l2 * (w @ w)
        return float(value), -(z.T @ sigmoid(-margin)) + l2 * w

    # scipy's own tolerances: on UKPConvArg1's 20,000 rows a fold, 381 directions, 12 steps, the objective within 1e-10
    # of a fit to gtol 1e-6 (15 steps, ~3x the time), no margin of the 65,340 of another sign (at most 7e-4 apart)
    fitted = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": max_steps})
    return fitted.x.astype(np.float32)


def held_out_dims(z: np.ndarray, inner: np.ndarray, l2: float) -> int:
    """How many leading columns of `z` (n, r) the base model keeps: of 16, 32, 64, ... and r, the count whose fits
    predict held-out users best (least log-loss; the fewer columns on a tie), by two-fold cross-validation over the
    users (`inner` (n,): 0 or 1, a row's user's fold; Hastie, Tibshirani & Friedman 2009, 7.10). r when r <= 16 or a
    fold is empty.

    On whitened directions the ridge weighs every direction alike, so on a small audit the trailing ones fit noise:
    300 directions fitted on 1,500 comparisons (BENCHMARKS.md, issue 6, persona 90/10) scored the majority 0.895, 64
    directions 0.964. A signal in a direction of small spread keeps every direction (tests/unit/test_audit49.py)."""
    r = z.shape[1]
    folds = (np.flatnonzero(inner == 0), np.flatnonzero(inner == 1))
    if r <= 16 or min(f.size for f in folds) == 0:
        return r
    candidates = [k for k in (16 << i for i in range(16)) if k < r] + [r]

    def held_out_loss(k: int) -> float:  # summed over both folds, each scored by the fit on the other
        return sum(float(np.logaddexp(0.0, -(z[folds[1 - f], :k] @ fit_logistic(z[folds[f], :k], l2))).sum())
                   for f in (0, 1))

    losses = [held_out_loss(k) for k in candidates]
    return candidates[int(np.argmin(losses))]


def inner_folds(user_hash: np.ndarray, user: np.ndarray) -> np.ndarray:
    """Each row's fold (0 or 1) for `held_out_dims`: (n,) from its user's id hash `user_hash` (n,) and user index
    `user` (n,). The rows' users in the order of their hash (then index) go to the folds in turn, so both folds hold
    users from two on whatever their ids; a single user's comparisons alternate. Not the hash's second bit, which the users of a half may share by
    chance (one in two at two users), every direction then kept."""
    users, at = np.unique(user, return_index=True)  # (u,)
    if users.size < 2:
        return np.arange(user.size) & 1
    turn = np.empty(users.size, np.int64)
    turn[np.lexsort((users, user_hash[at]))] = np.arange(users.size) & 1
    return turn[np.searchsorted(users, user)]


def base_margins(c: Comparisons, whitening: np.ndarray, config: AuditConfig) -> np.ndarray:
    """Cross-fitted base margin: each row scored by a model fitted on the other half of the users.  # (N,)

    A user's half is the lowest bit of the crc32 of their name (`fold_names`, else `users`): the same in every audit.
    `whitening` (d, r): the directions the model sees. Only the rows fitted on are projected onto them (at most
    `base_max_rows` a fold); every row's margin is its difference times one (d,) vector, so no (N, r) table is held."""
    rng = np.random.default_rng(config.seed)
    user_hash = np.array([zlib.crc32(u.encode()) for u in c.fold_names or c.users], np.int64)[c.user]  # (N,)
    half = user_hash & 1  # the cross-fitting halves; `inner_folds` splits a half's users for `held_out_dims`
    margin = np.empty(len(c), np.float32)

    def fit(rows: np.ndarray) -> np.ndarray:  # (d,): the fitted weights as a direction in embedding space
        if len(rows) > config.base_max_rows:
            rows = rows[rng.choice(len(rows), config.base_max_rows, replace=False)]
        z = c.diff[rows] @ whitening  # (n, r)
        kept = held_out_dims(z, inner_folds(user_hash[rows], c.user[rows]), config.base_l2)
        return whitening[:, :kept] @ fit_logistic(z[:, :kept], config.base_l2)

    if half.min() == half.max():  # one half is empty (e.g. a single user): fit on everyone
        return (c.diff @ fit(np.arange(len(c)))).astype(np.float64)
    for h in (0, 1):
        direction = fit(np.flatnonzero(half != h))
        mine = half == h
        margin[mine] = c.diff[mine] @ direction
    return margin.astype(np.float64)


def _group_metrics(
    name: str, rows: np.ndarray, c: Comparisons, p_personal: np.ndarray, p_base: np.ndarray, config: AuditConfig,
    resampled: dict[str, tuple[np.ndarray, np.ndarray]],
) -> GroupMetrics:
    """The group's figures; its accuracies' bootstrap resamples (personalized, base), each (resamples,), go in
    `resampled[name]`, drawn from a generator seeded by `config.seed` and the group's name (the same in every audit).
    A group of fewer than INTERVAL_MIN_USERS users has no intervals (None) and no resamples: their ends would be its
    users' own accuracies (`INTERVAL_MIN_USERS`)."""
    pp, pb = p_personal[rows], p_base[rows]
    policy = c.policy_win[rows]
    right_personal, right_base = credit(pp), credit(pb)  # (n,) each
    users = int(np.unique(c.user[rows]).size)
    intervals: tuple[tuple[float, float] | None, tuple[float, float] | None] = (None, None)
    if users >= INTERVAL_MIN_USERS:
        rng = np.random.default_rng([config.seed, zlib.crc32(name.encode())])
        resampled[name] = (resampled_means(right_personal, c.user[rows], config.resamples, rng),
                           resampled_means(right_base, c.user[rows], config.resamples, rng))
        intervals = tuple(percentile_interval(resampled[name][0])), tuple(percentile_interval(resampled[name][1]))
    return GroupMetrics(
        group=name,
        users=users,
        comparisons=int(rows.size),
        personalized_accuracy=float(right_personal.mean()),
        base_accuracy=float(right_base.mean()),
        personalized_accuracy_interval=intervals[0],
        base_accuracy_interval=intervals[1],
        personalized_ece=expected_calibration_error(pp, config.ece_bins),
        base_ece=expected_calibration_error(pb, config.ece_bins),
        win_rate=win_rate(policy[policy != 0] > 0),
        win_comparisons=int((policy != 0).sum()),
        too_few_comparisons=bool(rows.size < config.min_comparisons),
        personalized_brier=brier_score(pp),
        base_brier=brier_score(pb),
    )


def _gap_interval(groups: list[GroupMetrics], gap: float | None, resampled: dict, which: int) -> tuple[float, float] | None:
    """95% interval of `gap`, the best minus the worst ranked group's accuracy (`extremes`; `which`: 0 personalized,
    1 base): gap +- the half-width that holds every pair of ranked groups' differences at once (`range_half_width` over
    each group's own resamples; a user in two groups is resampled in each on its own). The worst and the best are
    picked after looking, so the interval of that one pair's difference alone is too narrow: of 20 groups drawn alike
    it would call the named two different. None: no gap, or a single group ranked (there is none to tell it from: not
    [0, 0], as for groups of equal accuracy), or a ranked group of
    fewer than INTERVAL_MIN_USERS users (it has no resamples: the bound over every ranked pair cannot be drawn)."""
    ranked = [g for g in groups if not g.too_few_comparisons] or groups
    if gap is None or len(ranked) < 2 or any(g.group not in resampled for g in ranked):
        return None
    accuracy = np.array([g.personalized_accuracy if which == 0 else g.base_accuracy for g in ranked])  # (K,)
    half = range_half_width(np.stack([resampled[g.group][which] for g in ranked]), accuracy)  # from (K, resamples)
    return gap - half, gap + half


def _overall_gives_away(c: Comparisons, hidden: list[np.ndarray], least: int) -> bool:
    """Whether the overall figures less those of the groups shown would be the figures of fewer than `least` users:
    `hidden`, the rows of the groups not shown, hold 1 to `least` - 1 users. Asked of the groups this audit suppresses
    (`least`: its `min_group_size`, at least MIN_SHOWN_USERS), and of the groups of fewer than MIN_SHOWN_USERS users
    whatever it asks: an audit of the same comparisons with the default `min_group_size` shows every other group, so
    an overall any audit shows less those gives the user of a one-user group away (were an audit with `min_group_size` 3 to
    show the overall an audit with 1 withholds, with that one's groups it would give the user away: one suppressed
    user's accuracy back by subtraction)."""
    users = np.unique(c.user[np.concatenate(hidden)]).size if hidden else 0
    return 0 < users < least


def _ties_skipped(c: Comparisons, since: float | None) -> int:
    """The ties skipped among the comparisons the audit scores: every one, or those made at or after `since` (a tie of
    unknown time is not counted then, as a comparison of unknown time is not scored)."""
    if since is None or c.tie_time is None:
        return c.ties_skipped
    return int((c.tie_time >= since).sum())


def _check_names_a_user(user_groups: Mapping[str, str], pairs: Sequence[Preference]) -> None:
    """ValueError naming `user_groups` when it names none of the users of `pairs` (every one would be NO_VALUE)."""
    audited = sorted({r.user_id for r in pairs})
    if not any(user in user_groups for user in audited):
        keys = list(user_groups.keys())[:1]
        shown = f"{keys[0]!r} ({type(keys[0]).__name__}), ..." if keys else "none"
        raise ValueError(f"`user_groups` names none of the {len(audited)} users of `records` (its keys: {shown}; the "
                         f"records' users: {audited[0]!r}, ...): key it by the records' user ids, str (read_rows reads a "
                         "number user_id as its text)")


def audit(
    c: Comparisons,
    group_by: str,
    config: AuditConfig = AuditConfig(),
    progress: Callable[[float], None] | None = None,
    personalized: OnlineUserModel | None = None,
) -> AuditReport:
    """Run the audit; every comparison is predicted by its user's model before that model learns it.

    `personalized` replaces the default per-user online logistic model (e.g. `OnlinePAL` built on
    the same rows and user indices)."""
    with single_threaded():
        return _audit(c, group_by, config, progress, personalized)


def _audit(c: Comparisons, group_by: str, config: AuditConfig, progress, personalized) -> AuditReport:
    start = time.perf_counter()
    if len(c) == 0:
        raise ValueError("no comparisons to audit")
    bad = ~np.isfinite(c.diff).all(-1)
    if bad.any():
        raise ValueError(f"`diff` row {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf): the embeddings of "
                         "that comparison's answers hold NaN or inf")
    base_dim = c.diff.shape[1] if config.base_dim is None else config.base_dim
    whitening = principal_whitening(c.diff, max(base_dim, config.projection_dim), config.seed)  # (d, R)
    # a small audit fits the base model on fewer directions: about ten comparisons per weight
    base_dims = min(base_dim, max(2, len(c) // 10))
    base_margin = c.base_margin if c.base_margin is not None else base_margins(c, whitening[:, :base_dims], config)
    base_name = "given" if c.base_margin is not None else BASE_METHOD
    if personalized is None:
        z = c.diff @ whitening[:, : personal_dims(c.diff, config.projection_dim, config.seed)]  # (N, <= projection_dim)
        features = np.concatenate([base_margin.astype(np.float32)[:, None], z], axis=1)
        personalized = OnlineLogistic(features, len(c.users), config.online, c.user)
    model = personalized
    p_personal = prequential(model, c.user, c.time, progress)
    p_base = sigmoid(base_margin)

    scored = np.ones(len(c), bool) if config.since is None else c.time >= config.since
    order = np.argsort(c.group[scored], kind="stable")
    rows_scored = np.flatnonzero(scored)[order]
    bounds = np.r_[0, np.cumsum(np.bincount(c.group[rows_scored], minlength=len(c.groups)))]
    groups, suppressed, resampled, hidden, alone = [], 0, {}, [], []
    shown_from = max(config.min_group_size, MIN_SHOWN_USERS)
    for g, name in enumerate(c.groups):
        rows = rows_scored[bounds[g] : bounds[g + 1]]
        if rows.size == 0:
            continue
        users = np.unique(c.user[rows]).size
        if users < MIN_SHOWN_USERS:
            alone.append(rows)
        if users < shown_from:
            suppressed += 1
            hidden.append(rows)
            continue
        groups.append(_group_metrics(name, rows, c, p_personal, p_base, config, resampled))
    overall = None
    if scored.any() and not _overall_gives_away(c, hidden, shown_from) and not _overall_gives_away(c, alone, MIN_SHOWN_USERS):
        overall = _group_metrics("all", np.flatnonzero(scored), c, p_personal, p_base, config, {})
    worst, worst_acc, gap = extremes(groups, lambda g: g.personalized_accuracy)
    base_worst, base_worst_acc, base_gap = extremes(groups, lambda g: g.base_accuracy)
    gap_interval = _gap_interval(groups, gap, resampled, 0)
    base_gap_interval = _gap_interval(groups, base_gap, resampled, 1)
    return AuditReport(
        group_by=group_by,
        created_at=time.time(),
        encoder_id=c.encoder_id,
        personalized_model=model.name,
        base_model=base_name,
        users=len(c.users),
        comparisons=int(scored.sum()),
        ties_skipped=_ties_skipped(c, config.since),
        since=config.since,
        min_group_size=config.min_group_size,
        min_comparisons=config.min_comparisons,
        suppressed_groups=suppressed,
        overall=overall,
        groups=groups,
        worst_group=worst,
        worst_group_accuracy=worst_acc,
        gap=gap,
        base_worst_group=base_worst,
        base_worst_group_accuracy=base_worst_acc,
        base_gap=base_gap,
        gap_interval=gap_interval,
        base_gap_interval=base_gap_interval,
        seconds=round(time.perf_counter() - start, 3),
    )
