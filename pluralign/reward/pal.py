"""PAL mixture reward models: the public surface in one import.

    from pluralign.reward.features import embed_pairs
    from pluralign.reward.pal import PALConfig, PALTrainConfig, train_pal, save_pal, load_pal, fit_user

    train = embed_pairs(train_records, encoder, users=users)  # a PairBatch: (N, D) embeddings, user (N,)
    val = embed_pairs(val_records, encoder, users=users)      # the same users, indexed the same way
    result = train_pal(train, val, PALConfig(variant="a", k=4, input_dim=encoder.dim), PALTrainConfig())
    save_pal("artifacts/pal-a", result.model, result.user_weights, encoder_id=encoder.encoder_id)
    model, user_weights, meta = load_pal("artifacts/pal-a", encoder_id=encoder.encoder_id)
    logits = fit_user(model, prompt, chosen, rejected, prior_logits=user_weights.prior())  # (K,)
    user_weights.set("alice", logits)
    rewards = model.reward(user_weights.lookup("alice")[0], prompt, response)  # (N,)

Modules: `pal_model` (config, the two variants, the shared model), `pal_fit` (few-shot fitting),
`pal_train` (the training loop), `pal_checkpoint` (versioned folders), `user_weights` (the
user table), `pal_preference` (the `pluralign eval` adapter). The paper: Chen et al., "PAL:
Sample-Efficient Personalized Reward Modeling for Pluralistic Alignment", ICLR 2025. A walk through
all of it from Python: docs/library.md.
"""

from pluralign.reward.pal_checkpoint import PAL_SCHEMA, PALMeta, load_pal, read_meta, save_pal
from pluralign.reward.pal_fit import PRIOR_STRENGTH, fit_user, fit_users, fit_users_from_terms, update_user
from pluralign.reward.pal_model import IdealPoint, PairTerms, PALConfig, PALModel, PromptConditioned
from pluralign.reward.pal_preference import PALPreference, cluster_points, user_points
from pluralign.reward.pal_train import PALResult, PALTrainConfig, TrainingDiverged, evaluate_pairs, train_pal
from pluralign.reward.user_weights import USER_WEIGHTS_SCHEMA, UserWeights


def user_logits(user_weights: UserWeights, user_id: str):
    """(logits (K,), is_prior): a known user's logits, or the population prior for an unknown one."""
    return user_weights.lookup(user_id)


def reward_for_user(model: PALModel, user_weights: UserWeights, user_id: str, prompt, response):
    """(rewards (N,), is_prior): the user's rewards for N (prompt, response) rows; is_prior says the
    user was unknown and the population prior scored them."""
    import torch

    logits, is_prior = user_weights.lookup(user_id)
    with torch.no_grad():
        return model.reward(logits.to(prompt.device), prompt, response), is_prior


__all__ = [
    "PAL_SCHEMA", "USER_WEIGHTS_SCHEMA", "PRIOR_STRENGTH",
    "PALConfig", "PALModel", "IdealPoint", "PromptConditioned", "PairTerms",
    "fit_user", "fit_users", "fit_users_from_terms", "update_user",
    "UserWeights", "user_logits", "reward_for_user",
    "PALTrainConfig", "PALResult", "TrainingDiverged", "train_pal", "evaluate_pairs",
    "PALMeta", "save_pal", "load_pal", "read_meta",
    "PALPreference", "cluster_points", "user_points",
]
