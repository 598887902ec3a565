"""Review of session trial47b (the library trial): what it left that a user of the library or the service
still meets. Tiny inputs, well under a second each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pluralign.reward.pal import PALConfig, PALModel, load_pal, save_pal
from pluralign.reward.user_weights import UserWeights


def _tiny_pal() -> PALModel:
    return PALModel(PALConfig(variant="a", k=2, input_dim=8, latent_dim=4, hidden=8))


def test_a_pal_checkpoint_a_release_before_trial47b_saved_with_a_nan_metric_loads_and_forgets(tmp_path):
    """trial47b made save_pal leave a NaN metric out; a checkpoint saved before it holds the NaN as null
    (msgspec's JSON for NaN: `pluralign train-pal` wrote test_macro_acc NaN for a protocol with no seen
    test pairs), and load_pal, read_meta and forget_users (a user's DELETE) still refused it: "meta.json:
    not a description of a PAL checkpoint: Expected `float`, got `null`"."""
    from pluralign.reward.pal_checkpoint import forget_users, read_meta

    folder = tmp_path / "pal"
    save_pal(folder, _tiny_pal(), UserWeights.from_logits(["ann", "bob"], np.zeros((2, 2))), encoder_id="enc",
             metrics={"val_acc": 0.5})
    meta = json.loads((folder / "meta.json").read_text())
    meta["metrics"]["test_macro_acc"] = None  # what msgspec wrote for NaN before trial47b
    (folder / "meta.json").write_text(json.dumps(meta))
    _, users, loaded = load_pal(folder, encoder_id="enc", device="cpu")
    assert loaded.metrics == {"val_acc": 0.5} and users.users() == ["ann", "bob"]
    assert forget_users(folder, lambda u: u == "ann") == 1
    assert read_meta(folder).users == 1 and read_meta(folder).metrics == {"val_acc": 0.5}
    assert "null" not in (folder / "meta.json").read_text()


def test_the_user_table_answers_in_for_a_non_str_id_as_it_does_lookup():
    users = UserWeights.from_logits(["5"], np.zeros((1, 2)))
    assert "5" in users and "6" not in users
    # trial47b made lookup(5) a TypeError ("lookup(5) gave the prior for a user set as "5""), but `5 in users`
    # still said False of that user, and `users.lookup(5) if 5 in users else fit(...)` refitted them
    with pytest.raises(TypeError, match=r"`user_id` must be a str, got int"):
        _ = 5 in users
