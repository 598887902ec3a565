"""Review of session 28: since SIGTERM is raised in a command as an exception (training/cli.py `Stopped`,
as Ctrl-C's KeyboardInterrupt), a stop can land anywhere in `swap_folder`, which puts a finished
artifact in place of the earlier one with two renames (the earlier one aside, the new one in). Between
them its `finally` removed the earlier one whatever happened: a stop there, or a second rename that
failed, left `--out` with neither artifact (the new one's hidden folder is removed on the way out)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pluralign.files import staged_folder

FILES = ("model.safetensors", "meta.json")


def stopped_at_the_swap(monkeypatch, folder: Path, error: BaseException) -> None:
    """The rename that puts the new artifact at `folder` raises `error` (a signal arriving as the
    earlier artifact was renamed aside, or a failing rename)."""
    real = Path.rename

    def rename(self, target):
        if Path(target) == folder and ".retired" not in self.name:  # the new one's rename, not the old one's back
            raise error
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.EIO, "Input/output error")], ids=["a stop", "a failed rename"])
def test_a_save_stopped_between_the_swaps_renames_keeps_the_earlier_artifact(tmp_path, monkeypatch, error):
    out = tmp_path / "policy"
    with staged_folder(out, FILES, "policy") as staged:
        (staged / "model.safetensors").write_bytes(b"old weights")
        (staged / "meta.json").write_bytes(b"{}")
    stopped_at_the_swap(monkeypatch, out, error)
    with pytest.raises(type(error)):
        with staged_folder(out, FILES, "policy") as staged:
            (staged / "model.safetensors").write_bytes(b"new weights")
            (staged / "meta.json").write_bytes(b"{}")
    assert (out / "model.safetensors").read_bytes() == b"old weights"  # was: no `policy` folder at all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
