"""review reviewleft57 and owed58: a damaged `retractions-owed.json` is replaced at the start by the keys it still holds
whole, in one rename, so a start killed before that write leaves it to be read again (once it was renamed aside first,
and a kill between lost those keys). Nothing of it is kept aside (owed58: left57 kept a copy that every DELETE of a user
it named had to scrub, and a DELETE that could not answered 500 `owed_retractions_not_rewritten`); the copies an
earlier release kept (`retractions-owed.json.damaged-<UTC time>`) are taken up by the start, their keys owed again, and
removed."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import msgspec

from service.key_sets import salvage
from service.owed_retractions import OWED_RETRACTIONS_FILE, OwedRetractions
from tests.service.test_reviewleft57_owed import DAMAGED, WHOLE, wait_for

# the start's read of the owed file, killed (SIGKILL) as it comes to write the owed keys in the damaged file's place
KILLED_BEFORE_THE_WRITE = """
import os, signal, sys
from pathlib import Path
import service.key_sets as key_sets
import service.owed_retractions as owed

def killed(path):
    os.kill(os.getpid(), signal.SIGKILL)

key_sets.atomic_writer = killed
owed.OwedRetractions(Path(sys.argv[1]))
"""

# as an earlier release set a damaged owed file aside, and then scrubbed a deleted user's keys out of it
KEPT_ASIDE = f"{OWED_RETRACTIONS_FILE}.damaged-20261206T101010Z"


def test_a_start_killed_before_it_wrote_the_keys_read_from_a_damaged_owed_file_leaves_them_owed(tmp_path):
    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(DAMAGED)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.run([sys.executable, "-c", KILLED_BEFORE_THE_WRITE, str(path)], env=env, capture_output=True,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert [p.name for p in tmp_path.iterdir()] == [OWED_RETRACTIONS_FILE]  # the damaged file, as it was
    assert path.read_bytes() == DAMAGED
    # the next start: the keys still owed, written in its place
    assert OwedRetractions(path).keys() == WHOLE
    assert [p.name for p in tmp_path.iterdir()] == [OWED_RETRACTIONS_FILE]
    assert {tuple(k) for k in msgspec.json.decode(path.read_bytes())} == WHOLE


def test_a_damaged_owed_file_holding_no_key_whole_is_removed_and_nothing_kept(tmp_path):
    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(b'[["acme","ann","p-')
    assert OwedRetractions(path).keys() == set()
    assert list(tmp_path.iterdir()) == []


def test_salvage_keeps_ids_holding_brackets_whole_and_counts_the_bytes_it_could_not_read():
    """A pref_id may hold `]` and an escaped `"`; a key cut short is bytes not read (the list's brackets, commas and spaces
    are not counted): what the start's log says of a damaged file, without its ids."""
    keys, unread = salvage(b'[["acme","ann","a]b"], ["acme","bob","c]\\"d"],["acme","cy","p-', 3)
    assert keys == [("acme", "ann", "a]b"), ("acme", "bob", 'c]"d')]
    assert unread == len(b'"acme""cy""p-')
    assert salvage(b'[["acme","ann","p-1"]', 3) == ([("acme", "ann", "p-1")], 0)  # only its last `]` lost: nothing lost


def test_the_files_an_earlier_release_set_aside_are_owed_again_and_removed_at_the_start(serve, tmp_path, caplog):
    """owed58: such a file stayed in the data folder, naming users, for an operator to read (and a DELETE scrubbed it).
    Now the start owes again the keys it still names whole, with the owed file's own, and removes it once they are
    written; the log says how many, never which."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / OWED_RETRACTIONS_FILE).write_bytes(msgspec.json.encode([["acme", "eve", "p-7"]]))
    (tmp_path / "data" / KEPT_ASIDE).write_bytes(DAMAGED)
    (tmp_path / "data" / f"{KEPT_ASIDE}-2").write_bytes(b'[["acme","fay","p-8"],["acme","gus","p-9"]]')
    with caplog.at_level(logging.WARNING, logger="pluralign.service"):
        data, server, svc = serve()
        with server:
            assert not list(data.glob(f"{OWED_RETRACTIONS_FILE}.*"))
            # every key owed, then owed no more once the start's look found none of their rows stored
            wait_for(lambda: not (data / OWED_RETRACTIONS_FILE).exists() and not svc.runtime.owed_retractions.keys(),
                     "the keys read from the files set aside were never looked at")
    said = [r.getMessage() for r in caplog.records if "kept by an earlier release" in r.getMessage()]
    assert len(said) == 1 and "2 damaged" in said[0] and "the 5 rows they still named whole" in said[0], said
    assert not any(name in said[0] for name in ("ann", "bob", "fay", "gus")), said


def test_a_file_set_aside_stays_until_its_keys_are_on_disk(tmp_path, monkeypatch):
    """The owed file is written (the keys of the files set aside with its own) before they go: a write that fails (a
    full disk) leaves them to the next start, which owes them again and removes them."""
    import service.key_sets as module

    (tmp_path / OWED_RETRACTIONS_FILE).write_bytes(msgspec.json.encode([["acme", "eve", "p-7"]]))
    (tmp_path / KEPT_ASIDE).write_bytes(DAMAGED)
    (tmp_path / f"{OWED_RETRACTIONS_FILE}.damaged-folder").mkdir()  # not a file an earlier release set aside

    def full(path):
        raise OSError(28, "No space left on device", str(path))

    with monkeypatch.context() as patched:
        patched.setattr(module, "atomic_writer", full)
        assert OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE).keys() == WHOLE | {("acme", "eve", "p-7")}
    assert (tmp_path / KEPT_ASIDE).read_bytes() == DAMAGED
    owed = OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE)  # the next start
    assert owed.keys() == WHOLE | {("acme", "eve", "p-7")}
    assert {tuple(k) for k in msgspec.json.decode((tmp_path / OWED_RETRACTIONS_FILE).read_bytes())} == owed.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == [OWED_RETRACTIONS_FILE, f"{OWED_RETRACTIONS_FILE}.damaged-folder"]


def test_an_owed_file_that_cannot_be_read_at_all_is_left_as_it_is(tmp_path, monkeypatch, caplog):
    """An I/O error (or a permission) on the read leaves nothing to salvage: the file stays for a start that can read it,
    not removed as if it held no key."""
    from pathlib import Path

    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(msgspec.json.encode([["acme", "eve", "p-7"]]))
    read = Path.read_bytes

    def failing(self):
        if self == path:
            raise OSError(5, "Input/output error", str(self))
        return read(self)

    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, logger="pluralign.service"):
        patched.setattr(Path, "read_bytes", failing)
        assert OwedRetractions(path).keys() == set()
    assert path.read_bytes() == b'[["acme","eve","p-7"]]'
    assert OwedRetractions(path).keys() == {("acme", "eve", "p-7")}  # a start that can read it
    assert any("Input/output error" in r.getMessage() and "make it readable" in r.getMessage() for r in caplog.records)
