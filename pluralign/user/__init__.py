"""The user model: what pluralign believes about one user (PAL prior + a per-user Bayesian residual)."""

from pluralign.user.features import FEATURE_NAMES, FEATURES_VERSION, response_features
from pluralign.user.model import Candidates, ResidualPrior, UserModel, UserState, fit_posterior

__all__ = [
    "FEATURE_NAMES", "FEATURES_VERSION", "Candidates", "ResidualPrior", "UserModel", "UserState", "fit_posterior",
    "response_features",
]
