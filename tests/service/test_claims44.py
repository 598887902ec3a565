"""Session 44: pref_id claims (`pluralign.store.claims`) and the notes of stored rows' claims (`pluralign.store.ingest`),
on a real folder store and a real feedback log: a lock file made again mid-DELETE, notes on disk before the log forgets
their rows, a note that cannot be written, and the start's sweep of what earlier releases left."""

from __future__ import annotations

from pathlib import Path

from pluralign.store import claims as claims_module
from pluralign.store.claims import FolderClaims
from tests.service.test_claims42_cas import USER, claim


def test_a_change_that_makes_the_lock_file_again_mid_delete_leaves_no_folder(tmp_path, monkeypatch):
    """A DELETE's claims step (`forget_user`) unlinks the user's `.lock` (held) and then removes the folder. A change of
    a claim in between (another replica's mover removing a claim it listed a moment ago, which the DELETE removed)
    opened the lock file with O_CREAT: made it again, and the folder's removal failed (not empty). The folder and its
    `.lock` stayed for good. Here the change runs exactly between the unlink and the removal of the folder."""
    delete, mover = FolderClaims(tmp_path), FolderClaims(tmp_path)
    assert delete.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    name = f"{claims_module._folder('acme', USER)}/{claims_module.key_hash('p-1')}"
    version = mover._get(name)[1]  # the mover read the claim before the DELETE removed it
    folder = tmp_path / claims_module.FOLDER / claims_module._folder("acme", USER)
    rmdir, outcome = Path.rmdir, []

    def between_unlink_and_rmdir(path):
        if path == folder and not outcome:
            outcome.append(None)
            assert not (folder / claims_module.LOCK_FILE).exists()  # the DELETE unlinked it
            outcome.append(mover._remove_if(name, version))  # the mover's removal, too late: nothing to remove
        return rmdir(path)

    monkeypatch.setattr(Path, "rmdir", between_unlink_and_rmdir)
    assert delete.forget_user("acme", USER) == 1
    assert outcome == [None, False]
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())  # before: ['.lock']
