"""`pluralign promote --older-form` on a folder whose files are not the ones its meta.json records (session
reviewupgrade51).

The digests in meta.json (`files`, replicas50) are what keeps a replica from serving a copy under way or a mix of two
copies. `--older-form` drops them: run while a plain `cp` of another model was paused after its meta.json (or after two
copies mixed), it made the mix servable for good (this release loads a model without digests unchecked), where it
should refuse, naming the file that differs, and change nothing. A per-user file a DELETE rewrote after meta.json (what
an older release's DELETE leaves in a rolling update, the case the option exists for) is not refused."""

from __future__ import annotations

import shutil

import msgspec
import pytest
import torch

from pluralign.files import FilesDiffer
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from pluralign.reward.pal_checkpoint import MODEL_FILE, USER_WEIGHTS_FILE
from tests.unit.clitools import cli


def artifact(folder, seed: int, users=("acme/ann", "acme/bob")):
    torch.manual_seed(seed)
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)),
             UserWeights.from_logits(list(users), torch.randn(len(users), 2)), "enc")
    return folder


def test_older_form_refuses_a_copy_under_way_naming_the_file_and_changes_nothing(tmp_path, capsys):
    folder = tmp_path / "pal"
    code, _, err = cli(capsys, "promote", str(artifact(tmp_path / "a", 0)), "--pal-dir", str(folder))
    assert code == 0, err
    shutil.copy(artifact(tmp_path / "b", 1) / "meta.json", folder / "meta.json")  # `cp b/* pal/` paused after meta.json
    with pytest.raises(FilesDiffer):
        load_pal(folder, encoder_id="enc")  # the mix is not served
    before = (folder / "meta.json").read_bytes()
    code, _, err = cli(capsys, "promote", "--older-form", "--pal-dir", str(folder))
    assert code == 2, "dropped the digests of a copy under way"  # before: 0, "dropped": ["files"], the mix servable
    assert str(folder / MODEL_FILE) in err and "--older-form" in err, err
    assert (folder / "meta.json").read_bytes() == before


def test_older_form_takes_a_per_user_file_a_delete_rewrote_after_meta_json(tmp_path, capsys):
    folder = tmp_path / "pal"
    code, _, err = cli(capsys, "promote", str(artifact(tmp_path / "a", 0)), "--pal-dir", str(folder))
    assert code == 0, err
    raw = msgspec.json.decode((folder / USER_WEIGHTS_FILE).read_bytes())
    del raw["users"]["acme/bob"]  # a DELETE that rewrote user_weights.json and was killed before meta.json
    (folder / USER_WEIGHTS_FILE).write_bytes(msgspec.json.encode(raw))
    code, out, err = cli(capsys, "promote", "--older-form", "--pal-dir", str(folder))
    assert code == 0, err
    assert msgspec.json.decode(out.strip().splitlines()[-1])["dropped"] == ["files"]
    assert load_pal(folder, encoder_id="enc")[1].users() == ["acme/ann"]
