"""The user model: what pluralign believes about one user (PAL prior + a per-user Bayesian residual),
which comparison to ask them next, what they stated, and all of it in words."""

from pluralign.user.features import FEATURE_NAMES, FEATURES_VERSION, response_features
from pluralign.user.model import Candidates, ResidualPrior, Ties, UserModel, UserState, fit_posterior

# issue 16's pieces live in their own modules (imported where used, so importing the user model
# stays light): pluralign.user.active (which comparison to ask: BALD on the posterior),
# pluralign.user.stated (stated preferences, versioned), pluralign.user.summary (beliefs in words)

__all__ = [
    "FEATURE_NAMES", "FEATURES_VERSION", "Candidates", "ResidualPrior", "Ties", "UserModel", "UserState", "fit_posterior",
    "response_features",
]
