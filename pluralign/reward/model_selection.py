"""Choosing the number of mixture components K from the data (PAL's prototypes, EM's heads).

Criterion: held-out log-likelihood. For each candidate K a model is fitted on the seen users'
training pairs and scored on their validation pairs (the same users, disjoint from the test pairs):

    L(K) = sum_u log p(u's validation comparisons | u's fitted preference under K)

where a user's fitted preference is PAL's trained weights w_u, or EM's posterior over heads from the
user's training pairs. `L(K)` is a sum of per-user terms, so its uncertainty is measurable.

Candidates: K = k_min, k_min + 1, ... (default 1 upward), stopping at `k_max` (default 12) or once
`patience` (default 2) successive K have not raised the best L; or an explicit list of K. K is never
more than the number of training users (`KSearch.for_users`): a component is fitted from users.

Choice: the smallest K whose L is within one standard error of the best (the one-standard-error
rule, Hastie, Tibshirani & Friedman, Elements of Statistical Learning, 7.10), the standard error
being that of the per-user differences L_u(K_best) - L_u(K) summed over users. A K larger than the
data needs splits a group between components: it fits noise and scores about the same as the right
K, so the maximum alone would pick it about half the time; the rule picks the smallest K that
explains the held-out comparisons as well.

An information criterion was not used: an EM head has 2 x 384 weights (MiniLM), so BIC's penalty
for one more head, 768/2 log N (about 3,100 at the 4-group persona population's N = 3,600 training
pairs), exceeds the most any K can gain over K = 1 (the whole data term of a chance model,
N log 2 = 2,495): BIC picks K = 1 whatever the data. PAL's effective number of parameters is not
known (shared MLPs, early stopping), so no criterion of that kind applies cleanly either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np

from pluralign.reward.features import PairBatch

TIE_TOLERANCE = 1e-6  # totals closer than this are equal (rounding, not evidence): relative, and in nats below 1 nat


def tie_tolerance(best: float) -> float:
    """How far (nats) a total log-likelihood may fall short of `best` and still be equal to it:
    TIE_TOLERANCE relative to `best`, and TIE_TOLERANCE nats when |best| is under 1. Two perfect fits
    of separable data score -3.7e-13 and -8.6e-17 nats (measured): a relative tolerance alone
    is ~1e-22 nats there, and the larger K won by a difference that is no evidence."""
    return TIE_TOLERANCE * max(abs(best), 1.0)


class TooManyComponents(ValueError):
    """K larger than the number of training users: `ks` are the K asked for that are too large."""

    def __init__(self, ks: list[int], users: int):
        self.ks, self.users = ks, users
        super().__init__(f"K = {', '.join(map(str, ks))} is more than the {users} training users "
                         f"(each component is fitted from users' preferences): at most {users}")


@dataclass(frozen=True)
class KSearch:
    """Which K to try. Either an explicit `candidates` list, or an upward search from k_min."""

    k_min: int = 1  # first K of the upward search
    k_max: int = 12  # last K of the upward search
    patience: int = 2  # stop the upward search after this many K without a higher held-out L
    candidates: tuple[int, ...] = ()  # when given: exactly these K (any order), no early stop

    def __post_init__(self) -> None:
        if self.candidates:
            if any(k < 1 for k in self.candidates):
                raise ValueError(f"every candidate K must be >= 1, got {self.candidates}")
        elif not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def for_users(self, users: int) -> KSearch:
        """This search on the data of `users` training users: K is at most `users`. PAL fits each
        prototype from users' mixture weights and EM each head from the users assigned to it, so a
        K above the number of users leaves components no user supports. An upward search stops at
        `users`; explicit candidates above it raise TooManyComponents (a ValueError)."""
        too_many = sorted(k for k in set(self.candidates) if k > users)
        if too_many:
            raise TooManyComponents(too_many, users)
        if self.candidates or users < 1 or self.k_max <= users:
            return self
        return replace(self, k_min=min(self.k_min, users), k_max=users)

    def describe(self) -> str:
        if self.candidates:
            return f"K in {sorted(set(self.candidates))}"
        return f"K = {self.k_min}..{self.k_max}, stopping after {self.patience} K without a higher held-out log-likelihood"


@dataclass
class KSelection:
    """The outcome of a search: the chosen K and the criterion for every K tried."""

    k_selected: int
    k_best: int  # the K with the highest held-out log-likelihood
    criterion: dict[int, float]  # K -> L(K), the summed held-out log-likelihood (nats)
    standard_error: dict[int, float]  # K -> standard error of L(K_best) - L(K)
    per_pair: dict[int, float] = field(default_factory=dict)  # K -> L(K) / number of validation pairs
    rule: str = "smallest K within one standard error of the best held-out log-likelihood"

    def report(self) -> dict:
        """JSON-ready: `k_selected`, `k_best`, and per-K `k_criterion` / `k_criterion_se` / `k_criterion_per_pair`."""
        return {
            "k_selected": self.k_selected,
            "k_best": self.k_best,
            "k_criterion": {str(k): round(v, 4) for k, v in sorted(self.criterion.items())},
            "k_criterion_se": {str(k): round(v, 4) for k, v in sorted(self.standard_error.items())},
            "k_criterion_per_pair": {str(k): round(v, 6) for k, v in sorted(self.per_pair.items())},
            "k_rule": self.rule,
        }

    def table(self) -> list[str]:
        """Human-readable lines, one per K tried, the chosen one marked."""
        lines = ["  K   held-out log-lik   per pair   SE of gap to best"]
        for k in sorted(self.criterion):
            mark = "  <- selected" if k == self.k_selected else ""
            lines.append(
                f"  {k:<3} {self.criterion[k]:>16.2f}   {self.per_pair.get(k, float('nan')):>8.4f}"
                f"   {self.standard_error[k]:>17.2f}{mark}"
            )
        return lines


def one_standard_error(per_user: dict[int, np.ndarray]) -> KSelection:
    """Apply the rule to per-user held-out log-likelihoods {K: (U,)} (the same users, same order).
    Raises ValueError when no K was scored, when a K's scores are not (U,) for the U users of the first
    K (the rule compares each user's score across K: another count would be broadcast, or an error from
    numpy's broadcasting), or when a K's total is not finite."""
    if not per_user:
        raise ValueError("no K was scored")
    per_user = {k: np.asarray(v, dtype=np.float64) for k, v in per_user.items()}
    first = next(iter(per_user))
    for k, values in per_user.items():
        if values.ndim != 1 or values.shape != per_user[first].shape:
            raise ValueError(f"K={k}'s held-out log-likelihoods have shape {values.shape}, K={first}'s "
                             f"{per_user[first].shape}: one per user, (U,), the same users for every K")
    totals = {k: float(np.sum(v)) for k, v in per_user.items()}
    if not all(math.isfinite(t) for t in totals.values()):
        raise ValueError(f"held-out log-likelihood is not finite for some K: {totals}")
    k_best = max(sorted(totals), key=lambda k: totals[k])  # exact ties: the smaller K (max keeps the first)
    se = {}
    for k, values in per_user.items():
        gap = per_user[k_best] - values  # (U,)
        se[k] = float(np.std(gap, ddof=1) * math.sqrt(len(gap))) if len(gap) > 1 else 0.0
    slack = tie_tolerance(totals[k_best])  # equal fits (e.g. EM heads left empty, two perfect fits) differ by rounding only
    k_selected = min(k for k in totals if totals[k_best] - totals[k] <= se[k] + slack)
    return KSelection(k_selected=k_selected, k_best=k_best, criterion=totals, standard_error=se)


class _Scored(Protocol):
    def heldout_log_likelihood(self, pairs: PairBatch) -> np.ndarray: ...


M = TypeVar("M", bound=_Scored)


def search_k(
    fit: Callable[[int], M],
    score: Callable[[M], np.ndarray],
    search: KSearch = KSearch(),
    n_pairs: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[M, KSelection, dict[int, M]]:
    """Fit `fit(K)` for each candidate K, score each with `score(model)` -> per-user held-out
    log-likelihood (U,), and apply the one-standard-error rule.

    Returns (the model at the selected K, the selection, every fitted model by K). `n_pairs` (the
    number of validation pairs) adds the per-pair criterion to the selection; `progress(K, L)` is
    called after each K."""
    models: dict[int, M] = {}
    per_user: dict[int, np.ndarray] = {}

    def visit(k: int) -> float:
        models[k] = fit(k)
        per_user[k] = np.asarray(score(models[k]), dtype=np.float64)
        total = float(per_user[k].sum())
        if progress:
            progress(k, total)
        return total

    if search.candidates:
        for k in sorted(set(search.candidates)):
            visit(k)
    else:
        best, since = -math.inf, 0
        for k in range(search.k_min, search.k_max + 1):
            total = visit(k)
            if not math.isfinite(best) or total > best + tie_tolerance(best):
                best, since = total, 0
            else:
                since += 1
                if since >= search.patience:
                    break
    selection = one_standard_error(per_user)
    if n_pairs:
        selection.per_pair = {k: v / n_pairs for k, v in selection.criterion.items()}
    return models[selection.k_selected], selection, models


class KSelected:
    """A `PreferenceModel` that chooses its K when fitted: one model per candidate K (built by
    `build(K)`), each fitted on the training pairs and scored by held-out log-likelihood on the
    validation pairs; the selected one answers every later call.

    >>> model = KSelected("em", lambda k: EMMixture(EMConfig(k=k)))
    >>> metrics = model.fit(train, val)    # metrics["k_selected"], metrics["k_criterion"]
    """

    def __init__(self, name: str, build: Callable[[int], object], search: KSearch = KSearch()):
        self.name = name
        self.build = build
        self.search = search
        self.model = None
        self.selection: KSelection | None = None
        self.fit_metrics: dict[int, dict] = {}

    def fit(self, train: PairBatch, val: PairBatch) -> dict:
        if len(val) == 0:
            raise ValueError("choosing K needs validation pairs of the training users; pass --k to fit one K without them")

        def fit_one(k: int):
            model = self.build(k)
            self.fit_metrics[k] = model.fit(train, val)
            return model

        self.model, self.selection, _ = search_k(
            fit_one, lambda m: m.heldout_log_likelihood(val), self.search.for_users(len(train.users)), n_pairs=len(val)
        )
        return {**self.fit_metrics[self.selection.k_selected], **self.selection.report()}

    def _chosen(self):
        if self.model is None:
            raise ValueError(f"{self.name}: not fitted yet: call fit first")
        return self.model

    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        return self._chosen().prob_seen(pairs)

    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        return self._chosen().prob_new_users(support, query)

    def user_clusters(self) -> dict[str, int] | None:
        return self._chosen().user_clusters()

    def heldout_log_likelihood(self, pairs: PairBatch) -> np.ndarray:
        return self._chosen().heldout_log_likelihood(pairs)
