"""`pluralign promote --older-form`: the model in PLURALIGN_PAL_DIR rewritten in the form releases before replicas50 read.

Since replicas50 a model's meta.json records the sha256 of its other files (`files`); the releases before refuse the
field (their description structs forbade unknown fields), so after a promotion by this release an older replica does
not start on the folder (a rollback), and an older replica still running in a rolling update fails the DELETEs of the
model's training users. `--older-form` drops the field under `.pal.lock`; this release serves the model all the same
(its version unchanged), unchecked until the next promotion."""

from __future__ import annotations

import msgspec
import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from service.rewards import checkpoint_version
from tests.unit.clitools import cli


class PALMetaBeforeReplicas50(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`PALMeta` as releases before replicas50 read it (34aae210^: pluralign/reward/pal_checkpoint.py)."""

    schema_version: int
    encoder_id: str
    variant: str
    k: int
    input_dim: int
    latent_dim: int
    hidden: int
    users: int = 0
    metrics: dict[str, float | None] = {}


def test_older_form_makes_a_promoted_model_readable_by_a_release_before_replicas50(tmp_path, capsys):
    torch.manual_seed(0)
    artifact = tmp_path / "artifact"
    save_pal(artifact, PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)),
             UserWeights.from_logits(["acme/ann"], torch.randn(1, 2)), "enc")
    folder = tmp_path / "pal"
    code, _, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(folder))
    assert code == 0, err
    version = checkpoint_version(folder)
    with pytest.raises(msgspec.ValidationError, match="files"):
        msgspec.json.decode((folder / "meta.json").read_bytes(), type=PALMetaBeforeReplicas50)
    code, out, err = cli(capsys, "promote", "--older-form", "--pal-dir", str(folder))
    assert code == 0, err  # before: a usage error (no such option; the artifact was required)
    said = msgspec.json.decode(out.strip().splitlines()[-1])
    assert said["version"] == version and said["dropped"] == ["files"]
    older = msgspec.json.decode((folder / "meta.json").read_bytes(), type=PALMetaBeforeReplicas50)
    assert older.users == 1
    assert load_pal(folder, encoder_id="enc")[1].users() == ["acme/ann"] and checkpoint_version(folder) == version
    code, out, _ = cli(capsys, "promote", "--older-form", "--pal-dir", str(folder))  # again: nothing to drop
    assert code == 0 and msgspec.json.decode(out.strip().splitlines()[-1])["dropped"] == []


def test_older_form_refuses_an_artifact_and_a_folder_without_a_model(tmp_path, capsys):
    code, _, err = cli(capsys, "promote", str(tmp_path), "--older-form", "--pal-dir", str(tmp_path))
    assert code == 2 and "--older-form" in err
    code, _, err = cli(capsys, "promote", "--older-form", "--pal-dir", str(tmp_path / "empty"))
    assert code == 2 and "--pal-dir" in err and "no PAL checkpoint or EM mixture" in err
    code, _, err = cli(capsys, "promote", "--pal-dir", str(tmp_path))
    assert code == 2 and "artifact" in err
