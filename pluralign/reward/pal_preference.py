"""PAL as a `PreferenceModel`, so `pluralign eval --model pal-a|pal-b` measures it like the baselines.

Seen users score with their trained logits; new users are fitted from their support pairs with
`fit_users` (all new users at once, each row depending only on its own pairs) around the population
prior. Group recovery clusters the seen users by k-means on the points that set their preferences
(variant a: ideal points a_u in the latent space; variant b: weights w_u on the simplex, since
a_u(x) is linear in w_u), with the number of clusters chosen by silhouette score in 2..MAX_GROUPS.
The cap is not K: the K - 1 dimensions of the simplex hold more than K groups (users on opposite
sides of two hyperplanes in a plane make 4 groups with K = 3; 8 persona groups on 3 traits fit in
K = 4), and capping the clusters at K merged groups whenever K was smaller than their number. The
argmax of the weights is not used: softmax weights stay spread over prototypes, so two groups can
share an argmax while sitting far apart.
"""

from __future__ import annotations

import numpy as np
import torch

from pluralign.device import default_device
from pluralign.reward.features import PairBatch, same_users, seen_rows
from pluralign.reward.inputs import as_numbers, first_bad_row, seed_in_range, whole
from pluralign.reward.pal_fit import PRIOR_STRENGTH, fit_users
from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.reward.pal_train import PALTrainConfig, train_pal
from pluralign.reward.user_weights import UserWeights

MAX_GROUPS = 16  # most user clusters group recovery considers


def user_points(model: PALModel, logits: torch.Tensor) -> np.ndarray:
    """The points users are clustered on: ideal points (variant a) or simplex weights (variant b)."""
    with torch.no_grad():
        logits = logits.to(next(model.parameters()).device)
        points = model.ideal_points(logits) if model.config.variant == "a" else model.weights(logits)
    return points.cpu().numpy().astype(np.float64)


def cluster_points(points: np.ndarray, max_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means labels (N,) of `points` (N, d) finite numbers, the number of clusters (1..max_clusters) picked by
    silhouette score; `seed` seeds k-means. Raises ValueError naming `max_clusters` (not a whole number >= 1), `seed` (not
    one in [0, 2**32 - 1], sklearn's range) or `points` (not (N, d) numbers, or a row holding NaN or inf: named here, not as sklearn's
    "Input X contains NaN")."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    whole("cluster_points", 1, max_clusters=max_clusters)
    seed_in_range("cluster_points", seed=seed)  # also where no k-means runs (fewer than 3 points): a bad seed is no seed
    checked = as_numbers("points", points, "(N, d) numbers")
    if checked.dim() != 2:
        raise ValueError(f"`points` must be (N, d) numbers, got shape {tuple(checked.shape)}")
    if len(checked) and (row := first_bad_row(checked)) is not None:
        raise ValueError(f"`points` row {row} is not finite (NaN or inf)")
    points = np.asarray(points)
    n = len(points)
    spread = points.std(0).max() if n else 0.0
    if n < 3 or max_clusters < 2 or spread < 1e-6:
        return np.zeros(n, dtype=int)
    best_labels, best_score = np.zeros(n, dtype=int), -1.0
    for c in range(2, min(max_clusters, n - 1) + 1):
        labels = KMeans(n_clusters=c, n_init=10, random_state=seed).fit_predict(points)
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(points, labels)
        if score > best_score:
            best_labels, best_score = labels, score
    return best_labels


@torch.no_grad()
def heldout_log_likelihood(model: PALModel, user_weights: UserWeights, pairs: PairBatch) -> np.ndarray:
    """Per user of `pairs.users`, sum_i log sigmoid(m_i) over its pairs under its trained weights: (U,) nats.

    Users the table does not know are scored with the population prior; a user without pairs
    scores 0. On the seen users' validation pairs this is the criterion
    `pluralign.reward.model_selection` chooses K by."""
    logits, _ = user_weights.stack(pairs.users)
    device = next(model.parameters()).device
    pairs = pairs.to(device)
    margin = model.margin(logits.to(device)[pairs.user], model.pair_terms(pairs.prompt, pairs.chosen, pairs.rejected))
    per_pair = torch.nn.functional.logsigmoid(margin).double()  # (N,)
    per_user = torch.zeros(len(pairs.users), dtype=torch.float64, device=device)
    return per_user.index_add_(0, pairs.user, per_pair).cpu().numpy()


class PALPreference:
    """`PreferenceModel` adapter over `train_pal` / `fit_users`."""

    def __init__(
        self,
        config: PALConfig = PALConfig(),
        train_config: PALTrainConfig = PALTrainConfig(),
        prior_strength: float = PRIOR_STRENGTH,
    ):
        self.name = f"pal-{config.variant}"
        self.config = config
        self.train_config = train_config
        self.prior_strength = prior_strength
        self.model: PALModel | None = None
        self.user_weights: UserWeights | None = None

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        """Train PAL (`train_pal`) on the seen users' pairs, embeddings (N, D) each, D taken from `train`; `val` indexes
        the same users. Returns `PALResult.metrics` (losses in nats per pair, accuracy in [0, 1]); raises as `train_pal`."""
        config = PALConfig(self.config.variant, self.config.k, train.prompt.shape[1], self.config.latent_dim, self.config.hidden)
        result = train_pal(train, val, config, self.train_config)
        self.model, self.user_weights = result.model, result.user_weights
        return result.metrics

    def _trained(self) -> tuple[PALModel, UserWeights]:
        if self.model is None or self.user_weights is None:
            raise ValueError("the PAL model is not trained yet: call fit first")
        return self.model, self.user_weights

    @torch.no_grad()
    def _prob(self, logits: torch.Tensor, pairs: PairBatch) -> np.ndarray:
        model, _ = self._trained()
        pairs = pairs.to(default_device())
        margin = model.margin(logits.to(default_device())[pairs.user], model.pair_terms(pairs.prompt, pairs.chosen, pairs.rejected))
        return torch.sigmoid(margin).cpu().numpy()

    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        """P(chosen) for pairs of the trained users, matched by name. Raises ValueError naming a user who
        owns pairs and was not trained on (as `PerUserBT` and `EMMixture` do; `prob_new_users` fits new ones)."""
        model, user_weights = self._trained()
        pairs.check("pairs", model.config.input_dim)
        seen_rows(pairs, user_weights.users(), "the PAL model")
        logits, _ = user_weights.stack(pairs.users)  # (U, K); a listed user without pairs: the prior, never read
        return self._prob(logits, pairs)

    def heldout_log_likelihood(self, pairs: PairBatch) -> np.ndarray:
        """Per user of `pairs.users`: the log-likelihood of its pairs under its trained weights, (U,) nats."""
        pairs.check("pairs", self._trained()[0].config.input_dim)
        return heldout_log_likelihood(*self._trained(), pairs)

    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        """P(chosen) (N_query,) for new users: each user's K logits fitted on their `support` pairs around the
        population prior (`fit_users`, `prior_strength`), then their `query` pairs scored. `query.users` must be
        `support.users`. Raises ValueError naming `support` or `query` as `PairBatch.check` does, or when the model is
        not trained."""
        model, user_weights = self._trained()
        support.check("support", model.config.input_dim)
        query.check("query", model.config.input_dim)
        same_users(support, query)
        support = support.to(default_device())
        logits = fit_users(
            model, support.prompt, support.chosen, support.rejected, support.user, len(support.users),
            prior_logits=user_weights.prior(), prior_strength=self.prior_strength,
        )
        return self._prob(logits, query)

    def user_clusters(self) -> dict[str, int] | None:
        """Each training user's k-means cluster of their points (`user_points`, the number of clusters picked by
        silhouette, at most MAX_GROUPS). Raises ValueError when the model is not trained."""
        model, user_weights = self._trained()
        users = user_weights.users()
        logits, _ = user_weights.stack(users)
        labels = cluster_points(user_points(model, logits), MAX_GROUPS, seed=self.train_config.seed)
        return {u: int(c) for u, c in zip(users, labels, strict=True)}
