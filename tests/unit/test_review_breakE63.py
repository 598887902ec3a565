"""review breakE63: PAL's training accuracy (`pal_train._evaluate`) and `pluralign eval`'s (`credit` of P(chosen) =
float32 sigmoid(margin), PALModel.preference_prob) agree, on margins too small for float32's sigmoid too."""
import numpy as np
import pytest
import torch

from pluralign.fairness.metrics import credit
from pluralign.reward import pal_train


class _Margins:
    """A PAL stand-in whose margins are given: `_evaluate` reads `margin` and `pair_terms` only."""

    def __init__(self, margin: torch.Tensor):
        self._margin = margin

    def pair_terms(self, prompt, chosen, rejected):
        return prompt

    def margin(self, logits, terms):
        return self._margin[terms]


class _Pairs:
    def __init__(self, n: int):
        self.user = torch.zeros(n, dtype=torch.long)
        self.prompt = self.chosen = self.rejected = torch.arange(n)

    def __len__(self):
        return len(self.user)


def test_training_accuracy_agrees_with_the_credit_eval_gives_the_same_margins():
    margin = torch.tensor([1e-8, 2e-8, 0.0, 1e-7, 3.0, -3.0], dtype=torch.float32)
    _, acc = pal_train._evaluate(_Margins(margin), torch.zeros(1, 2), _Pairs(len(margin)), 4)
    assert acc == pytest.approx(float(np.mean(credit(torch.sigmoid(margin).numpy()))), abs=1e-6)  # what `pluralign eval` reports for them
