"""A data folder shared with a group (setgid: a Kubernetes volume mounted with an `fsGroup`, or `chmod
g+s`): what the service writes there is readable by the group (another uid of it: a vLLM pod loading
adapters from the shared volume, a backup job) and by no one else. Before, files written whole
(temp file + rename) were 0600, artifact folders 0700 and safetensors weights 0600 whatever the umask,
so only the writing uid could read them; and a data folder another account owns failed the start on chmod."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pluralign.files import atomic_writer, copy_into_place, staged_folder


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def shared_folder(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o2770)
    return path


def group_only(found: dict[str, int]) -> bool:
    return all(m & 0o040 and not m & 0o007 for m in found.values())


@pytest.fixture
def serves_umask():
    """The umask `pluralign serve` takes on a shared data folder (027): what plain writes (mkdir, open)
    get; the writers checked here must not fall below it."""
    was = os.umask(0o027)
    yield
    os.umask(was)


def test_files_written_whole_into_a_shared_folder_are_the_groups_to_read(tmp_path, serves_umask):
    shared = shared_folder(tmp_path / "shared")
    with atomic_writer(shared / "api_keys.json") as f:
        f.write(b"{}")
    with staged_folder(shared / "adapter", ("weights.bin",), "an adapter") as staged:
        fd = os.open(staged / "weights.bin", os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors writes its file
        os.close(fd)
    source = tmp_path / "private-artifact"
    source.mkdir(mode=0o700)
    (source / "weights.bin").write_bytes(b"w")
    (source / "weights.bin").chmod(0o600)
    copy_into_place(source, shared / "adapters" / "acme" / "ann", shared / "adapters" / "acme" / ".ann.staged")  # its parents made here
    found = modes(shared)
    assert group_only(found), found
    assert stat.S_IMODE((tmp_path / "private-artifact" / "weights.bin").stat().st_mode) == 0o600  # the source as it was


def test_files_written_whole_elsewhere_stay_the_owners(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    with atomic_writer(private / "api_keys.json") as f:
        f.write(b"{}")
    with staged_folder(private / "adapter", ("weights.bin",), "an adapter") as staged:
        (staged / "weights.bin").write_bytes(b"w")
    assert stat.S_IMODE((private / "api_keys.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((private / "adapter").stat().st_mode) == 0o700


def test_a_data_folder_another_account_owns_is_left_as_it_is(tmp_path):
    from pluralign.files import keep_private

    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another account")
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o2775)
    os.chown(volume, 65534, 2000)
    keep_private(volume)  # before: chmod of a folder this account does not own (PermissionError as non-root)
    assert stat.S_IMODE(volume.stat().st_mode) == 0o2775
    mine = shared_folder(tmp_path / "mine")
    mine.chmod(0o2775)
    keep_private(mine)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o2770  # a shared one keeps its group, loses the others
    plain = tmp_path / "plain"
    plain.mkdir(mode=0o755)
    keep_private(plain)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o700  # as before: this account's only


@pytest.mark.slow
def test_an_adapter_promoted_into_a_shared_data_folder_is_the_groups_to_read(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.test_admin import give_twenty_comparisons, wait_job
    from tests.service.tiny import start_service

    data = shared_folder(tmp_path / "data")
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, adapter_every=20)
    with server:
        job = give_twenty_comparisons(svc, "fred")
        with svc.client("admin") as admin:
            done = wait_job(admin, job["id"], timeout=300)
    assert done["state"] == "succeeded" and done["promoted"] is True, done["log_tail"]
    served = svc.runtime.settings.adapters_path / "acme" / "fred"
    found = modes(served)
    assert "adapter_model.safetensors" in found and group_only(found), found  # before: the weights 0600
