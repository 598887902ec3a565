"""An earlier schema's checkpoint in PLURALIGN_PAL_DIR while the model served is the promoted one (`<data>/pal-promoted`).

Every DELETE rewrites PLURALIGN_PAL_DIR's per-user rows too (replicas serve it; a job's artifact an operator copied
there holds its training users), served or not. Before session 49 a start checked only the served model's files: it
started on a PLURALIGN_PAL_DIR it could not read, and a DELETE answered 500 `population_not_rewritten` (every one for
an unreadable meta.json; those of its training users for an unreadable user_weights.json), naming no file to the client. Now the start is refused, naming the file, its schema and
the setting."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.service.tiny import start_service


@pytest.mark.parametrize("name", ["meta.json", "user_weights.json"])
def test_a_start_serving_a_promoted_model_refuses_an_earlier_schema_in_pal_dir_naming_it(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                         minilm, name):
    data, pal = tmp_path / "data", tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, data / "pal-promoted")
    shutil.copytree(tiny_pal_dir, pal)
    old = json.loads((pal / name).read_text())
    (pal / name).write_text(json.dumps({**old, "schema_version": 0}))
    with pytest.raises(ValueError) as caught:
        start_service(data, tiny_generator_dir, pal, minilm)
    said = str(caught.value)
    assert said.startswith("PLURALIGN_PAL_DIR (setting pal_dir), whose training users' rows each DELETE rewrites"), said
    assert f"{pal / name}: " in said and "schema 0, an earlier format this release does not read (it reads schema 1)" in said, said


def test_a_pal_dir_missing_its_user_weights_is_named_with_the_setting_too(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Before, FileNotFoundError from the first DELETE (or, once the check was added, from the start without the setting)."""
    data, pal = tmp_path / "data", tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, data / "pal-promoted")
    shutil.copytree(tiny_pal_dir, pal)
    (pal / "user_weights.json").unlink()
    with pytest.raises(ValueError, match=r"^PLURALIGN_PAL_DIR \(setting pal_dir\).*user_weights\.json"):
        start_service(data, tiny_generator_dir, pal, minilm)
