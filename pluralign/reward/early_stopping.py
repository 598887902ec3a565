"""Early stopping that ends at the validation optimum rather than at the first plateau.

A fixed patience ("stop after P evaluations without a better validation score") stops a run on any
plateau longer than P, even one the run would have left for a lower loss: on UKP, single BT's
validation accuracy plateaued for 40 full-batch steps on seed 1 and training stopped at step 148,
2.7 points of test accuracy short. Here patience grows with the run: after a new best at
evaluation t, training goes on until max(patience, patience_ratio * t) evaluations have passed
without another (by default a plateau half as long as the run so far is waited out) (the "patience increase" of the LISA lab deep learning tutorials' early stopping),
never stops before `min_evaluations`, and the best state seen is what the caller restores.
The monitored value is a loss (lower is better), e.g. the validation Bradley-Terry loss, which keeps
moving on plateaus of accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoppingRule:
    min_evaluations: int = 1  # never stop before this many evaluations
    patience: int = 3  # at least this many evaluations without a new best before stopping
    patience_ratio: float = 0.5  # ... and at least this fraction of the evaluations up to the last improvement
    min_improvement: float = 1e-4  # a new best must be lower by this fraction of the old best's magnitude

    def __post_init__(self) -> None:
        if self.min_evaluations < 1 or self.patience < 1 or self.patience_ratio < 0 or self.min_improvement < 0:
            raise ValueError(f"invalid stopping rule {self}")


class EarlyStopping:
    """Tracks the lowest validation loss and a snapshot of the state that reached it.

    >>> stopper = EarlyStopping(StoppingRule(min_evaluations=20, patience=10))
    >>> for step in range(max_steps):
    ...     train_step()
    ...     if stopper.update(validation_loss(), lambda: copy.deepcopy(model.state_dict())):
    ...         break
    >>> model.load_state_dict(stopper.best_state)
    """

    def __init__(self, rule: StoppingRule = StoppingRule()):
        self.rule = rule
        self.evaluations = 0
        self.best = math.inf  # the lowest loss seen
        self.best_state: Any = None  # snapshot at the lowest loss seen
        self.best_at = 0  # 1-based evaluation of the lowest loss
        self.improved_at = 0  # 1-based evaluation of the last improvement by more than min_improvement
        self._reference = math.inf  # the loss that improvement was measured against

    def patience_now(self) -> int:
        """Evaluations without a real improvement that the rule tolerates at this point of the run."""
        return max(self.rule.patience, math.ceil(self.rule.patience_ratio * self.improved_at))

    def update(self, loss: float, snapshot: Callable[[], Any]) -> bool:
        """Record one evaluation; `snapshot()` is called on every new lowest loss. Returns True to stop.

        Any lower loss replaces the kept state; only an improvement by more than `min_improvement`
        (relative) restarts the patience clock, so a slow creep does not run forever."""
        self.evaluations += 1
        if math.isfinite(loss) and (self.best_state is None or loss < self.best):
            self.best, self.best_at, self.best_state = loss, self.evaluations, snapshot()
            if not math.isfinite(self._reference) or loss < self._reference - self.rule.min_improvement * abs(self._reference):
                self._reference, self.improved_at = loss, self.evaluations
                return False
        if self.evaluations < self.rule.min_evaluations:
            return False
        return self.evaluations - self.improved_at >= self.patience_now()
