"""An EM mixture copied into PLURALIGN_PAL_DIR over a PAL checkpoint, or the other way round, as deploy/README.md says
to serve a job's artifact with replicas since session 49 (`cp artifact/* $PLURALIGN_PAL_DIR/`, taken up while they run).

The copy leaves the earlier model's per-user file beside the new one (a PAL checkpoint's user_weights.json under an EM
mixture's meta.json, an EM mixture's users.jsonl under a PAL checkpoint's), holding its training users' rows. In
session 49 a DELETE rewrote the served kind's per-user file only: a deleted training user's row stayed on the shared
volume in the other, for good. Now `forget_training_users` rewrites both."""

from __future__ import annotations

import shutil

import pytest

from pluralign.reward.training_users import artifact_kind, forget_training_users
from tests.unit.test_break18_cli import tiny_em, tiny_pal


def holding(folder, user: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and user.encode() in p.read_bytes())


@pytest.mark.parametrize("before,after", [(tiny_pal, tiny_em), (tiny_em, tiny_pal)])
def test_a_delete_removes_the_users_row_from_what_the_earlier_model_left_in_the_folder(tmp_path, before, after):
    pal = before(tmp_path / "pal")  # the model served until now: training users u0 and u1
    artifact = after(tmp_path / "artifact")  # the job's artifact put there: u0 and u1 too
    for path in artifact.iterdir():  # `cp artifact/* $PLURALIGN_PAL_DIR/`
        shutil.copy(path, pal / path.name)
    assert artifact_kind(pal) == artifact_kind(artifact)
    assert len(holding(pal, '"u0"')) == 2  # the new model's per-user file, and the earlier one's

    removed = forget_training_users(pal, lambda user: user == "u0", shared=True)  # a DELETE of u0
    assert removed == 2
    assert holding(pal, '"u0"') == []  # before: the earlier model's file kept u0's row
    assert len(holding(pal, '"u1"')) == 2  # the others' rows stay
    assert artifact_kind(pal) == artifact_kind(artifact)


def test_a_model_the_replicas_cannot_serve_fails_only_the_deletes_of_its_own_training_users(tmp_path):
    """A checkpoint of an earlier schema put into PLURALIGN_PAL_DIR while replicas run: each logs it and serves the model
    before (service.pal_dir, "no request fails for it"). In session 49 every DELETE answered 500
    population_not_rewritten meanwhile, of users it does not hold too (its meta.json was read before its rows' bytes
    were looked at); now only those whose rows it may hold, which cannot be removed until a readable model is put there."""
    import json

    from pluralign.store.deletions import Forget

    pal = tiny_pal(tmp_path / "pal", k=2, input_dim=4)  # training users u0 and u1
    meta = json.loads((pal / "meta.json").read_text())
    (pal / "meta.json").write_text(json.dumps({**meta, "schema_version": 0}))
    assert forget_training_users(pal, Forget.key("acme/zoe"), shared=True) == 0  # before: ValueError, a 500
    with pytest.raises(ValueError, match="meta.json: PAL checkpoint schema 0"):
        forget_training_users(pal, Forget.key("u0"), shared=True)
