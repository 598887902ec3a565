"""A population model whose vectors are not the served encoder's size is refused where it is loaded.

Before: a PAL checkpoint naming the served encoder's id but trained on vectors of another size (its
meta.json and weights agreeing with each other: `input_dim` 8, the encoder's 384) was loaded at start and
by a promotion, and every request that scored with it failed (500 on every chat). Now `load_pal` takes the
encoder's `dim` and refuses it naming the file and both sizes, so the service does not start on it
and a promotion of it leaves the served model in place.
"""

from __future__ import annotations

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from tests.service.tiny import start_service


def wrong_size_pal(folder, encoder_id: str, dim: int = 8):
    torch.manual_seed(0)
    model = PALModel(PALConfig(k=2, input_dim=dim, latent_dim=4, hidden=8))
    save_pal(folder, model, UserWeights.from_logits(["a", "b"], torch.zeros(2, 2)), encoder_id)
    return folder


def test_load_pal_refuses_a_checkpoint_of_another_vector_size_naming_it(tmp_path):
    folder = wrong_size_pal(tmp_path / "pal", "enc")
    with pytest.raises(ValueError, match=r"meta\.json.*input_dim=8.*384"):
        load_pal(folder, encoder_id="enc", dim=384)
    assert load_pal(folder, encoder_id="enc", dim=8)[2].input_dim == 8


def test_the_service_refuses_to_start_on_it_and_a_promotion_of_it_keeps_the_served_model(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    bad = wrong_size_pal(tmp_path / "bad-pal", minilm.encoder_id)
    with pytest.raises(ValueError, match=r"bad-pal/meta\.json.*input_dim=8.*384"):
        start_service(tmp_path / "refused", tiny_generator_dir, bad, minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    rt = svc.runtime
    before = rt.rewards.version
    with server, svc.client("acme") as c:
        with pytest.raises(ValueError, match=r"input_dim=8.*384"):
            rt.swap_rewards(bad)  # what a promoted pal job's artifact goes through
        assert rt.rewards.version == before and not (tmp_path / "data" / "pal-promoted").exists()
        chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]})
        assert chat.status_code == 200, chat.text


def test_a_start_after_a_swap_cut_short_serves_the_promoted_model_not_pal_dir(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A service killed between `swap_folder`'s renames leaves no pal-promoted/ and the promoted model beside
    it as `.pal-promoted.retired<random>`. Before: the next start found no promoted model and served
    `pal_dir`'s (another version: every user refitted against it) without a word."""
    import json
    import shutil

    from service.rewards import checkpoint_version

    data = tmp_path / "data"
    retired = data / ".pal-promoted.retired0123456789ab"
    shutil.copytree(tiny_pal_dir, retired)
    meta = json.loads((retired / "meta.json").read_text())
    (retired / "meta.json").write_text(json.dumps({**meta, "metrics": {"val_acc": 0.5}}))  # another version than pal_dir's
    promoted_version = checkpoint_version(retired)
    assert promoted_version != checkpoint_version(tiny_pal_dir)
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    assert svc.runtime.rewards.version == promoted_version
    assert (data / "pal-promoted" / "meta.json").exists() and not retired.exists()


@pytest.mark.parametrize("schema, said", [
    (2, "PAL checkpoint schema 2, written by a later pluralign release (this one reads schema 1): run that release, or retrain with this one"),
    (0, "PAL checkpoint schema 0, an earlier format this release does not read (it reads schema 1): retrain with this release"),
])
def test_a_checkpoint_of_another_schema_stops_the_start_saying_which_way_it_differs(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                                    schema, said):
    """Before: 'PAL checkpoint schema 2, this code reads schema 1', for a later release's and an earlier one's alike."""
    import json
    import shutil

    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    meta = json.loads((pal / "meta.json").read_text())
    (pal / "meta.json").write_text(json.dumps({**meta, "schema_version": schema}))
    with pytest.raises(ValueError) as caught:
        start_service(tmp_path / "data", tiny_generator_dir, pal, minilm)
    assert str(caught.value) == f"{pal / 'meta.json'}: {said}", caught.value


def test_a_start_removes_what_a_promotion_killed_part_way_left_beside_the_served_model(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Before: `.pal-promoted.staged` (a copy for a swap that never came) and `.pal-promoted.retired<random>` (an old
    model set aside), each with every training user's rows, stayed until a DELETE happened to pass by."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_pal_dir, data / "pal-promoted")
    shutil.copytree(tiny_pal_dir, data / ".pal-promoted.staged")
    shutil.copytree(tiny_pal_dir, data / ".pal-promoted.retiredabcdef012345")
    (data / "pal-promoted" / ".user_weights.json.x1y2z3").write_text("{")  # atomic_writer's temp file
    start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    assert sorted(p.name for p in data.iterdir() if "pal-promoted" in p.name) == ["pal-promoted"]
    assert not (data / "pal-promoted" / ".user_weights.json.x1y2z3").exists()
