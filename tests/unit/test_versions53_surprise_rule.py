"""A user state stored under an earlier changed-mind rule (session versions53). Session 51 stored its calibrated z as
`UserState.surprise`, mind52 the rank z alone; session 52's rule is the smaller of the two, so a state an earlier
release stored flagged (`surprised`: z >= SURPRISE_Z) may not be flagged now, and the service read it as such until the
user's next refit: chat's `compare` asked again at every chat of a user who did not answer. `STATE_VERSION` was not
bumped, which would refit every stored user at their next read (and, in a rolling update, each release refit every user
the other had fitted): a state of an earlier rule is refitted only where the rule can read it otherwise, flagged or with
ties (which session 51's window left out). Real tiny PAL model, states stored and read back as the users table does."""

from __future__ import annotations

import msgspec
import numpy as np
import torch

from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.user import UserModel
from pluralign.user.active import SURPRISE_Z
from pluralign.user.model import UserState


def as_an_earlier_release_stored(state: UserState, **changed) -> UserState:
    """`state` with `changed`, stored by a release before versions53 (no `surprise_rule`) and read back by this one."""
    written = msgspec.msgpack.decode(msgspec.msgpack.encode(msgspec.structs.replace(state, **changed)))
    written.pop("surprise_rule", None)
    return msgspec.msgpack.decode(msgspec.msgpack.encode(written), type=UserState)


def test_a_state_flagged_under_an_earlier_rule_is_refitted_and_one_not_flagged_is_kept():
    torch.manual_seed(0)
    model = UserModel(PALModel(PALConfig(variant="a", k=2, input_dim=8, latent_dim=4, hidden=8)), population="tiny")
    rng = np.random.default_rng(0)
    n = 12
    prompt, chosen, rejected = (rng.normal(size=(n, 8)).astype(np.float32) for _ in range(3))
    state = model.fit_user(prompt, chosen, rejected, ["Short."] * n, ["A longer answer here."] * n, np.zeros(2))[1]
    assert model.current(state) and state.ties == 0
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=UserState)
    assert model.current(stored)  # this release's own state: kept
    assert model.current(as_an_earlier_release_stored(state, surprise=SURPRISE_Z - 0.5))  # not flagged: no rule flags it
    flagged = as_an_earlier_release_stored(state, surprise=SURPRISE_Z + 0.5)
    assert flagged.surprised
    assert not model.current(flagged)  # before: kept, and the user asked again at every chat until their next answer
    tied = as_an_earlier_release_stored(state, surprise=0.1, ties=2)
    assert not model.current(tied)  # its window left ties out
    assert model.current(msgspec.structs.replace(state, surprise=SURPRISE_Z + 0.5))  # flagged by this rule: kept
    # but each still belongs to the model: the tenant's pooled prior and next-comparison's population read their fits
    # (review versions53: `fits` refused them too, and they were left out of both)
    assert model.fits(flagged) and model.fits(tied)
