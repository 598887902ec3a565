"""Bradley-Terry baselines on frozen embeddings.

- `SingleBT`: one reward for everyone, an MLP on [prompt; response] embeddings.
- `PerUserBT`: an independent linear reward per user, no sharing (logistic regression on the
  difference of response embeddings, L2-regularized): strong with many pairs, helpless with few.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pluralign.device import default_device
from pluralign.fairness.metrics import credit
from pluralign.losses import bradley_terry_loss, margin_credit
from pluralign.reward.early_stopping import EarlyStopping, StoppingRule
from pluralign.reward.features import PairBatch, same_users, seen_rows
from pluralign.reward.inputs import above_zero, at_least, comparison_rows, whole


@dataclass(frozen=True)
class BTConfig:
    """Training of the Bradley-Terry baselines; each field is explained beside it. Two regimes:
    when the training pairs hold at most `full_batch_items` distinct answers (any small data set),
    `SingleBT` trains full-batch and `full_batch_steps`, `full_batch_patience` and
    `full_batch_min_steps` bound it, not `epochs`, `batch_size`, `patience` and `min_epochs`."""

    hidden: int = 256  # MLP width of the single reward model
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 30  # passes over the training pairs; early stopping on the validation BT loss
    batch_size: int = 256
    patience: int = 3  # epochs without a lower validation loss before stopping (at least; see below)
    min_epochs: int = 5  # never stop before this many epochs
    full_batch_items: int = 4096  # at most this many distinct answers: train full-batch on them
    full_batch_steps: int = 800  # full-batch steps at most (UKP: the validation optimum is near 400)
    full_batch_patience: int = 40  # full-batch steps without a lower validation loss (at least)
    full_batch_min_steps: int = 100  # never stop before this many full-batch steps
    # patience also grows with the run: at least this fraction of the steps up to the last
    # improvement (pluralign.reward.early_stopping), so a plateau half as long as the run so far
    # does not end a run that is still improving; the cost is at most 1.5x the steps to the optimum
    patience_ratio: float = 0.5
    l2: float = 1e-2  # per-user BT: ridge strength
    seed: int = 0

    def __post_init__(self) -> None:
        whole("BTConfig", 1, hidden=self.hidden, epochs=self.epochs, batch_size=self.batch_size, patience=self.patience,
              full_batch_steps=self.full_batch_steps, full_batch_patience=self.full_batch_patience)
        whole("BTConfig", 0, min_epochs=self.min_epochs, full_batch_items=self.full_batch_items,
              full_batch_min_steps=self.full_batch_min_steps, seed=self.seed)
        at_least("BTConfig", 0, weight_decay=self.weight_decay, patience_ratio=self.patience_ratio, l2=self.l2)
        above_zero("BTConfig", lr=self.lr)


class RewardMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:  # (N,)
        return self.net(torch.cat([prompt, response], dim=-1)).squeeze(-1)


def distinct_answers(pairs: PairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct [prompt; response] rows (U, 2d) and each pair's chosen and rejected row index (N,)."""
    rows = torch.cat([torch.cat([pairs.prompt, pairs.chosen], -1), torch.cat([pairs.prompt, pairs.rejected], -1)])
    items, index = torch.unique(rows, dim=0, return_inverse=True)
    return items, index[: len(pairs)], index[len(pairs) :]


def _accuracy(margin: torch.Tensor) -> float:
    return float(margin_credit(torch.sigmoid(margin) - 0.5).mean()) if margin.numel() else float("nan")  # as eval's credit(P)


class SingleBT:
    """One reward for everyone: the Bradley-Terry model (Bradley & Terry, 1952) of RLHF's reward
    model (Ouyang et al., 2022), an MLP on frozen [prompt; response] embeddings. New users get the
    same reward: nothing is personalized. Probabilities come back as float32 numpy (N,)."""

    name = "bt"

    def __init__(self, config: BTConfig = BTConfig()):
        self.config = config
        self.model: RewardMLP | None = None

    @torch.no_grad()
    def reward(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """The one reward everyone shares, r(x, y) (Bradley & Terry 1952; the reward model of
        Ouyang et al. 2022 on frozen embeddings): prompt, response (N, d) -> (N,), on the model's
        device. Tensors or numpy arrays of any real dtype. Raises RuntimeError before `fit`, and
        ValueError naming `prompt` or `response` when it is not (N, d) (d: the embeddings fitted
        on), the two have other N, or one holds NaN or inf."""
        if self.model is None:
            raise RuntimeError("the Bradley-Terry model has no weights: fit it first")
        device = next(self.model.parameters()).device
        prompt, response = comparison_rows(self.model.net[0].in_features // 2, device, prompt=prompt, response=response)
        return self.model(prompt, response)

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        """Minibatch epochs over the pairs, early stopping on the validation Bradley-Terry loss.

        Rewards are computed once per distinct (prompt, response) in a batch: data sets repeat
        answers across many pairs (UKP: 1,070 texts in 24k training pairs), and when the distinct
        answers are few the whole training set is one batch at the cost of those answers alone.

        Stopping (`EarlyStopping`): not before `min_epochs` (full batch: `full_batch_min_steps`),
        then once the validation loss has not improved for max(patience, patience_ratio x the
        steps to its last improvement); the weights at the lowest validation loss are restored.
        Without validation pairs it trains for the whole budget. Returns val_acc and val_loss at the
        restored weights (left out without validation pairs), best_epoch, epochs run, full_batch,
        train_loss. Raises ValueError naming the field when the pairs cannot be trained on
        (`PairBatch.check`: none, embeddings not alike or not finite, a user index outside `users`)."""
        train.check("train", min_pairs=1)
        val.check("val", train.prompt.shape[-1])
        cfg = self.config
        torch.manual_seed(cfg.seed)
        device = default_device()
        train, val = train.to(device), val.to(device)
        items, chosen_idx, rejected_idx = distinct_answers(train)  # (U, 2d), (N,), (N,)
        full_batch = len(items) <= cfg.full_batch_items
        batch_size = len(train) if full_batch else cfg.batch_size
        if full_batch:
            max_epochs = cfg.full_batch_steps
            rule = StoppingRule(cfg.full_batch_min_steps, cfg.full_batch_patience, cfg.patience_ratio)
        else:
            max_epochs = cfg.epochs
            rule = StoppingRule(cfg.min_epochs, cfg.patience, cfg.patience_ratio)
        model = RewardMLP(train.prompt.shape[1], cfg.hidden).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        generator = torch.Generator().manual_seed(cfg.seed)
        stopper = EarlyStopping(rule)
        for epoch in range(max_epochs):  # noqa: B007 (reported after the loop)
            model.train()
            for batch in torch.randperm(len(train), generator=generator).split(batch_size):
                batch = batch.to(device)
                used, where = torch.unique(torch.cat([chosen_idx[batch], rejected_idx[batch]]), return_inverse=True)
                reward = model.net(items[used]).squeeze(-1)  # (U_batch,)
                loss = bradley_terry_loss(reward[where[: len(batch)]], reward[where[len(batch) :]])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if len(val) == 0:
                continue
            model.eval()
            with torch.no_grad():
                margin = model(val.prompt, val.chosen) - model(val.prompt, val.rejected)  # (N_val,)
                val_loss = float(torch.nn.functional.softplus(-margin).mean())
            if stopper.update(val_loss, lambda: copy.deepcopy(model.state_dict())):
                break
        if stopper.best_state is not None:
            model.load_state_dict(stopper.best_state)
        self.model = model.eval()
        metrics = {"best_epoch": stopper.best_at, "epochs": epoch + 1, "full_batch": full_batch, "train_loss": float(loss.detach())}
        if len(val):
            with torch.no_grad():
                margin = model(val.prompt, val.chosen) - model(val.prompt, val.rejected)
            metrics = {"val_acc": _accuracy(margin), "val_loss": float(torch.nn.functional.softplus(-margin).mean()), **metrics}
        return metrics

    def _checked(self, pairs: PairBatch, name: str) -> PairBatch:
        if self.model is None:
            raise RuntimeError("the Bradley-Terry model has no weights: fit it first")
        pairs.check(name, self.model.net[0].in_features // 2)  # ValueError naming `name`.field
        return pairs.to(default_device())

    @torch.no_grad()
    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        pairs = self._checked(pairs, "pairs")
        margin = self.reward(pairs.prompt, pairs.chosen) - self.reward(pairs.prompt, pairs.rejected)
        return torch.sigmoid(margin).cpu().numpy()

    @torch.no_grad()
    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        self._checked(support, "support")  # one reward for everyone: nothing to personalize, yet bad pairs are named
        query = self._checked(query, "query")
        margin = self.reward(query.prompt, query.chosen) - self.reward(query.prompt, query.rejected)
        return torch.sigmoid(margin).cpu().numpy()

    def user_clusters(self) -> dict[str, int] | None:
        return None


def fit_user_logistic(diff: torch.Tensor, user: torch.Tensor, n_users: int, l2: float, steps: int = 100) -> torch.Tensor:
    """Independent ridge logistic regressions, one per user, solved together with L-BFGS.

    diff: (N, d) chosen-minus-rejected features; returns W (U, d). Users share nothing: the loss is
    a sum of per-user terms, so each row of W depends only on that user's pairs; a user without
    pairs gets zeros."""
    if len(diff) == 0 or n_users == 0:  # nothing to fit (L-BFGS fails on an empty problem)
        return torch.zeros(n_users, diff.shape[1], device=diff.device)
    W = torch.zeros(n_users, diff.shape[1], device=diff.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([W], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        margin = (W[user] * diff).sum(-1)  # (N,)
        loss = -torch.nn.functional.logsigmoid(margin).sum() + 0.5 * l2 * (W**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return W.detach()


class PerUserBT:
    """An independent Bradley-Terry model per user: ridge logistic regression on the difference of
    the two answers' embeddings (chosen - rejected), weight `BTConfig.l2`, no sharing between users.
    A new user is fitted from their support pairs alone. Probabilities come back as numpy (N,)."""

    name = "per-user-bt"

    def __init__(self, config: BTConfig = BTConfig()):
        self.config = config
        self.weights: torch.Tensor | None = None  # (U, d), row u: user `users[u]`
        self.users: list[str] = []  # the training users, in the order of `weights`' rows

    @staticmethod
    def _diff(pairs: PairBatch) -> torch.Tensor:
        return pairs.chosen - pairs.rejected  # prompt terms cancel in a linear reward

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        """One ridge logistic regression per training user; val_acc on `val` (left out when it is
        empty). Raises ValueError naming the field when the pairs cannot be trained on (`PairBatch.check`)."""
        train.check("train", min_pairs=1)
        val.check("val", train.prompt.shape[-1])
        train = train.to(default_device())
        self.weights = fit_user_logistic(self._diff(train), train.user, len(train.users), self.config.l2)
        self.users = list(train.users)
        return {"val_acc": float(credit(self.prob_seen(val)).mean())} if len(val) else {}

    def _checked(self, pairs: PairBatch, name: str) -> PairBatch:
        if self.weights is None:
            raise RuntimeError("the per-user Bradley-Terry model has no weights: fit it first")
        pairs.check(name, self.weights.shape[1])  # ValueError naming `name`.field
        return pairs.to(default_device())

    @torch.no_grad()
    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        """P(chosen) (N,) for pairs of the training users, matched by name (`seen_rows`); ValueError
        naming a user not fitted on."""
        pairs = self._checked(pairs, "pairs")
        margin = (self.weights[seen_rows(pairs, self.users)] * self._diff(pairs)).sum(-1)
        return torch.sigmoid(margin).cpu().numpy()

    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        support, query = self._checked(support, "support"), self._checked(query, "query")
        same_users(support, query)
        W = fit_user_logistic(self._diff(support), support.user, len(support.users), self.config.l2)
        margin = (W[query.user] * self._diff(query)).sum(-1)
        return torch.sigmoid(margin).cpu().numpy()

    def user_clusters(self) -> dict[str, int] | None:
        return None
