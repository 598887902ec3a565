"""PLURALIGN_PAL_DIR's lock file (`.pal.lock`) that a process of another uid cannot open (`pluralign.files.folder_lock`).

Replicas take turns rewriting the folder they share under an flock on `.pal.lock`. Until session replicas50 a process
that could not open that file (made by another uid, mode 0640 under umask 022) locked the folder's own descriptor
instead: another lock, so it rewrote the folder while a replica of the first uid held `.pal.lock`. Now it locks the
file read-only where it may read it, and is refused, naming the file, where it may not; a replica's start with several
replicas is refused, naming PLURALIGN_PAL_DIR, where it could not take turns (`service.startup_files.check_pal_dir_lock`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pluralign.files import folder_lock, lock_file
from service.settings import Settings
from service.startup_files import check_pal_dir_lock
from tests.unit.test_reviewreplicas49_folder_lock import NOBODY, in_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another uid")


@pytest.fixture
def shared():
    base = Path(tempfile.mkdtemp(prefix="pal-uids-", dir="/tmp"))  # (nobody cannot pass pytest's 0700 folders)
    base.chmod(0o755)
    (base / "pal").mkdir()
    (base / "pal").chmod(0o777)
    yield base
    shutil.rmtree(base)


def test_a_lock_file_another_uid_cannot_open_is_refused_not_replaced_by_another_lock(shared):
    pal = shared / "pal"
    old = os.umask(0o022)
    try:
        with folder_lock(pal):  # a replica of uid 0 holds it (the file: 0640, root's)
            def take_it_too() -> int:
                try:
                    with folder_lock(pal):
                        return 5  # before: held at once, beside the holder
                except OSError as exc:
                    return 0 if str(lock_file(pal)) in str(exc) and f"uid {NOBODY}" in str(exc) else 6
            assert in_child(take_it_too) == 0
    finally:
        os.umask(old)
    assert oct(lock_file(pal).stat().st_mode & 0o777) == "0o640"


def test_a_replicas_start_that_could_not_take_turns_on_the_lock_file_is_refused_naming_the_setting(shared):
    pal = shared / "pal"
    settings = Settings(data_dir=str(shared / "data"), pal_dir=str(pal), store_uri=str(shared / "lancedb"), replicas=2,
                        replica_index=1)

    def start_check(settings) -> int:
        try:
            check_pal_dir_lock(settings)
        except ValueError as exc:
            return 0 if str(exc).startswith("PLURALIGN_PAL_DIR (setting pal_dir)") and str(lock_file(pal)) in str(exc) else 7
        return 8

    lock_file(pal).touch(mode=0o600)  # another uid's, which nobody may not open
    assert in_child(lambda: start_check(settings)) == 0
    lock_file(pal).unlink()
    shared.chmod(0o755)  # nobody cannot make it: the parent is root's
    assert in_child(lambda: start_check(settings)) == 0
    alone = Settings(data_dir=str(shared / "data"), pal_dir=str(pal))
    assert in_child(lambda: start_check(alone)) == 8  # one replica: its folder's own lock orders its machine
    lock_file(pal).touch(mode=0o644)  # readable: locked read-only
    assert in_child(lambda: start_check(settings)) == 8
