"""`pluralign.files.folder_lock` where PLURALIGN_PAL_DIR's parent cannot be written (the folder a volume's mount point,
its parent the image's read-only or root-owned folder): the lock falls back to an flock on the folder's own descriptor.

A first start on such an empty folder bootstraps a PAL checkpoint under that lock (`UserRewards.load_or_bootstrap`), and
the save takes `writing_artifact`'s flock on the same folder: in session 49 the second flock, on another descriptor of
the folder in the same process, was refused, and the start failed with ArtifactBusy ("another process is saving a PAL
checkpoint there now") after training for a minute, every time."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from pluralign.files import ArtifactBusy, folder_lock, lock_file
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal

NOBODY = 65534


def checkpoint(users: list[str]):
    torch.manual_seed(0)
    return PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)), UserWeights.from_logits(users, torch.zeros(len(users), 2))


def in_child(body) -> int:
    """Run `body` in a forked child as an account that cannot write the parent (nobody when this is root); its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        status = 1
        try:
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            status = body()
        finally:
            os._exit(status)
    deadline = time.monotonic() + 60
    while not (ended := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:  # (hung: never the suite's 10 minutes)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child was still running after 60 s")
        time.sleep(0.01)
    return os.waitstatus_to_exitcode(ended[1])


def test_a_checkpoint_saved_under_the_folders_own_lock_is_saved():
    base = Path(tempfile.mkdtemp(prefix="pal-mount-", dir="/tmp"))  # (nobody cannot pass pytest's 0700 folders)
    try:
        base.chmod(0o755)
        parent = base / "image"
        pal = parent / "pal"
        pal.mkdir(parents=True)  # the volume's mount point: empty, writable, its parent not
        if os.geteuid() == 0:
            os.chown(pal, NOBODY, NOBODY)
        parent.chmod(0o555)

        def save_under_the_lock() -> int:
            with folder_lock(pal):
                try:
                    save_pal(pal, *checkpoint(["u1", "u2"]), "enc")  # before: ArtifactBusy
                except ArtifactBusy:
                    return 3
            return 0

        assert in_child(save_under_the_lock) == 0
        assert not lock_file(pal).exists()  # the parent could not take it
        assert load_pal(pal, encoder_id="enc")[1].users() == ["u1", "u2"]

        def save_beside_a_holder() -> int:  # the lock still excludes: another holder's save is refused meanwhile
            read, write = os.pipe()
            holder = os.fork()
            if holder == 0:  # pragma: no cover
                os.close(read)
                with folder_lock(pal):
                    os.close(write)  # the parent's read ends (end of file) once the lock is held
                    time.sleep(60)  # held until killed
                os._exit(0)
            os.close(write)
            os.read(read, 1)
            try:
                save_pal(pal, *checkpoint(["u3"]), "enc")
            except ArtifactBusy:
                return 0
            finally:
                os.kill(holder, 9)
                os.waitpid(holder, 0)
            return 4

        assert in_child(save_beside_a_holder) == 0
    finally:
        (base / "image").chmod(0o755)
        shutil.rmtree(base)
