"""EM over a mixture of K Bradley-Terry reward heads on frozen embeddings (MaxMin-RLHF's first half).

Each head k is a linear reward r_k(x, y) = w_k . f(x, y) with f(x, y) = [y; x * y] (the response
embedding and its elementwise product with the prompt's, so a head can prefer different things for
different prompts). A user belongs to one latent group; all of that user's comparisons come from
its group's head:

    p(user u's pairs) = sum_k pi_k prod_{i in u} sigmoid(w_k . (f(x_i, chosen_i) - f(x_i, rejected_i)))

E-step: each user's posterior over heads from ALL its comparisons (soft), or the single best head
(hard, "classification EM"). M-step: the mixing weights in closed form, and each head refit as a
ridge logistic regression weighted by its users' posteriors, warm-started at the current head and
kept only if it lowers that head's weighted objective. Both halves never lower the objective

    J = sum_u log sum_k pi_k p(u | w_k) - (l2 / 2) sum_k |w_k|^2          (soft)
    J = sum_u [log pi_{z_u} + log p(u | w_{z_u})] - (l2 / 2) sum_k |w_k|^2  (hard)

(generalized EM), so the recorded curve is non-decreasing. The objective is not concave, so
several restarts from k-means on per-user logistic fits are run and the best J is kept.
Heads are computed in float64: the monotonicity check compares numbers, not hopes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import torch
import torch.nn.functional as F

from pluralign.checks import SEED_MAX, encoder_named
from pluralign.data.record import Persisted
from pluralign.data.text import is_blank
from pluralign.device import default_device, usable_device
from pluralign.fairness.metrics import credit
from pluralign.files import (
    DECODE_ERRORS,
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
from pluralign.reward.bt import fit_user_logistic
from pluralign.reward.features import PairBatch, same_users, seen_rows
from pluralign.reward.inputs import as_numbers, at_least, comparison_rows, first_bad_row, logits_row, owners, whole
from pluralign.reward.model_selection import TooManyComponents

SCHEMA_VERSION = 1
FEATURES = "response;prompt*response"  # how f(x, y) is built from the encoder's embeddings


@dataclass(frozen=True)
class EMConfig:
    """EM over K Bradley-Terry heads, the first half of MaxMin-RLHF (Chakraborty et al., "MaxMin-RLHF:
    Alignment with Diverse Human Preferences", ICML 2024); each field is explained beside it."""

    k: int = 2  # number of reward heads (latent groups)
    assignment: str = "hard"  # "hard": each user to its best head; "soft": posterior weights
    restarts: int = 4  # independent initializations; the best final objective is kept
    max_iter: int = 50  # EM iterations per restart
    tol: float = 1e-7  # stop when J rises by less than tol * |J|
    l2: float = 1.0  # ridge strength on each head (the sum over pairs is not averaged)
    init: str = "kmeans"  # "kmeans" on per-user logistic fits, or "random" user assignments
    init_l2: float = 1.0  # ridge strength of the per-user fits that seed k-means
    lbfgs_iter: int = 50  # L-BFGS iterations per head per M-step
    seed: int = 0

    def __post_init__(self):
        if self.assignment not in ("hard", "soft"):
            raise ValueError(f"assignment must be `hard` or `soft`, got {self.assignment!r}")
        if self.init not in ("kmeans", "random"):
            raise ValueError(f"init must be `kmeans` or `random`, got {self.init!r}")
        whole("EMConfig", 1, k=self.k, restarts=self.restarts, lbfgs_iter=self.lbfgs_iter)
        whole("EMConfig", 0, max_iter=self.max_iter, seed=self.seed)
        # a Python int: a numpy uint32 seed's sum wrapped around (2**32 - 1 + 1 is 0) and was taken
        if self.init == "kmeans" and int(self.seed) + self.restarts - 1 > SEED_MAX:  # (numpy's default_rng takes any seed)
            raise ValueError(f"EMConfig: `seed` + `restarts` - 1 must be at most 2**32 - 1 (restart r seeds k-means with seed + r, "
                             f"in sklearn's range), got {self.seed} + {self.restarts} - 1")
        at_least("EMConfig", 0, tol=self.tol, l2=self.l2, init_l2=self.init_l2)


@dataclass
class EMFit:
    """The fitted mixture and how it got there."""

    head_weights: torch.Tensor  # (K, F) float64
    log_mixing: torch.Tensor  # (K,) log pi
    responsibilities: torch.Tensor  # (U, K) posterior (one-hot for hard EM)
    log_likelihood: list[float]  # J after the initial M-step and after every iteration (best restart)
    restarts: list[list[float]] = field(default_factory=list)  # J curve of every restart
    best_restart: int = 0


def pair_features(pairs: PairBatch) -> torch.Tensor:
    """f(x, chosen) - f(x, rejected) with f(x, y) = [y; x * y]: (N, 2d)."""
    diff = pairs.chosen - pairs.rejected  # (N, d)
    return torch.cat([diff, pairs.prompt * diff], dim=-1)


def user_log_likelihood(W: torch.Tensor, diff: torch.Tensor, user: torch.Tensor, n_users: int) -> torch.Tensor:
    """log p(user's pairs | head k) for every user and head: (U, K)."""
    pair_ll = F.logsigmoid(diff @ W.T)  # (N, K)
    out = torch.zeros(n_users, W.shape[0], dtype=W.dtype, device=W.device)
    return out.index_add_(0, user, pair_ll)


def _penalty(W: torch.Tensor, l2: float) -> torch.Tensor:
    return 0.5 * l2 * (W**2).sum()


def objective(W, log_pi, diff, user, n_users, l2, hard_assignment: torch.Tensor | None) -> float:
    """J (see the module docstring); `hard_assignment` (U,) selects the hard variant."""
    ll = user_log_likelihood(W, diff, user, n_users) + log_pi  # (U, K)
    if hard_assignment is None:
        data = torch.logsumexp(ll, dim=1).sum()
    else:
        data = ll.gather(1, hard_assignment[:, None]).sum()
    return float(data - _penalty(W, l2))


def _head_objective(w: torch.Tensor, diff: torch.Tensor, weight: torch.Tensor, l2: float) -> torch.Tensor:
    return -(weight * F.logsigmoid(diff @ w)).sum() + 0.5 * l2 * (w**2).sum()


def refit_head(w: torch.Tensor, diff: torch.Tensor, weight: torch.Tensor, l2: float, iters: int) -> torch.Tensor:
    """Weighted ridge logistic regression from `w`; returns the new head only if it is no worse."""
    before = _head_objective(w, diff, weight, l2)
    x = w.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _head_objective(x, diff, weight, l2)
        loss.backward()
        return loss

    optimizer.step(closure)
    x = x.detach()
    with torch.no_grad():
        after = _head_objective(x, diff, weight, l2)
    return x if bool(torch.isfinite(after)) and after <= before else w


def _m_step(W, resp, diff, user, l2, iters):
    weight = resp[user]  # (N, K) each pair weighted by its user's posterior
    W = torch.stack([refit_head(W[k], diff, weight[:, k], l2, iters) for k in range(W.shape[0])])
    mass = resp.sum(0)  # (K,)
    log_pi = torch.log(mass / mass.sum())  # exact maximizer; an empty head gets -inf and stays empty
    return W, log_pi


def _e_step(W, log_pi, diff, user, n_users, hard: bool):
    ll = user_log_likelihood(W, diff, user, n_users) + log_pi  # (U, K)
    if hard:
        z = ll.argmax(1)
        return F.one_hot(z, W.shape[0]).to(W.dtype), z
    return torch.softmax(ll, dim=1), None


def _initial_assignments(diff, user, n_users, config: EMConfig) -> list[np.ndarray]:
    """k-means on per-user logistic weights (or random groups), one seed per restart."""
    from sklearn.cluster import KMeans

    if config.init == "random":
        return [np.random.default_rng(int(config.seed) + r).integers(0, config.k, n_users) for r in range(config.restarts)]

    per_user = fit_user_logistic(diff.float(), user, n_users, config.init_l2)  # (U, F)
    per_user = F.normalize(per_user, dim=1).cpu().numpy()
    k = min(config.k, n_users)
    return [
        KMeans(n_clusters=k, n_init=1, random_state=int(config.seed) + r).fit_predict(per_user)
        for r in range(config.restarts)
    ]


def fit_em(diff: torch.Tensor, user: torch.Tensor, n_users: int, config: EMConfig = EMConfig(), progress=None) -> EMFit:
    """Run EM with restarts on pair features `diff` (N, F) of users `user` (N,); keep the best J.
    Raises ValueError when there are no pairs, `diff` holds NaN or inf, or `user` is not N indices in
    0 .. n_users - 1 (`owners`: an index past them was an IndexError from deep inside the E-step), and
    TooManyComponents (a ValueError) when K is more than the n_users users."""
    if len(diff) == 0:
        raise ValueError("`diff` holds no pairs: nothing to fit")
    row = first_bad_row(diff)
    if row is not None:
        raise ValueError(f"`diff` row {row} is not finite (NaN or inf)")
    if config.k > n_users:
        raise TooManyComponents([config.k], n_users)
    diff, user = diff.double(), owners(user, len(diff), n_users).to(diff.device)
    hard = config.assignment == "hard"
    best: EMFit | None = None
    curves = []
    for r, z0 in enumerate(_initial_assignments(diff, user, n_users, config)):
        resp = F.one_hot(torch.as_tensor(z0, device=diff.device).long(), config.k).to(diff.dtype)  # (U, K)
        W = torch.zeros(config.k, diff.shape[1], dtype=diff.dtype, device=diff.device)
        W, log_pi = _m_step(W, resp, diff, user, config.l2, config.lbfgs_iter)
        z = resp.argmax(1) if hard else None
        curve = [objective(W, log_pi, diff, user, n_users, config.l2, z)]
        for _ in range(config.max_iter):
            resp, z = _e_step(W, log_pi, diff, user, n_users, hard)
            W, log_pi = _m_step(W, resp, diff, user, config.l2, config.lbfgs_iter)
            curve.append(objective(W, log_pi, diff, user, n_users, config.l2, z))
            if progress:
                progress(r, curve[-1])
            if curve[-1] - curve[-2] < config.tol * abs(curve[-2]):
                break
        if not hard:  # posteriors at the final parameters
            resp, _ = _e_step(W, log_pi, diff, user, n_users, hard)
        curves.append(curve)
        if best is None or curve[-1] > best.log_likelihood[-1]:
            best = EMFit(W, log_pi, resp, curve, best_restart=r)
    assert best is not None
    best.restarts = curves
    return best


# ---------------------------------------------------------------------------------------------
# The artifact: heads in safetensors, versions in msgspec JSON, user memberships as rows.


USERS_FILE = "users.jsonl"  # one membership row per training user
EM_FILES = ("meta.json", "heads.safetensors", USERS_FILE, "metrics.json")  # meta.json first: see EMMixture.save


class EMMeta(Persisted):
    schema_version: int
    kind: str  # always "em-bt-mixture"
    encoder_id: str
    k: int
    dim: int  # the encoder's embedding size d (heads have 2d weights)
    features: str
    assignment: str
    # sha256 of heads.safetensors and users.jsonl as written (a DELETE's rewrite records the new users.jsonl's); `load`
    # refuses files that differ (`pluralign.files.FilesDiffer`, as PALMeta.files). {}: written by an earlier release, before digests were recorded
    files: dict[str, str] = {}


class UserMembership(Persisted):
    user_id: str
    cluster: int
    posterior: list[float]


class EMMixture:
    """The `em` preference model: EM over K BT heads; new users get a posterior from their support."""

    name = "em"

    def __init__(self, config: EMConfig = EMConfig()):
        self.config = config
        self.fit_result: EMFit | None = None
        self.users: list[str] = []

    @classmethod
    def from_heads(cls, head_weights: torch.Tensor, log_mixing: torch.Tensor, config: EMConfig) -> EMMixture:
        """A mixture from K heads' weights (K, F) over the pair features (`pair_features`) and their log
        mixing weights (K,) (log pi_k, the pi_k summing to 1; -inf: a head no training user chose); tensors
        or numpy arrays. Raises ValueError naming either when its shape does not fit config.k or it is not
        finite, and naming `log_mixing` when its pi_k do not sum to 1 (within MIXING_SUM_TOLERANCE): weights
        given unlogged, or unnormalized, would mix a new user's heads into "probabilities" above 1."""
        k = config.k
        head_weights = as_numbers("head_weights", head_weights, f"({k}, F) head weights")
        if head_weights.dim() != 2 or head_weights.shape[0] != k:
            raise ValueError(f"`head_weights` has shape {tuple(head_weights.shape)}, expected (K, F) = ({k}, F)")
        row = first_bad_row(head_weights)
        if row is not None:
            raise ValueError(f"`head_weights` row {row} is not finite (NaN or inf)")
        checked = logits_row("log_mixing", log_mixing, k, minus_inf=True)  # the check; the heads' device is kept
        total = float(checked.double().exp().sum())
        if abs(total - 1.0) > MIXING_SUM_TOLERANCE:
            raise ValueError(f"`log_mixing` must be log mixing weights, log pi_k with the pi_k summing to 1; "
                             f"exp(log_mixing) sums to {total:.6g}: {checked.tolist()}")
        log_mixing = as_numbers("log_mixing", log_mixing, f"{k} log mixing weights").to(head_weights.device)
        model = cls(config)
        n_heads = head_weights.shape[0]
        model.fit_result = EMFit(head_weights.double(), log_mixing.double(), torch.zeros(0, n_heads), [])
        return model

    def fit(self, train: PairBatch, val: PairBatch, progress=None) -> dict[str, float]:
        """Fit the heads on `train`; `val` (the same users, may be empty) gives val_acc. Both are PairBatch of
        (N, D) embeddings and `user` (N,). Returns `log_likelihood` (the best restart's final objective J: penalized log-likelihood, nats), `iterations`,
        `best_restart` and, with `val`, `val_acc` (in [0, 1]). Raises ValueError naming the field when the pairs cannot be trained on (`PairBatch.check`) and
        TooManyComponents (a ValueError) when K is more than the training users."""
        train.check("train", min_pairs=1)
        if len(val):
            val.check("val", train.prompt.shape[-1])
        if self.config.k > len(train.users):
            raise TooManyComponents([self.config.k], len(train.users))
        device = default_device()
        train = train.to(device)
        self.users = list(train.users)
        self.fit_result = fit_em(pair_features(train), train.user, len(train.users), self.config, progress)
        metrics = {
            "log_likelihood": self.fit_result.log_likelihood[-1],
            "iterations": len(self.fit_result.log_likelihood) - 1,
            "best_restart": self.fit_result.best_restart,
        }
        if len(val):
            metrics["val_acc"] = float(credit(self.prob_seen(val)).mean())  # a tie half, as `pluralign eval` credits it
        return metrics

    def _heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fit_result is None:
            raise RuntimeError("the EM mixture has no heads: fit it or load an artifact")
        return self.fit_result.head_weights, self.fit_result.log_mixing

    def mixing_weights(self) -> np.ndarray:
        """The mixture's weights pi_k, each head's share of the users: (K,), summing to 1.
        Raises RuntimeError before a fit or load."""
        return self._heads()[1].exp().cpu().numpy()

    def _predict(self, posterior: torch.Tensor, pairs: PairBatch, user: torch.Tensor | None = None) -> np.ndarray:
        """P(chosen) (N,): the heads' probabilities mixed by row `user` (default `pairs.user`) of `posterior`."""
        W, _ = self._heads()
        p = torch.sigmoid(pair_features(pairs).double() @ W.T)  # (N, K)
        return (posterior[pairs.user if user is None else user] * p).sum(1).cpu().numpy()

    def _checked(self, pairs: PairBatch, name: str) -> PairBatch:
        """`pairs` on the heads' device; ValueError naming `name`.field when they are not of the
        heads' width or not finite (`PairBatch.check`)."""
        W, _ = self._heads()
        pairs.check(name, int(W.shape[1]) // 2)
        return pairs.to(W.device)

    @torch.no_grad()
    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        """P(chosen) for pairs of the training users, matched by name (`seen_rows`: `pairs.users` in
        any order, or only some of them). Raises ValueError naming a user not fitted on, and for
        pairs of another width or not finite."""
        pairs = self._checked(pairs, "pairs")
        return self._predict(self.fit_result.responsibilities.to(pairs.prompt.device), pairs, seen_rows(pairs, self.users, "the mixture"))

    @torch.no_grad()
    def posterior(self, support: PairBatch) -> torch.Tensor:
        """Each support user's posterior over heads given its pairs: (U, K). Hard EM keeps the argmax.
        Raises ValueError naming `support`.field when the pairs are not of the heads' width or not finite."""
        W, log_pi = self._heads()
        support = self._checked(support, "support")
        ll = user_log_likelihood(W, pair_features(support).double(), support.user, len(support.users)) + log_pi
        post = torch.softmax(ll, dim=1)
        if self.config.assignment == "hard":
            post = F.one_hot(post.argmax(1), W.shape[0]).to(post.dtype)
        return post

    @torch.no_grad()
    def rewards(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """Every head's reward r_k(x, y) = w_k . [y; x * y] for embeddings (n, d): (n, K). Raises
        ValueError naming `prompt` or `response` when they are not (n, d) alike or not finite."""
        W, _ = self._heads()
        prompt, response = comparison_rows(int(W.shape[1]) // 2, W.device, prompt=prompt, response=response)
        prompt, response = prompt.double(), response.double()
        return torch.cat([response, prompt * response], dim=-1) @ W.T

    @torch.no_grad()
    def heldout_log_likelihood(self, pairs: PairBatch) -> np.ndarray:
        """Per seen user, log p(its held-out pairs | its posterior from training): (U,) nats.

        log sum_k r_uk prod_i sigmoid(w_k . d_i) over the user's pairs i, with r_u the posterior
        over heads fitted on the user's training pairs (one-hot under hard EM); `pairs` indexes
        the training users. A user without held-out pairs contributes 0. This is the criterion
        `pluralign.reward.model_selection` chooses K by."""
        W, _ = self._heads()
        resp = self.fit_result.responsibilities
        if pairs.users != self.users or len(resp) != len(self.users):
            raise ValueError("held-out pairs must index the users the mixture was fitted on")
        pairs = self._checked(pairs, "pairs")
        ll = user_log_likelihood(W, pair_features(pairs).double(), pairs.user, len(self.users))  # (U, K)
        return torch.logsumexp(torch.log(resp.to(W.device)) + ll, dim=1).cpu().numpy()

    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        """P(chosen) (N_query,) for new users: each user's posterior over heads from their support
        pairs (`posterior`; no support pairs: the mixing weights, under hard EM the largest one's head alone), then the heads' probabilities
        mixed by it. `query.users` must be `support.users` (the same index). Raises ValueError
        naming `support`.field or `query`.field as `PairBatch.check` does."""
        same_users(support, query)
        posterior = self.posterior(support)
        return self._predict(posterior, self._checked(query, "query"))

    def user_clusters(self) -> dict[str, int] | None:
        """Each training user's most probable head (0 .. K-1); None before a fit or for a model of no users."""
        if self.fit_result is None or not len(self.fit_result.responsibilities):
            return None
        return dict(zip(self.users, self.fit_result.responsibilities.argmax(1).tolist(), strict=True))

    # -- artifact ---------------------------------------------------------------------------

    def save(self, out: str | Path, encoder_id: str) -> Path:
        """Write `heads.safetensors`, `users.jsonl` (one membership row per user) and `meta.json`,
        each whole and meta.json last (a write stopped part way leaves no artifact `load` takes).
        `out` may hold only an earlier EM artifact's files (EM_FILES); anything else is a ValueError
        and nothing is written (`pluralign.files.check_artifact_folder`), as is an `encoder_id` that names no
        encoder (`pluralign.checks.encoder_named`); another save into `out`
        meanwhile is a `pluralign.files.ArtifactBusy` (ValueError) naming it."""
        from safetensors.torch import save

        encoder_named(encoder_id)
        W, log_pi = self._heads()
        meta = EMMeta(
            schema_version=SCHEMA_VERSION, kind="em-bt-mixture", encoder_id=encoder_id, k=int(W.shape[0]),
            dim=int(W.shape[1]) // 2, features=FEATURES, assignment=self.config.assignment,
        )
        resp = self.fit_result.responsibilities.cpu()
        rows = [
            UserMembership(user_id=u, cluster=int(resp[i].argmax()), posterior=[round(float(p), 6) for p in resp[i]])
            for i, u in enumerate(self.users)
        ] if len(resp) else []
        with writing_artifact(out, EM_FILES, "em-bt-mixture artifact") as out:
            write_atomic(out / "heads.safetensors", save({"head_weights": W.float().cpu().contiguous(), "log_mixing": log_pi.float().cpu().contiguous()}))
            write_atomic(out / USERS_FILE, b"".join(msgspec.json.encode(r) + b"\n" for r in rows))
            meta = msgspec.structs.replace(meta, files=file_digests(out, ("heads.safetensors", USERS_FILE)))
            write_description(out, meta)
        return out

    @classmethod
    def load(cls, folder: str | Path, encoder_id: str, dim: int | None = None, device=None) -> EMMixture:
        """Load an artifact: K heads of 2d weights, the log mixing weights (K,) and each training
        user's posterior (K,), on `device` ("cpu", "cuda:0", a torch.device; default the default
        one), as `load_pal` does: heads fitted on a GPU load on a CPU-only machine with device="cpu".
        Raises FileNotFoundError for a missing file, ValueError naming `device` when this machine
        lacks it (`pluralign.device.usable_device`), and ValueError naming the file for an artifact
        of another kind (a PAL checkpoint), schema, encoder, dimension or features, for a file that
        is not JSON or truncated, for tensors whose shapes disagree with meta.json or that are not finite, for log
        mixing weights whose pi_k do not sum to 1 (`from_heads`), and naming the line of
        users.jsonl whose user is blank or given twice or whose posterior is not K weights in [0, 1] summing to 1
        (`_check_membership`, `_check_posteriors`); `pluralign.files.FilesDiffer` (a ValueError) naming the file
        that is not the one meta.json records (a copy under way, two copies mixed)."""
        device = usable_device(device)
        folder = Path(folder)
        meta = _read_meta(folder, encoder_id, dim)
        tensors = read_safetensors(folder / "heads.safetensors", device=str(device))
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        if shapes.get("head_weights") != (meta.k, 2 * meta.dim) or shapes.get("log_mixing") != (meta.k,):
            raise ValueError(f"{folder}: heads.safetensors holds {shapes}, meta.json says K={meta.k}, d={meta.dim} "
                             f"(head_weights ({meta.k}, {2 * meta.dim}), log_mixing ({meta.k},))")
        try:
            model = cls.from_heads(tensors["head_weights"], tensors["log_mixing"], EMConfig(k=meta.k, assignment=meta.assignment))
        except ValueError as exc:
            raise ValueError(f"{folder / 'heads.safetensors'}: {exc}") from None
        users_file, rows, numbers, seen = folder / USERS_FILE, [], [], set()  # one Path: not one per user
        for number, _, row in memberships(users_file):
            _check_membership(users_file, number, row, meta.k, seen)
            rows.append(row)
            numbers.append(number)
        if rows:
            posterior = np.array([r.posterior for r in rows], dtype=np.float64)  # (U, K)
            _check_posteriors(users_file, numbers, posterior)
            model.users = [r.user_id for r in rows]
            model.fit_result.responsibilities = torch.from_numpy(posterior).to(model.fit_result.head_weights.device)
        check_digests(folder, meta.files)  # last: a damaged file is named for what is wrong with it first
        return model


MIXING_SUM_TOLERANCE = 1e-4  # float32 on disk: a saved mixture's pi_k sum to 1 within ~1e-7
POSTERIOR_ROUNDING = 1e-6  # save rounds each weight to 6 decimals (within 5e-7): K of them sum to 1 within K x this


def _check_membership(path: Path, number: int, row: UserMembership, k: int, seen: set[str]) -> None:
    """A ValueError naming `path` and line `number` when `row` is no training user's membership: a blank user_id, a
    user already `seen` (added to it; a second row of a user would replace the first), or a posterior of
    another length than K (its weights: `_check_posteriors`, all rows at once)."""
    if is_blank(row.user_id):
        raise ValueError(f"{path}, line {number}: user_id {row.user_id!r} has no visible character")
    if row.user_id in seen:
        raise ValueError(f"{path}, line {number}: user {row.user_id!r} again (each training user has one membership row)")
    seen.add(row.user_id)
    if len(row.posterior) != k:
        raise ValueError(f"{path}, line {number}: a posterior of {len(row.posterior)} values, K={k}")


def _check_posteriors(path: Path, numbers: list[int], posterior: np.ndarray) -> None:
    """A ValueError naming `path` and the line (`numbers`, one per row) of the first row of `posterior` (U, K) that is
    not K weights in [0, 1] summing to 1. `prob_seen` mixes the heads by these weights: [-5, 6] would give "probabilities"
    outside [0, 1] and [0, 0] would give 0 for every comparison. One array, not a check per row: a
    100,000-user file is read in milliseconds more, not seconds."""
    k = posterior.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 + 1e308: inf, refused below
        fits = (np.isfinite(posterior) & (posterior >= 0) & (posterior <= 1)).all(axis=1)
        fits &= np.abs(posterior.sum(axis=1) - 1.0) <= k * POSTERIOR_ROUNDING
    if not fits.all():
        i = int(np.flatnonzero(~fits)[0])
        raise ValueError(f"{path}, line {numbers[i]}: posterior {posterior[i].tolist()} is not a distribution over the {k} "
                         "heads (weights in [0, 1] summing to 1)")


def _read_meta(folder: Path, encoder_id: str, dim: int | None) -> EMMeta:
    """An EM artifact's meta.json, checked against what `EMMixture.load` is asked for. Raises
    FileNotFoundError when there is none, ValueError naming the file or folder for another kind of
    artifact, schema, encoder, dimension or features, or a file that is not a description."""
    meta = read_description(folder, "em-bt-mixture", SCHEMA_VERSION, EMMeta, "an EM mixture artifact (em-bt-mixture)")
    if meta.encoder_id != encoder_id:
        raise ValueError(f"{folder}: heads were trained on encoder {meta.encoder_id!r}, not {encoder_id!r}")
    if dim is not None and meta.dim != dim:
        raise ValueError(f"{folder}: heads expect {meta.dim}-d embeddings, the encoder gives {dim}")
    if meta.features != FEATURES:
        raise ValueError(f"{folder}: features {meta.features!r}, this code builds {FEATURES!r}")
    return meta


def memberships(path: Path) -> list[tuple[int, bytes, UserMembership]]:
    """An EM artifact's users.jsonl as (line number, line, membership row), blank lines skipped.
    Raises OSError when it cannot be read and ValueError naming the line that is not a membership."""
    out = []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((number, line, msgspec.json.decode(line, type=UserMembership)))
        except DECODE_ERRORS as exc:
            raise ValueError(f"{path}, line {number}: not a user membership: {exc}") from None
    return out


def forget_users(folder: str | Path, forget: Callable[[str], bool]) -> int:
    """Remove from an EM artifact's users.jsonl the membership rows of the training users
    `forget(user_id)` picks, for a DELETE. The heads and mixing weights were fitted on them too and
    stay until a retrain. The file is rewritten whole (temp file and rename), then meta.json with its digest
    (`EMMeta.files`) where it recorded the file's before, and meta.json as it is where it records another file (a
    copy under way: written after, the folder does not look like what `record_rewritten_users` takes up, which would have a start or a watching replica
    serve the new heads with the old file's memberships). Returns the rows removed (0: nothing written). Raises
    FileNotFoundError without users.jsonl and ValueError naming the line that is not a membership.
    When `forget` says which names it may be written as (`may_name`: a DELETE's
    `pluralign.store.deletions.Forget`) and the file's bytes hold none of them, no line is decoded (as
    `pal_checkpoint.forget_weight_rows`): a DELETE of a user outside a 100,000-user file reads bytes only."""
    path = Path(folder) / USERS_FILE
    if not may_hold(forget, path):
        return 0
    meta = _described(Path(folder))
    matched = meta is not None and still_recorded(folder, meta.files, USERS_FILE)
    # a file meta.json records another of (a copy under way, a mix), not one an unrecorded DELETE rewrote after it
    unlike = meta is not None and USERS_FILE in meta.files and not matched and \
        not rewritten_after_description(folder, meta.files, USERS_FILE)
    kept, removed = [], 0
    for _, line, row in memberships(path):
        if forget(row.user_id):
            removed += 1
        else:
            kept.append(line + b"\n")
    if removed:
        write_atomic(path, b"".join(kept))
        if matched:
            rewrite_description(folder, {"files": with_new_digest(folder, meta.files, USERS_FILE)})
        elif unlike:  # written again after it, as is: not taken for a DELETE's rewrite of the file it describes
            rewrite_description(folder, {})
    return removed


def record_rewritten_users(folder: str | Path) -> bool:
    """Record in meta.json the digest of a users.jsonl a DELETE rewrote without doing so (`pluralign.files.
    rewritten_after_description`: a release before replicas50's `forget_users` rewrote users.jsonl only, and one of
    this release killed between its two writes leaves the same), when heads.safetensors is the one meta.json records;
    else change nothing. Returns whether it was recorded. For the caller holding the folder's lock
    (`pluralign.files.folder_lock`), no copy under way. Raises what `read_description` does."""
    folder = Path(folder)
    meta = read_description(folder, "em-bt-mixture", SCHEMA_VERSION, EMMeta, "an EM mixture artifact (em-bt-mixture)")
    if not rewritten_after_description(folder, meta.files, USERS_FILE):
        return False
    rewrite_description(folder, {"files": with_new_digest(folder, meta.files, USERS_FILE)})
    return True


def _described(folder: Path) -> EMMeta | None:
    """The EM mixture's description at `folder`; None where there is none (a PAL checkpoint's meta.json beside the
    users.jsonl an earlier mixture left: `training_users._forget_left_behind`)."""
    try:
        return read_description(folder, "em-bt-mixture", SCHEMA_VERSION, EMMeta, "an EM mixture artifact (em-bt-mixture)")
    except (OSError, ValueError):
        return None
