"""`pluralign promote` says the version and digest of the model it promoted (review versions53). Its JSON line is
what an operator passes to the next `--if-version` (since session versions53 the digest too, which every release
reads alike); until this review it read them off the folder once the promotion's turn under `.pal.lock` had ended,
so a promotion landing just after it (two promotions at once take turns: `tests/unit/test_replicas50_promote.py`)
had this one print the other's digest, and `--if-version <that digest>` then swapped out a model this operator never
saw. Real PAL checkpoints on disk, the real CLI; the other promotion is run where the race puts it."""

from __future__ import annotations

import json

import torch

import pluralign.files
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from service.rewards import checkpoint_version, model_digest
from tests.unit.clitools import cli


def checkpoint(folder, seed: int):
    torch.manual_seed(seed)
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=2, hidden=4)),
             UserWeights.from_logits(["t/a", "t/b"], torch.randn(2, 2)), "enc")
    return folder


def test_the_json_line_names_the_model_promoted_not_one_promoted_just_after(tmp_path, capsys, monkeypatch):
    mine, theirs, served = checkpoint(tmp_path / "mine", 0), checkpoint(tmp_path / "theirs", 1), tmp_path / "pal"
    promote_into = pluralign.files.promote_into

    def and_then_theirs(source, folder, **kwargs):  # our turn ends; the other operator's promotion takes the next
        names = promote_into(source, folder, **kwargs)
        promote_into(theirs, folder, **kwargs)
        return names

    monkeypatch.setattr(pluralign.files, "promote_into", and_then_theirs)
    code, out, err = cli(capsys, "promote", str(mine), "--pal-dir", str(served))
    assert code == 0, err
    said = json.loads(out)
    assert model_digest(served) == model_digest(theirs) != model_digest(mine)  # the folder holds theirs by now
    # before: theirs, and `--if-version` with it replaced their model as if it were this one
    assert (said["version"], said["digest"]) == (checkpoint_version(mine), model_digest(mine)), said
    monkeypatch.setattr(pluralign.files, "promote_into", promote_into)
    code, _, err = cli(capsys, "promote", str(mine), "--pal-dir", str(served), "--if-version", said["digest"])
    assert code == 2 and "another promotion came first" in err, err
    assert model_digest(served) == model_digest(theirs)  # nothing changed


def test_if_version_reads_the_training_users_file_once_under_the_lock(tmp_path, capsys, monkeypatch):
    """`--if-version` is checked under `.pal.lock`, which every replica's DELETE takes to rewrite the folder. Since
    session versions53 it takes any release's version of the folder: until this review each was hashed from the files
    afresh, user_weights.json decoded whole each time (a 100,000-user checkpoint of 12 MB: 2.8 s under the lock with
    this release's fields, 19 s with 4 fields of later releases, 17 versions, against 1 s before versions53). Now the
    files are read once and only meta.json's fields vary."""
    import json as json_module
    from pathlib import Path

    served, artifact = checkpoint(tmp_path / "pal", 0), checkpoint(tmp_path / "artifact", 1)
    meta = json_module.loads((served / "meta.json").read_text())
    (served / "meta.json").write_text(json_module.dumps({**meta, "a": 1, "b": 2, "c": 3, "d": 4}))  # later releases'
    later = checkpoint_version(served, frozenset({*meta, "a", "c"}))  # what a release knowing `a` and `c` says
    reads, read_bytes = [], Path.read_bytes

    def counted(path):
        if path == served / "user_weights.json":
            reads.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    code, out, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(served), "--if-version", later)
    assert code == 0, err
    assert len(reads) <= 2, len(reads)  # before: 18 (17 versions and the digest)
    assert json.loads(out)["digest"] == model_digest(artifact)
