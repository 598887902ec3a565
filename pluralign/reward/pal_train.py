"""Training a PAL model: shared parameters and the training users' logits, one loop.

The training users' logits are a plain (U, K) tensor indexed by `PairBatch.user`; at the end they
become rows of a `UserWeights` table. Adam updates both, each with its own learning rate. After
every epoch the validation pairs (same users) are scored; the best epoch by validation loss is kept.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pluralign.device import default_device
from pluralign.losses import (
    ABSURD_BT_LOSS,
    CONSTANT_BT_LOSS,
    MIN_JUDGED_VAL_PAIRS,
    TrainingDiverged,
    bradley_terry_loss,
    margin_credit,
)
from pluralign.reward.features import PairBatch
from pluralign.reward.inputs import above_zero, as_numbers, at_least, seed_in_range, whole
from pluralign.reward.model_selection import TooManyComponents
from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.reward.user_weights import UserWeights


@dataclass(frozen=True)
class PALTrainConfig:
    """How `train_pal` fits a PAL model: Adam over minibatches of comparisons, the shared MLPs and prototypes and
    the training users' logits at their own rates, early stopping on the validation loss (nats per pair). Raises
    ValueError naming the field: a count (`batch_size`, `max_epochs`, `patience`, `max_pairs`) not a whole number
    >= 1, `seed` out of range, `weight_decay` or `init_scale` negative, a rate or `max_seconds` not above 0."""

    lr_shared: float = 2e-3  # Adam learning rate of the shared MLPs and prototypes
    lr_user: float = 5e-2  # Adam learning rate of the training users' logits
    weight_decay: float = 1e-4  # on shared parameters only
    batch_size: int = 256  # comparisons per step
    max_epochs: int = 40
    max_pairs: int | None = 300_000  # budget of pair visits (epochs x pairs): UKP's 24k pairs get 13 epochs
    patience: int = 4  # epochs without a lower validation loss before stopping
    max_seconds: float | None = None  # stop after this long (wall clock), keeping the best epoch
    # std of the training users' initial logits. Small on purpose: a spread at the start persists
    # along directions no comparison constrains, and blurs the recovery of groups.
    init_scale: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        whole("PALTrainConfig", 1, batch_size=self.batch_size, max_epochs=self.max_epochs, patience=self.patience,
              **({} if self.max_pairs is None else {"max_pairs": self.max_pairs}))
        seed_in_range("PALTrainConfig", seed=self.seed)  # it seeds `user_clusters` k-means too
        at_least("PALTrainConfig", 0, weight_decay=self.weight_decay, init_scale=self.init_scale)
        above_zero("PALTrainConfig", lr_shared=self.lr_shared, lr_user=self.lr_user,
                   **({} if self.max_seconds is None else {"max_seconds": self.max_seconds}))

    def epochs_for(self, n_pairs: int) -> int:
        """Epochs the budget allows for a training set of n_pairs."""
        if self.max_pairs is None or n_pairs == 0:
            return self.max_epochs
        return max(1, min(self.max_epochs, math.ceil(self.max_pairs / n_pairs)))


@dataclass
class PALResult:
    """What `train_pal` returns: the best epoch's `model` (K prototypes over the encoder's D-d embeddings), the
    training users' mixture logits (`user_weights`, (U, K), a softmax away from their weights over the prototypes),
    and `metrics`: `best_epoch`, `epochs` (run), the best epoch's `val_loss` (mean Bradley-Terry loss over the validation
    pairs, nats per pair), `val_acc` (in [0, 1]) and `train_loss` (the mean over its last minibatch only, not over the
    epoch), `train_seconds` and `pairs_per_second`."""

    model: PALModel
    user_weights: UserWeights
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate_pairs(model: PALModel, logits: torch.Tensor, pairs: PairBatch, batch_size: int = 4096) -> tuple[float, float]:
    """(mean loss in nats, accuracy in [0, 1]) of users' logits (U, K) on their pairs: row u of
    `logits` is the user `pairs.user` indexes as u (`UserWeights.stack(pairs.users)[0]`); NaN for
    no pairs. Tensors or numpy arrays of any real dtype. Raises ValueError naming `logits` when it
    is not (U, K) finite numbers for the U = len(pairs.users) users, and `pairs`.field as
    `PairBatch.check` does (embeddings not (N, input_dim) or not finite, a user index outside), and
    `batch_size` when it is not a whole number >= 1 (comparisons scored per forward pass)."""
    whole("evaluate_pairs", 1, batch_size=batch_size)
    pairs.check("pairs", model.config.input_dim)
    u, k = len(pairs.users), model.config.k
    table = as_numbers("logits", logits, f"({u}, {k}) logits")
    if table.dim() != 2 or tuple(table.shape) != (u, k):
        raise ValueError(f"`logits` has shape {tuple(table.shape)}; one row of K logits per user of `pairs.users` is "
                         f"(U, K) = ({u}, {k})")
    if not bool(torch.isfinite(table).all()):
        raise ValueError("`logits` is not finite (NaN or inf)")
    device = next(model.parameters()).device
    return _evaluate(model, table.detach().to(device=device, dtype=torch.float32), pairs.to(device), batch_size)


@torch.no_grad()
def _evaluate(model: PALModel, logits: torch.Tensor, pairs: PairBatch, batch_size: int) -> tuple[float, float]:
    if len(pairs) == 0:
        return float("nan"), float("nan")
    losses, correct = [], []
    for start in range(0, len(pairs), batch_size):
        b = slice(start, start + batch_size)
        margin = model.margin(logits[pairs.user[b]], model.pair_terms(pairs.prompt[b], pairs.chosen[b], pairs.rejected[b]))
        losses.append(torch.nn.functional.softplus(-margin))
        correct.append(margin_credit(torch.sigmoid(margin) - 0.5))  # as eval reads P(chosen): float32 sigmoid, 0.5 below ~3e-8
    return float(torch.cat(losses).mean()), float(torch.cat(correct).mean())


def train_pal(
    train: PairBatch,
    val: PairBatch,
    config: PALConfig,
    train_config: PALTrainConfig = PALTrainConfig(),
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> PALResult:
    """Train on seen users' pairs; `val` indexes the same users. `progress(epoch, metrics)` per epoch. `train` and
    `val` are PairBatch: embeddings (N, D) of each pair's prompt, chosen and rejected answer (D = `config.input_dim`)
    and `user` (N,) indices into `users`. Returns a PALResult: the best epoch's model and the U training users' logits
    (U, K), with its metrics.

    Raises ValueError when the pairs cannot be trained on (`PairBatch.check`: none, embeddings not
    (N, input_dim) or not finite, a user index outside `users`; the field is named), when train and
    val index other users, TooManyComponents (a ValueError) when K is more than the training users,
    and TrainingDiverged (a ValueError) naming the epoch and the loss as soon as a training step's
    loss or an epoch's validation loss is NaN or inf, or when the best epoch's model scores over
    `pluralign.losses.ABSURD_BT_LOSS` (10 x log 2 nats per pair; a constant model scores log 2) on its
    training pairs, or on its validation pairs when there are at least `MIN_JUDGED_VAL_PAIRS` (one
    validation pair that contradicts many consistent training pairs of its user scores ~25 at the
    default rates: a data set, not a divergence; docs/operations.md):
    nothing is returned then, not even an earlier epoch's state; the message names the likely causes."""
    tc = train_config
    if train.users != val.users:
        raise ValueError("train and validation pairs must index the same users")
    train.check("train", config.input_dim, min_pairs=1)
    val.check("val", config.input_dim, min_pairs=1)  # early stopping reads it
    if config.k > len(train.users):
        raise TooManyComponents([config.k], len(train.users))
    torch.manual_seed(tc.seed)
    device = default_device()
    train, val = train.to(device), val.to(device)
    model = PALModel(config).to(device)
    user_logits = (tc.init_scale * torch.randn(len(train.users), config.k, device=device)).requires_grad_()  # (U, K)
    optimizer = torch.optim.Adam([
        {"params": model.parameters(), "lr": tc.lr_shared, "weight_decay": tc.weight_decay},
        {"params": [user_logits], "lr": tc.lr_user, "weight_decay": 0.0},
    ])
    generator = torch.Generator(device="cpu").manual_seed(tc.seed)
    best = {"val_loss": float("inf")}
    best_state, best_logits, since, seen_pairs = None, None, 0, 0
    first_loss: float | None = None  # the first step's training loss, for the divergence message
    start = time.perf_counter()
    for epoch in range(1, tc.epochs_for(len(train)) + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        steps = math.ceil(len(train) / tc.batch_size)
        for step, first in enumerate(range(0, len(train), tc.batch_size), start=1):
            b = order[first : first + tc.batch_size]
            terms = model.pair_terms(train.prompt[b], train.chosen[b], train.rejected[b])
            margin = model.margin(user_logits[train.user[b]], terms)  # (B,)
            loss = bradley_terry_loss(margin, torch.zeros_like(margin))
            if first_loss is None:
                first_loss = float(loss.detach())
            if not math.isfinite(float(loss.detach())):
                raise _diverged(tc, epoch, f"the training loss is {float(loss.detach())} at step {step} of {steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen_pairs += len(b)
        model.eval()
        val_loss, val_acc = _evaluate(model, user_logits.detach(), val, 4096)  # checked above
        metrics = {"epoch": epoch, "train_loss": float(loss.detach()), "val_loss": val_loss, "val_acc": val_acc}
        if progress:
            progress(epoch, metrics)
        if not math.isfinite(val_loss):
            raise _diverged(tc, epoch, f"the validation loss is {val_loss}")
        if val_loss < best["val_loss"]:
            best, since = metrics, 0
            best_state = copy.deepcopy(model.state_dict())
            best_logits = user_logits.detach().clone()
        else:
            since += 1
        if since >= tc.patience or (tc.max_seconds is not None and time.perf_counter() - start > tc.max_seconds):
            break
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    # the kept model on the pairs it was trained on (one pass): a handful of validation pairs may all fall on
    # the right side of a model whose margins are 1e30 (a learning rate of 1e8); its training pairs do not
    kept_loss, kept_acc = _evaluate(model, best_logits, train, 4096)
    absurd_on_train = not kept_loss <= ABSURD_BT_LOSS  # finite, but it learned numbers, not preferences
    # the validation mean is judged over enough pairs only: one pair a confident model gets wrong can carry a small one
    absurd_on_val = len(val) >= MIN_JUDGED_VAL_PAIRS and best["val_loss"] > ABSURD_BT_LOSS
    if absurd_on_train or absurd_on_val:
        raise _diverged(tc, best["epoch"], (
            f"the model kept scores {kept_loss:.3g} nats/pair on its training pairs (accuracy {kept_acc:.3f}), "
            f"{best['val_loss']:.3g} on validation (accuracy {best['val_acc']:.3f}, {len(val)} pairs), over {ABSURD_BT_LOSS:.3g} "
            f"= 10 x log 2 (a 50/50 model scores {CONSTANT_BT_LOSS:.3f}); training loss {first_loss:.3g} at the first step, "
            f"{float(loss.detach()) + 0.0:.3g} at the last"), causes=None if absurd_on_train else CONTRADICTED)
    weights = UserWeights.from_logits(train.users, best_logits)
    metrics = {
        "best_epoch": best["epoch"], "epochs": epoch, "val_loss": best["val_loss"], "val_acc": best["val_acc"],
        "train_loss": best["train_loss"], "train_seconds": seconds, "pairs_per_second": seen_pairs / max(seconds, 1e-9),
    }
    return PALResult(model=model, user_weights=weights, metrics=metrics)


# what a kept model that scores well on its training pairs and absurdly on enough validation pairs means
CONTRADICTED = ("Likely cause: the validation pairs contradict the training pairs (chosen and rejected swapped in one "
                "of them, or users who answered the same comparisons the other way); the model fits its training pairs")


def _diverged(tc: PALTrainConfig, epoch: int, what: str, causes: str | None = None) -> TrainingDiverged:
    """The one-line error; `causes` replaces the usual ones (the rates, the embeddings, swapped validation pairs)."""
    causes = causes or (
        f"Likely causes: learning rates too high (lr_shared={tc.lr_shared:g}, lr_user={tc.lr_user:g}; defaults "
        f"{PALTrainConfig.lr_shared:g}, {PALTrainConfig.lr_user:g}), embeddings not normalized, or validation pairs with "
        f"chosen and rejected swapped")
    return TrainingDiverged(f"PAL training diverged at epoch {epoch}: {what}; nothing was kept. {causes}")
