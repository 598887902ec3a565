"""Review of replicas50's `pluralign promote`: it removes the files of the folder the artifact lacks (an earlier model's
of the other kind). Pointed at a folder that is no population model's (`--pal-dir` naming the data folder, or
PLURALIGN_PAL_DIR unset where PLURALIGN_DATA_DIR is the shared volume's root), it removed every plain file there: the
key file, promotions.json, anything an operator kept there. Now it refuses such a folder, naming it and the first
file that no population model holds, and changes nothing."""

from __future__ import annotations

from tests.unit.clitools import cli
from tests.unit.test_replicas50_promote import pal


def test_promote_into_a_folder_holding_other_files_refuses_and_removes_nothing(tmp_path, capsys):
    artifact, data = pal(tmp_path / "artifact", 1, 2), tmp_path / "data"
    data.mkdir()
    (data / "api_keys.json").write_text('{"keys": []}')
    (data / "promotions.json").write_text("{}")
    code, out, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(data))
    assert code == 2 and out == "", (code, out, err)
    assert f"--pal-dir {data}" in err and "api_keys.json" in err, err
    assert sorted(p.name for p in data.iterdir()) == ["api_keys.json", "promotions.json"]  # before: both removed

    # a folder holding a model of either kind (and what an earlier model of the other kind left) is promoted into
    served = tmp_path / "pal"
    code, _, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(served))
    assert code == 0, err
    (served / "users.jsonl").write_text("")  # an EM mixture's, left by a `cp` over it
    code, _, err = cli(capsys, "promote", str(artifact), "--pal-dir", str(served))
    assert code == 0, err
    assert sorted(p.name for p in served.iterdir()) == ["meta.json", "model.safetensors", "user_weights.json"]
