"""What pluralign believes about one user: PAL's mixture as the population prior, plus a per-user
Bayesian part that can hold a preference no prototype covers.

PAL's margin is linear in a user's prototype weights w (variant a exactly:
r(y_c) - r(y_r) = ||f_r||^2 - ||f_c||^2 + 2 sum_k w_k p_k . (f_c - f_r); variant b to first order
around the population's weights). So a user's reward for an answer y to a prompt x is written as
one linear model over coordinates that do not depend on the user:

    r_u(x, y) = b_0 o(x, y) + sum_k b_k q_k(x, y) + theta . phi(y) + delta . l(x, y)

- o = -||f(x, y)||^2 and q_k = 2 p_k . f(x, y) are PAL's ideal-point terms (variant a; variant b:
  o = 0 and q_k = s g_k(x) . f^(y) / ||a_0(x)||, the cosine's terms at the population's ideal point);
  b_0 = 1, b = w is PAL's reward exactly, and b off the simplex is an ideal point outside the hull
  of the prototypes (Chen et al., ICLR 2025, give the ideal-point form);
- phi(y) are the named text features of `pluralign.user.features` (length, lists, register, ...);
- l(x, y) is the answer's direction in PAL's latent space (unit norm): an ideal-point shift in
  directions no prototype spans.

beta_u = (b_0, b, theta, delta) gets a Gaussian prior centred on the population (b_0 = 1, b = the
population's mixture weights, the rest 0) and the Bradley-Terry likelihood of the user's own
comparisons, P(c > r) = sigmoid(beta_u . (x_c - x_r)). All coefficients are fitted together, so a
preference PAL cannot express is not first forced onto the prototypes. The posterior is approximated
by a Gaussian at its mode (Laplace): Newton steps on a convex objective, then the inverse Hessian as
the covariance, which later work uses to ask the most informative question. This is Bayesian
logistic regression with an informative prior (Bishop, PRML 4.5); LoRe (Bose et al., 2025) and HyRe
(Lee et al., 2025) likewise adapt a low-dimensional per-user part on a shared reward basis. PAL's own
few-shot logits are still fitted (`fit_logits`): the profile shows them, and `user_model =
prototypes` serves with them alone.

Shapes: N comparisons or candidates, d embedding width, K prototypes, F named features, L latent
width, D = 1 + K + F + L coefficients (76 for the service's K = 4, F = 7, L = 64). Everything per user is
numpy float64 and small, so a refit is about a millisecond; the state is a row (`UserState`, msgpack)
in the users table, never a module parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import torch

from pluralign.checks import whole
from pluralign.data.record import Base
from pluralign.losses import davidson_tie_nll
from pluralign.reward.inputs import comparison_rows, logits_row
from pluralign.reward.pal_model import PALModel
from pluralign.user.active import RECENT_ANSWERS, SURPRISE_Z, Recent, recent_surprise
from pluralign.user.collinear import CollinearFeatures, feature_signs, joint_beliefs, times_moved
from pluralign.user.features import FEATURE_NAMES, FEATURES_VERSION, response_features
from pluralign.user.population import as_population, softmax

if TYPE_CHECKING:
    from pluralign.reward.em import EMMixture
    from pluralign.user.pooled import PooledPrior

STATE_VERSION = 1
# the changed-mind rule `UserState.surprise` was computed by (`UserState.surprise_rule`): 2, the smaller of the rank z
# and the calibrated z, ties read; states stored by earlier releases say none (0): the calibrated z of comparisons
# alone, the rank z alone, or rule 2's
SURPRISE_RULE = 2


@dataclass(frozen=True)
class ResidualPrior:
    """Standard deviations of the Gaussian prior on a user's coefficients around the population.

    The named features get a wide prior: they carry the preferences people state about answers,
    and a few comparisons should set them. PAL's 1 + K + L coordinates get narrow ones, so the 64
    latent directions do not absorb what a named feature explains. Chosen on the closed loop's seed-0
    run (mean pick rate over the style rules 0.62 with every scale at 1, 0.75 with these; figures in
    BENCHMARKS.md), reported on another seed; `pluralign eval` scales them all by a factor chosen on
    validation pairs (`pluralign.user.preference`)."""

    origin_scale: float = 0.5  # of b_0 around 1 (variant a's -||f||^2 term)
    prototype_scale: float = 0.5  # of each b_k around the population's weight on prototype k
    feature_scale: float = 5.0  # of each named feature's weight (features move ~1 between answers)
    latent_scale: float = 0.5  # of each latent coordinate's weight (latent rows have unit norm)
    newton_steps: int = 25  # most Newton steps of the mode search
    tol: float = 1e-7  # stop once a step lowers the objective by less than this
    stated_weight: float = 1.5  # prior mean of a stated preference's feature weight (times its sign)
    stated_scale: float = 0.5  # its prior sd: strong, yet ~30 contrary comparisons turn it (tests/unit/test_user_model.py)

    def __post_init__(self) -> None:
        if min(self.origin_scale, self.prototype_scale, self.feature_scale, self.latent_scale, self.stated_scale) <= 0:
            raise ValueError("prior scales must be positive")


class UserState(Base, kw_only=True, forbid_unknown_fields=False):
    """A user's residual posterior, as stored in the users table (msgpack) and exported (JSON).

    Unlike every other pluralign struct it reads a field it does not know (one a later release added without a
    bump of `version`) by leaving it out, instead of refusing the whole state: it is only ever read from the
    service's own store, where replicas of two releases share rows during a rolling update, and a refusal would make
    each release refit the user the other had just fitted (docs/operations.md). So does the struct inside it,
    `CollinearFeatures` (refusing, it would refuse the whole state with it). A change in what a
    field means bumps `version`, which `UserModel.fits` refuses; but for `surprise`, whose rule says which changed-mind
    statistic it holds (`surprise_rule`): a bump would refit every stored user at their next read (and in a rolling
    update each release would refit every user the other fitted), where only some states can read otherwise under
    another rule (`UserModel.current`)."""

    version: int = STATE_VERSION
    population: str  # version of the population (PAL) checkpoint it was fitted against
    features: str  # FEATURES_VERSION of the named features
    names: list[str]  # (D,) "pal_origin", "prototype_0".., the feature names, "latent_0"..
    logits: list[float]  # (K,) the user's PAL logits (PAL's own few-shot fit, shown in the profile)
    mean: list[float]  # (D,) posterior mean of beta
    cov: list[float]  # (D * D,) posterior covariance, row-major
    n: int  # comparisons fitted on (with a winner)
    # ties fitted on too (answers naming no winner, two answers each: Davidson's term, `fit_posterior`); 0 in a state
    # stored before ties were fitted, which the service refits once the user has ties
    ties: int = 0
    fitted_at: float
    stated: dict[str, int] = {}  # the stated preferences in the prior it was fitted with: feature -> +1 (more) / -1 (less)
    # for each stated feature (when n > 0): [posterior mean, sd] of its weight fitted on the same
    # comparisons without the stated prior, i.e. what the comparisons alone say (the readable
    # summary shows it; kept here so a profile read needs no second fit)
    from_comparisons: dict[str, list[float]] = {}
    # fitted under a tenant's pooled prior (`pluralign.user.pooled`): how many users it came from, and
    # the posterior mean and variances (D,) under the model's own prior, which later pooled priors
    # are estimated from (empty when the state was fitted under the model's own prior)
    pooled_users: int = 0
    unpooled_mean: list[float] = []
    unpooled_var: list[float] = []
    # named features the comparisons moved together (`pluralign.user.collinear`), with the posterior
    # along each group's joint direction; empty for a state fitted before it was kept (until its next refit)
    collinear: list[CollinearFeatures] = []
    # each named feature's posterior probability that the weight on it is positive, integrated along its axis
    # (`pluralign.user.collinear.feature_signs`: right for a user whose comparisons all agree, where the Laplace
    # z stays near 1; a feature of a `collinear` group keeps the Laplace one), how many of the comparisons moved it, and for each
    # feature (when n > 0 and a preference is stated; every feature, not the stated ones only) the same probability from the comparisons alone; empty for a state fitted before they were kept (the summary then
    # reads the Laplace Phi(mean / sd), until the user's next refit)
    p_more: dict[str, float] = {}
    moved_in: dict[str, int] = {}
    # of `moved_in`, how many were ties (`pluralign.user.collinear.times_moved`): the summary says the user showed no
    # preference on a feature their ties moved (`pluralign.user.summary`); empty without ties, and in a state stored
    # by an earlier release, where the summary takes any tie as having moved every feature `moved_in` counts
    tied_in: dict[str, int] = {}
    p_more_from_comparisons: dict[str, float] = {}
    # how much worse the posterior of the user's older answers predicts their newest RECENT_ANSWERS answers (comparisons
    # and ties) than it predicts each older one held out (a rank z) and than it expects to (a calibrated z), the smaller
    # of the two (`pluralign.user.active.recent_surprise`): at SURPRISE_Z or more the user has changed their mind and is
    # asked again (chat's `compare`, onboarding's `worth_asking`); 0 in a state of an earlier release without it, or there
    # the calibrated z alone, or the rank z alone (the same scale and threshold, read until the user's next refit)
    surprise: float = 0.0
    # the rule it was computed by (SURPRISE_RULE); 0 in a state stored by an earlier release, whatever its rule:
    # such a state is refitted where the rule now in force could read otherwise (`UserModel.current`)
    surprise_rule: int = 0

    @property
    def surprised(self) -> bool:
        """Whether the user's newest answers contradict this posterior (`surprise` >= SURPRISE_Z): worth asking again."""
        return self.surprise >= SURPRISE_Z

    @property
    def answers(self) -> int:
        """The answers it was fitted on: comparisons with a winner and ties of two answers (a ties-only user's
        posterior has moved too: towards indifference on the pairs they tied)."""
        return self.n + self.ties

    def mean_array(self) -> np.ndarray:
        return np.asarray(self.mean, np.float64)

    def cov_array(self) -> np.ndarray:
        d = len(self.mean)
        return np.asarray(self.cov, np.float64).reshape(d, d)

    def coefficient(self, name: str) -> tuple[float, float]:
        """(posterior mean, posterior standard deviation) of one named coefficient (`names`: "length",
        "prototype_0", "latent_3", ...). Raises ValueError naming `name` and the names there are when the
        state has no such coefficient (was list.index's "'x' is not in list")."""
        if name not in self.names:
            latent = sum(n.startswith("latent_") for n in self.names)
            shown = ", ".join([n for n in self.names if not n.startswith("latent_")] + ([f"latent_0 .. latent_{latent - 1}"] if latent else []))
            raise ValueError(f"no coefficient named {name!r} in this state; it has {shown}")
        i = self.names.index(name)
        return float(self.mean[i]), float(np.sqrt(max(self.cov_array()[i, i], 0.0)))

    def readable(self) -> bool:
        """Whether its numbers say something: the (D,) mean and (D * D,) covariance of its D `names`, and every
        other number (logits, unpooled moments, what the comparisons alone say, each collinear group's) finite,
        and every probability (`p_more`, `p_more_from_comparisons`, each group's) in [0, 1] within
        PROBABILITY_ROUNDING. A state holding NaN decodes, yet read as a profile a NaN `p_more` said "less"
        (`pluralign.user.summary.leaning` refuses it since); the service refits such a state, as one that does not decode."""
        d = len(self.names)
        if len(self.mean) != d or len(self.cov) != d * d:
            return False
        numbers = [[self.surprise], self.logits, self.mean, self.cov, self.unpooled_mean, self.unpooled_var, *self.from_comparisons.values(),
                   *([g.mean, g.sd, g.cosine, *g.direction] for g in self.collinear)]
        probabilities = [*self.p_more.values(), *self.p_more_from_comparisons.values(),
                         *(p for g in self.collinear for p in (g.p_more, g.p_more_from_comparisons) if p is not None)]
        return all(np.isfinite(np.asarray(n, np.float64)).all() for n in numbers) and all(is_probability(p) for p in probabilities)

    def encode(self) -> bytes:
        return _ENCODER.encode(self)

    @staticmethod
    def decode(raw: bytes) -> UserState:
        """Raises msgspec.DecodeError / ValidationError on a malformed state."""
        return _DECODER.decode(raw)


PROBABILITY_ROUNDING = 1e-9  # a probability this far past 0 or 1 is that end (a part of a sum can exceed the whole by an ulp)


def is_probability(p: float) -> bool:
    """Whether `p` is a probability in [0, 1], within PROBABILITY_ROUNDING (False for NaN)."""
    return -PROBABILITY_ROUNDING <= p <= 1.0 + PROBABILITY_ROUNDING

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(UserState)


def _check_prior(prior_mean: np.ndarray, prec: np.ndarray) -> None:
    """ValueError naming `prior_mean` or `prior_precision` (D,) or (D, D) when they are not finite, or the
    precision is no Gaussian's."""
    for name, value in (("prior_mean", prior_mean), ("prior_precision", prec)):
        if not np.isfinite(value).all():
            raise ValueError(f"`{name}` is not finite (NaN or inf)")
    if prec.ndim == 1:
        if (prec <= 0).any():
            i = int(np.flatnonzero(prec <= 0)[0])
            raise ValueError(f"`prior_precision` must be > 0 (the inverse of a prior variance): element {i} is {float(prec[i])}")
        return
    try:
        np.linalg.cholesky((prec + prec.T) / 2)
    except np.linalg.LinAlgError:
        raise ValueError("`prior_precision` (D, D) is not positive definite: not the inverse of a covariance") from None


def _checked(design, tied, prior_mean, prior_precision) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`fit_posterior`'s arguments as float64 arrays (tied (0, D) when None), or a ValueError naming the one that is
    not of its shape or not finite (or, the prior, no Gaussian's)."""
    design = np.asarray(design, np.float64)
    if design.ndim != 2:
        raise ValueError(f"`design` has shape {design.shape}, expected (N, D)")
    d = design.shape[1]
    prior_mean = np.asarray(prior_mean, np.float64)
    prec = np.asarray(prior_precision, np.float64)
    if prior_mean.shape != (d,):
        raise ValueError(f"`prior_mean` has {prior_mean.size} values (shape {prior_mean.shape}), the design has D={d} columns")
    if prec.shape not in ((d,), (d, d)):
        raise ValueError(f"`prior_precision` has shape {prec.shape}, expected ({d},) or ({d}, {d})")
    tied = np.zeros((0, d)) if tied is None else np.asarray(tied, np.float64)
    if tied.ndim != 2 or tied.shape[1] != d:
        raise ValueError(f"`tied` has shape {tied.shape}, expected (M, {d}): one row x_a - x_b per tie")
    for name, rows in (("design", design), ("tied", tied)):
        bad = ~np.isfinite(rows).all(-1)
        if bad.any():
            raise ValueError(f"`{name}` row {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf)")
    _check_prior(prior_mean, prec)
    return design, tied, prior_mean, prec


def fit_posterior(
    design: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray, steps: int = 25, tol: float = 1e-8,
    tied: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Laplace approximation of Bayesian logistic regression without intercept.

    design (N, D): x_c - x_r of each comparison (the chosen answer's features minus the rejected's);
    tied (M, D) or None: x_a - x_b of each tie (an answer naming no winner, either order), whose likelihood is
    Davidson's 2 sqrt(p (1 - p)) (`pluralign.losses.davidson_tie_nll`): it pulls the pair's margin towards 0
    and adds p (1 - p) z z' of curvature, most where the model cannot tell the two apart;
    prior_mean (D,), prior_precision (D,) (a diagonal Gaussian prior) or (D, D) (a full one, e.g. a
    population's spread). Returns the posterior mode (D,) and covariance (D, D) = inverse Hessian of
    the negative log posterior at the mode. Newton's method on a strictly convex objective, with
    step halving as a safeguard. Raises ValueError naming the argument that is not of these shapes
    or holds NaN or inf (on a NaN design no step is taken and the prior would come back as a fit),
    `prior_precision` when it is not a Gaussian's (a variance's inverse > 0 on the diagonal; a full one
    positive definite: a negative precision made the objective concave and came back as a
    "covariance" with negative variances), and `steps` when it is not a whole number >= 0."""
    whole("fit_posterior", 0, steps=steps)  # Newton steps
    design, tied, prior_mean, prec = _checked(design, tied, prior_mean, prior_precision)
    beta = prior_mean.copy()
    prec = np.diag(prec) if prec.ndim == 1 else prec

    def objective(b: np.ndarray) -> float:
        d = b - prior_mean
        value = np.logaddexp(0.0, -(design @ b)).sum() + 0.5 * d @ prec @ d
        return float(value + davidson_tie_nll(tied @ b)[0].sum() if len(tied) else value)

    def tie_terms(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ties' gradient (D,) and Hessian (D, D) at b."""
        _, slope, curvature = davidson_tie_nll(tied @ b)  # (M,) each
        return tied.T @ slope, (tied.T * curvature) @ tied

    loss = objective(beta)
    hessian = prec
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))  # (N,) P(chosen beats rejected)
        grad = -design.T @ (1.0 - p) + prec @ (beta - prior_mean)  # (D,)
        hessian = (design.T * (p * (1.0 - p))) @ design + prec  # (D, D)
        if len(tied):
            tie_grad, tie_hessian = tie_terms(beta)
            grad, hessian = grad + tie_grad, hessian + tie_hessian
        step = np.linalg.solve(hessian, grad)
        size = 1.0
        for _ in range(20):
            candidate = beta - size * step
            candidate_loss = objective(candidate)
            if candidate_loss <= loss + 1e-12:
                break
            size /= 2
        else:
            break
        beta, decrease, loss = candidate, loss - candidate_loss, candidate_loss
        if decrease < tol:
            break
    p = 1.0 / (1.0 + np.exp(-(design @ beta)))
    hessian = (design.T * (p * (1.0 - p))) @ design + prec
    if len(tied):
        hessian = hessian + tie_terms(beta)[1]
    return beta, np.linalg.inv(hessian)


@dataclass(frozen=True)
class Ties:
    """A user's M ties, answers that named no winner between two answers, in the form of their comparisons
    (`pluralign.store.history.History.tie_set`): prompt, first and second answer embeddings (M, d) each, and the
    two answers' texts (M each). Which answer is first does not matter."""

    prompt: np.ndarray
    first: np.ndarray
    second: np.ndarray
    first_texts: Sequence[str]
    second_texts: Sequence[str]


@dataclass(frozen=True)
class Candidates:
    """N answers in the user model's coordinates; nothing in it is about a user."""

    x: np.ndarray  # (N, D)


def texts_of(name: str, texts: Sequence[str]) -> Sequence[str]:
    """`texts` as they are; TypeError naming `name` when it is one string (N one-letter texts)."""
    if isinstance(texts, str | bytes):
        raise TypeError(f"`{name}` must be a sequence of strings, one per answer, not one {type(texts).__name__}")
    return texts


class UserModel:
    """A population model (PAL or EM) plus each user's Bayesian part. Holds no user: states are passed in.

    >>> um = UserModel(pal_model, population="ckpt-1f2e", prior_logits=population_logits)
    >>> logits, state = um.fit_user(prompt, chosen, rejected, chosen_texts, rejected_texts, population_logits)
    >>> um.score(logits, state, um.candidates(prompt, response, texts))  # (N,)
    """

    def __init__(self, model: PALModel | EMMixture, population: str, prior: ResidualPrior = ResidualPrior(),
                 prior_logits: np.ndarray | None = None):
        self.base = as_population(model, prior_logits)
        self.population = population
        self.prior = prior
        self.k = self.base.k
        self.latent_dim = self.base.latent_dim
        prior_logits = np.zeros(self.k) if prior_logits is None else \
            logits_row("prior_logits", prior_logits, self.k, minus_inf=True).double().numpy()
        self.population_weights = softmax(prior_logits)  # (K,)
        self.names = ["pal_origin", *(f"prototype_{k}" for k in range(self.k)), *FEATURE_NAMES,
                      *(f"latent_{i}" for i in range(self.latent_dim))]

    @property
    def dim(self) -> int:
        return len(self.names)

    def mean_for(self, weights: np.ndarray) -> np.ndarray:
        """(D,) coefficients that reproduce the population model's reward at prototype weights (K,)."""
        mean = np.zeros(self.dim)
        mean[0] = 1.0
        mean[1 : 1 + self.k] = weights
        return mean

    def prior_mean(self, stated: Mapping[str, int] | None = None) -> np.ndarray:
        """(D,) the prior's mean: the population's weights, and each stated preference's sign times
        `stated_weight` on its feature (`pluralign.user.stated`)."""
        mean = self.mean_for(self.population_weights)
        for name, sign in (stated or {}).items():
            mean[self.names.index(name)] = sign * self.prior.stated_weight
        return mean

    def prior_precision(self, stated: Mapping[str, int] | None = None) -> np.ndarray:
        """(D,) the prior's precisions; a stated feature's is 1 / stated_scale^2 (a strong prior)."""
        p = self.prior
        scales = [p.origin_scale] + [p.prototype_scale] * self.k + [p.feature_scale] * len(FEATURE_NAMES) \
            + [p.latent_scale] * self.latent_dim
        precision = 1.0 / np.square(np.asarray(scales, np.float64))
        for name in stated or {}:
            precision[self.names.index(name)] = 1.0 / p.stated_scale**2
        return precision

    def prior_for(self, stated: Mapping[str, int] | None = None, pooled: PooledPrior | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean (D,), precision (D,) or (D, D)) of a new user's prior: the model's own
        (`prior_mean`, `prior_precision`), or a tenant's `pooled` prior (full) with each stated
        preference set on top as in the model's (its feature's mean `stated_weight` times the sign,
        sd `stated_scale`, uncorrelated with the rest). Raises ValueError on a pooled prior over
        other coefficients."""
        if pooled is None:
            return self.prior_mean(stated), self.prior_precision(stated)
        mean, cov = self._pooled_moments(stated, pooled)
        return mean, np.linalg.inv(cov)

    def _pooled_moments(self, stated: Mapping[str, int] | None, pooled: PooledPrior) -> tuple[np.ndarray, np.ndarray]:
        """(mean (D,), cov (D, D)) of `prior_for` with a pooled prior."""
        if tuple(pooled.names) != tuple(self.names):
            raise ValueError("the pooled prior is on other coefficients than this model's")
        mean, cov = pooled.mean.copy(), pooled.cov.copy()
        for name, sign in (stated or {}).items():
            i = self.names.index(name)
            mean[i] = sign * self.prior.stated_weight
            cov[i, :] = cov[:, i] = 0.0
            cov[i, i] = self.prior.stated_scale**2
        return mean, cov

    def posterior(self, state: UserState | None, stated: Mapping[str, int] | None = None,
                  pooled: PooledPrior | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mean (D,), cov (D, D)) of the user's coefficients: the stored posterior, or without one
        the prior (`prior_for`: the model's or the tenant's `pooled` one, with the stated preferences),
        which is what a new user's posterior is."""
        if state is not None:
            return state.mean_array(), state.cov_array()
        if pooled is not None:
            return self._pooled_moments(stated, pooled)
        return self.prior_mean(stated), np.diag(1.0 / self.prior_precision(stated))

    def _split(self, coords: np.ndarray, named: np.ndarray) -> np.ndarray:
        """(N, 1 + K + L) population coordinates and (N, F) named features -> (N, D) in `names` order."""
        k = 1 + self.k
        return np.concatenate([coords[:, :k], named, coords[:, k:]], axis=1)

    def candidates(
        self, prompt: np.ndarray, response: np.ndarray, texts: Sequence[str] | None = None, named: np.ndarray | None = None
    ) -> Candidates:
        """prompt (N, d) or (d,), response (N, d), and the answers' texts N (or their named features
        (N, F) already computed) -> their coordinates. Raises ValueError on mismatched lengths, and
        naming `prompt` or `response` when they are not of the model's width or not finite, and `named`
        when it is not (N, F) finite numbers; TypeError when neither `texts` nor `named` is given (the
        named features are read from one of them) or `texts` is one str."""
        if texts is None and named is None:
            raise TypeError("candidates: give the answers' `texts` (N strings) or their `named` features (N, F): "
                            "the user model reads the named features from one of them")
        dim, device = self.base.input_dim, self.base.device()
        (response_t,) = comparison_rows(dim, device, response=response)
        prompt = np.asarray(prompt.detach().cpu() if isinstance(prompt, torch.Tensor) else prompt)
        if prompt.ndim == 1:
            prompt = np.broadcast_to(prompt, (len(response_t), len(prompt)))
        (prompt_t,) = comparison_rows(dim, device, prompt=prompt)
        if len(prompt_t) != len(response_t):
            raise ValueError(f"`prompt` has {len(prompt_t)} rows, `response` has {len(response_t)}: one prompt, or one per response")
        named = response_features(texts_of("texts", texts)) if named is None else np.asarray(named, np.float64)
        if len(named) != len(response_t):
            raise ValueError(f"{len(named)} texts for {len(response_t)} response vectors")
        if named.shape != (len(response_t), len(FEATURE_NAMES)) or not np.isfinite(named).all():
            raise ValueError(f"`named` has shape {named.shape}: the answers' named features are ({len(response_t)}, "
                             f"{len(FEATURE_NAMES)}) finite numbers (`pluralign.user.features.response_features`)")
        coords = self.base.coordinates(prompt_t, response_t).double().cpu().numpy()
        return Candidates(x=self._split(coords, named))

    def score(self, logits: np.ndarray, state: UserState | None, c: Candidates) -> np.ndarray:
        """(N,) the user's reward of each answer: the posterior mean's; without a state, the
        population model's reward at the user's logits (K,) (up to a constant per prompt). Raises
        ValueError naming `logits` when, without a state, they are not K finite numbers."""
        if state is None:
            logits = logits_row("logits", logits, self.k, minus_inf=True).double().numpy()
        beta = self.mean_for(softmax(np.asarray(logits, np.float64))) if state is None else state.mean_array()
        return c.x @ beta

    @torch.no_grad()
    def _diff(self, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray):
        # ValueError naming the argument that is not (N, d) alike or holds NaN / inf
        p, c, r = comparison_rows(self.base.input_dim, self.base.device(), prompt=prompt, chosen=chosen, rejected=rejected)
        both = self.base.coordinates(torch.cat([p, p]), torch.cat([c, r]))  # one pass: (2N, 1 + K + L)
        return p, c, r, (both[: len(prompt)] - both[len(prompt) :]).double().cpu().numpy()

    def fit_logits(self, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, prior_logits: np.ndarray) -> np.ndarray:
        """The population model's own fit of a user's K logits from comparisons (N, d) each.
        Raises ValueError naming the argument that is not (N, d) alike, not finite, or (`prior_logits`) not K numbers."""
        prior_logits = logits_row("prior_logits", prior_logits, self.k, minus_inf=True).double().numpy()
        p, c, r, diff = self._diff(prompt, chosen, rejected)
        return self.base.fit_logits(p, c, r, diff, prior_logits)

    def fit_user(
        self, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, chosen_texts: Sequence[str],
        rejected_texts: Sequence[str], prior_logits: np.ndarray, fitted_at: float = 0.0,
        stated: Mapping[str, int] | None = None, pooled: PooledPrior | None = None, ties: Ties | None = None,
        recent: Recent | Sequence[int] | None = None,
    ) -> tuple[np.ndarray, UserState]:
        """A whole refit from the user's N comparisons (embeddings (N, d) each, answer texts): the
        population model's K logits around `prior_logits`, and the posterior, from one pass of the
        population model's networks over the comparisons. Same result as `fit_logits` then `fit`.
        With a tenant's `pooled` prior the posterior is fitted under it (`prior_for`), and the state also
        keeps the posterior under the model's own prior (`UserState.unpooled_mean`). Raises ValueError
        on mismatched lengths, and naming the argument whose embeddings are not (N, d) or not finite,
        or `prior_logits` when they are not K finite numbers, a stated sign that is not +1 or -1, and
        TypeError naming a text list given as one string. `ties`: the user's M ties (`Ties`), which the
        posterior is fitted on too (Davidson's term, `fit_posterior`); PAL's own logits are fitted on the
        comparisons alone. `recent`: the user's newest answers, comparisons and ties, oldest first
        (`pluralign.store.history.History.newest_answers`), which `UserState.surprise` checks (indices: comparisons
        only; None: the last RECENT_ANSWERS comparisons as given). Raises IndexError on an index out of range."""
        chosen_texts, rejected_texts = texts_of("chosen_texts", chosen_texts), texts_of("rejected_texts", rejected_texts)
        if not (len(prompt) == len(chosen) == len(rejected) == len(chosen_texts) == len(rejected_texts)):
            raise ValueError("prompt, chosen, rejected and both text lists must have one row per comparison")
        prior_logits = logits_row("prior_logits", prior_logits, self.k, minus_inf=True).double().numpy()
        tied = self.tie_design(ties)
        if not len(prompt):
            return prior_logits, self._posterior(prior_logits, np.zeros((0, self.dim)), fitted_at, stated, pooled, tied, recent)
        p, c, r, diff = self._diff(prompt, chosen, rejected)
        logits = self.base.fit_logits(p, c, r, diff, prior_logits)
        named = response_features(chosen_texts) - response_features(rejected_texts)  # (N, F)
        return logits, self._posterior(logits, self._split(diff, named), fitted_at, stated, pooled, tied, recent)

    def tie_design(self, ties: Ties | None) -> np.ndarray:
        """(M, D) first-minus-second coordinates of the user's M ties (none: (0, D)). Raises ValueError on
        mismatched lengths and as `design` does; TypeError naming a text list given as one string."""
        if ties is None or not len(ties.prompt):
            return np.zeros((0, self.dim))
        first_texts, second_texts = texts_of("ties.first_texts", ties.first_texts), texts_of("ties.second_texts", ties.second_texts)
        if not (len(ties.prompt) == len(ties.first) == len(ties.second) == len(first_texts) == len(second_texts)):
            raise ValueError("a tie's prompt, first and second answers and both text lists must have one row per tie")
        return self.design(ties.prompt, ties.first, ties.second, response_features(first_texts), response_features(second_texts))

    def _posterior(self, logits: np.ndarray, design: np.ndarray, fitted_at: float, stated: Mapping[str, int] | None = None,
                   pooled: PooledPrior | None = None, tied: np.ndarray | None = None,
                   recent: Recent | Sequence[int] | None = None) -> UserState:
        p = self.prior
        stated = dict(stated or {})
        unknown = sorted(set(stated) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"stated preferences on unknown features {unknown}; known: {list(FEATURE_NAMES)}")
        for name, sign in stated.items():  # a sign (StatedPreferences.signs): another number scales the prior's mean
            if isinstance(sign, bool) or sign not in (1, -1):
                raise ValueError(f"stated preference on {name!r} must be +1 or -1 (more or less), got {sign!r}")
        tied = np.zeros((0, self.dim)) if tied is None else tied
        answered = len(design) + len(tied)
        prior = self.prior_for(stated, pooled)
        mean, cov = fit_posterior(design, *prior, p.newton_steps, p.tol, tied=tied)
        alone, own = {}, None
        if (stated or pooled is not None) and answered:  # the same comparisons under the model's prior alone
            own = fit_posterior(design, self.prior_mean(), self.prior_precision(), p.newton_steps, p.tol, tied=tied)
        if stated and answered:  # what the comparisons alone say on each stated feature
            alone = {name: [float(own[0][i]), float(np.sqrt(max(own[1][i, i], 0.0)))] for name in sorted(stated) for i in [self.names.index(name)]}
        unpooled_mean, unpooled_var = [], []
        if pooled is not None and own is not None and not stated:  # what a later pooled prior is estimated from
            unpooled_mean, unpooled_var = own[0].tolist(), np.diag(own[1]).tolist()
        collinear = self._collinear(design, mean, cov, prior, own if stated else None, tied)
        grouped = {f for group in collinear for f in group.features}
        p_more, moved_in = feature_signs(design, self.names, FEATURE_NAMES, mean, cov, *prior, grouped=grouped, tied=tied)
        # every feature's, not only the stated ones': on the others the summary reads no more confidence than the
        # comparisons alone give (the stated prior pins its feature, and a collinear one takes the contrary evidence)
        p_alone = {} if not alone else feature_signs(design, self.names, FEATURE_NAMES, *own, self.prior_mean(),
                                                     self.prior_precision(), grouped=grouped, tied=tied)[0]
        return UserState(
            surprise=self._surprise(design, prior, tied, recent), surprise_rule=SURPRISE_RULE, population=self.population, features=FEATURES_VERSION, names=list(self.names),
            logits=[float(x) for x in logits], mean=mean.tolist(), cov=cov.reshape(-1).tolist(), n=len(design), ties=len(tied),
            fitted_at=fitted_at, stated=stated, from_comparisons=alone,
            pooled_users=0 if pooled is None else pooled.users, unpooled_mean=unpooled_mean, unpooled_var=unpooled_var,
            collinear=collinear, p_more=p_more, moved_in=moved_in, p_more_from_comparisons=p_alone,
            tied_in=times_moved(tied, self.names, FEATURE_NAMES) if len(tied) else {},
        )

    def _surprise(self, design: np.ndarray, prior: tuple[np.ndarray, np.ndarray], tied: np.ndarray,
                  recent: Recent | Sequence[int] | None) -> float:
        """`recent_surprise` of the user's newest answers (`recent`: comparisons, rows of design (N, D), and ties, rows
        of tied (M, D), oldest first; a sequence: comparisons only; None: the last RECENT_ANSWERS rows of design) under
        the posterior fitted on the others, not on them: a held-out (prequential, Dawid 1984) check, against each older
        answer's own approximate leave-one-out loss and each newest pair's own uncertainty at once. The posterior fitted on every answer explains
        its newest ones in-sample, with its 76 coefficients, however much they contradict the older ones (on the tiny
        models a user who turned from shorter to longer answers scored -0.15 after 6 of 10 contrary answers in-sample).
        0 until the user has RECENT_ANSWERS // 2 older answers too (a rank among fewer says little)."""
        if recent is None:
            recent = Recent.comparisons(np.arange(len(design))[-RECENT_ANSWERS:])
        elif not isinstance(recent, Recent):
            recent = Recent.comparisons(recent)
        older, older_ties = np.ones(len(design), bool), np.ones(len(tied), bool)
        older[recent.index[~recent.tie]], older_ties[recent.index[recent.tie]] = False, False
        if not len(recent.index) or older.sum() + older_ties.sum() < RECENT_ANSWERS // 2:
            return 0.0  # too few older: the prior's check, not theirs
        before = fit_posterior(design[older], *prior, self.prior.newton_steps, self.prior.tol, tied=tied[older_ties])
        newest = np.stack([tied[i] if t else design[i] for i, t in zip(recent.index, recent.tie, strict=True)])  # (R, D)
        older_rows = np.concatenate([design[older], tied[older_ties]])
        older_tie = np.arange(len(older_rows)) >= older.sum()
        return recent_surprise(*before, older_rows, newest, older_tie, recent.tie)

    def _collinear(self, design: np.ndarray, mean: np.ndarray, cov: np.ndarray, prior: tuple[np.ndarray, np.ndarray],
                   own: tuple[np.ndarray, np.ndarray] | None, tied: np.ndarray | None = None) -> list[CollinearFeatures]:
        """The named features the design (N, D) and ties (M, D) moved together, with the posterior along each group
        (`pluralign.user.collinear`); with `own` (the posterior under the model's prior alone, fitted
        for stated preferences) also what the comparisons alone say along it."""
        groups = joint_beliefs(design, self.names, FEATURE_NAMES, mean, cov, *prior, tied=tied)
        if own is None or not groups:
            return groups
        alone = joint_beliefs(design, self.names, FEATURE_NAMES, *own, self.prior_mean(), self.prior_precision(), tied=tied)
        return [msgspec.structs.replace(g, p_more_from_comparisons=a.p_more) for g, a in zip(groups, alone, strict=True)]

    def fit(
        self, logits: np.ndarray, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray,
        chosen_texts: Sequence[str], rejected_texts: Sequence[str], fitted_at: float = 0.0,
    ) -> UserState:
        """The posterior of a user (whose logits (K,) are recorded with it) from their N comparisons
        (embeddings (N, d) each, and the answers' texts). Raises ValueError on mismatched lengths and
        naming `logits` when they are not K finite numbers; TypeError for a text list given as one string."""
        chosen_texts, rejected_texts = texts_of("chosen_texts", chosen_texts), texts_of("rejected_texts", rejected_texts)
        if not (len(prompt) == len(chosen) == len(rejected) == len(chosen_texts) == len(rejected_texts)):
            raise ValueError("prompt, chosen, rejected and both text lists must have one row per comparison")
        return self.fit_named(logits, prompt, chosen, rejected, response_features(chosen_texts),
                              response_features(rejected_texts), fitted_at)

    def fit_named(
        self, logits: np.ndarray, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray,
        chosen_named: np.ndarray, rejected_named: np.ndarray, fitted_at: float = 0.0,
    ) -> UserState:
        """`fit` with the answers' named features (N, F) each instead of their texts."""
        logits = logits_row("logits", logits, self.k, minus_inf=True).double().numpy()
        return self._posterior(logits, self.design(prompt, chosen, rejected, chosen_named, rejected_named), fitted_at)

    def design(self, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, chosen_named: np.ndarray,
               rejected_named: np.ndarray) -> np.ndarray:
        """(N, D) chosen-minus-rejected coordinates of N comparisons (embeddings (N, d) each, the
        answers' named features (N, F) each, `response_features`), from one pass of the population
        model's networks: the rows a user's Bradley-Terry likelihood and the active criteria read."""
        if not len(prompt):
            return np.zeros((0, self.dim))
        want = (len(prompt), len(FEATURE_NAMES))
        for name, value in (("chosen_named", chosen_named), ("rejected_named", rejected_named)):
            if np.shape(value) != want:
                raise ValueError(f"`{name}` has shape {np.shape(value)}, expected {want}: the named features of each answer")
        return self._split(self._diff(prompt, chosen, rejected)[3], np.asarray(chosen_named) - np.asarray(rejected_named))

    def fits(self, state: UserState | None, stated: Mapping[str, int] | None = None) -> bool:
        """Whether a stored state belongs to this model (same population checkpoint and features)
        and was fitted with the user's current stated preferences (a state fitted on comparisons
        with stated preferences also holds what the comparisons alone say on them): what the tenant's other users'
        states are read for (their pooled prior, next-comparison's population), whatever changed-mind rule computed
        their `surprise`, which neither reads. A user's own state is served only where `current` too."""
        stated = dict(stated or {})
        return state is not None and state.population == self.population and state.features == FEATURES_VERSION \
            and state.names == self.names and state.version == STATE_VERSION and state.stated == stated \
            and set(state.from_comparisons) == (set(stated) if state.n or state.ties else set())

    def current(self, state: UserState | None, stated: Mapping[str, int] | None = None) -> bool:
        """Whether the user's own stored state is served as it is: it `fits`, and its changed-mind z reads as the rule in
        force reads it. A state whose z an earlier rule computed (`UserState.surprise_rule`) is refitted where that rule
        could read otherwise than SURPRISE_RULE: it is flagged (`surprised`: each earlier rule's z is at least the one now
        in force, the smaller of the two) or holds ties (the calibrated-z rule's window left them out); kept, such a state's flag would stay until the
        user's next refit, and chat's `compare` would ask them again at every chat. `fits` does not say so: such states
        stay in the tenant's pooled prior and next-comparison's population, whose means and covariances no such rule
        changes."""
        return self.fits(state, stated) and state is not None \
            and (state.surprise_rule == SURPRISE_RULE or not (state.surprised or state.ties))
