"""Review of replicas50's `pluralign promote`: it removes the files of the folder the artifact lacks (an earlier model's
of the other kind). Pointed at a folder that is no population model's (`--pal-dir` naming the data folder, or
PLURALIGN_PAL_DIR unset where PLURALIGN_DATA_DIR is the shared volume's root), it removed every plain file there: the
key file, promotions.json, anything an operator kept there. Now it refuses such a folder, naming it and the first
file that no population model holds, and changes nothing."""

from __future__ import annotations

import multiprocessing
import time

from pluralign.files import folder_lock
from pluralign.reward.pal import load_pal
from pluralign.reward.pal_checkpoint import forget_weight_rows
from service.rewards import checkpoint_version
from tests.unit.clitools import cli
from tests.unit.test_replicas50_promote import pal, promote
from training.cli import main, make_parser


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


def waiting_for_a_lock(pid: int) -> bool:
    """Whether process `pid` waits for an flock (/proc/locks lists a waiter as `N: -> FLOCK ... <pid> ...`)."""
    with open("/proc/locks") as locks:
        return any(line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(pid) for line in locks)


def test_an_artifact_a_delete_rewrites_while_it_is_copied_is_refused_not_promoted_as_a_mix(tmp_path):
    """The service rewrites a job's artifact at a DELETE of one of its training users (its user_weights.json, then
    meta.json: `Admin._drop_weights`), under no lock a promotion takes. A promotion copying it meanwhile put the new
    meta.json beside the user weights before (or the other way round) and said it promoted it (exit 0): no replica
    served that mix, nor said why the promotion did nothing, and the user weights copied could hold the deleted user's
    row. Now each copy is checked against the copied meta.json's digests before anything is renamed: exit 2, the
    folder unchanged (promote again)."""
    folder, artifact = tmp_path / "pal", pal(tmp_path / "artifact", 1, 3)
    other = pal(tmp_path / "other", 2, 3)
    assert main(["promote", str(other), "--pal-dir", str(folder)]) == 0
    served = checkpoint_version(folder)
    make_parser()
    fork = multiprocessing.get_context("fork")
    start = fork.Event()
    proc = fork.Process(target=promote, args=(str(artifact), str(folder), start))
    proc.start()
    with folder_lock(folder):  # a replica's take-up holds it: the promotion checked the artifact and waits its turn
        start.set()
        deadline = time.monotonic() + 30
        while not waiting_for_a_lock(proc.pid):
            assert proc.exitcode is None and time.monotonic() < deadline
            time.sleep(0.01)
        # the DELETE's first write lands now, its meta.json's after the copy (here: never)
        forget_weight_rows(artifact / "user_weights.json", lambda user: user == "1-user-1", k=2)
    proc.join(60)
    assert proc.exitcode == 2  # before: 0, a mix that no replica loads
    assert checkpoint_version(folder) == served and load_pal(folder, encoder_id="enc")[1].users() == \
        load_pal(other, encoder_id="enc")[1].users()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_an_artifact_of_another_encoder_than_the_model_served_is_refused(tmp_path, capsys):
    """Replicas refuse to take up a model trained on another encoder than theirs (an ERROR, the model before served)
    and to start on it: promoted all the same until this review (exit 0), it stopped every replica's next start."""
    import torch

    from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal

    folder = tmp_path / "pal"
    assert main(["promote", str(pal(tmp_path / "served", 1, 2)), "--pal-dir", str(folder)]) == 0  # encoder "enc"
    served = checkpoint_version(folder)
    torch.manual_seed(3)
    save_pal(tmp_path / "other", PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)),
             UserWeights.from_logits(["x"], torch.randn(1, 2)), "another-encoder")
    capsys.readouterr()
    code, _, err = cli(capsys, "promote", str(tmp_path / "other"), "--pal-dir", str(folder))
    assert code == 2 and "'enc'" in err and "'another-encoder'" in err, (code, err)
    assert checkpoint_version(folder) == served and not [p for p in folder.iterdir() if p.name.startswith(".")]
