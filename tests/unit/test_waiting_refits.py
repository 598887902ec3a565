"""The file that keeps waiting background refits across a crash (`service.waiting_refits`)."""

from __future__ import annotations

from service.waiting_refits import WAITING_REFITS_FILE, WaitingRefits
from tests.files import file_size_limit


def test_a_line_cut_short_by_a_crash_mid_write_is_skipped_and_the_others_read(tmp_path):
    kept = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    kept.add([("acme", "ann"), ("acme", "bob")])
    kept.add([("globex", "cy"), ("acme", "ann")])
    with open(kept.path, "ab") as f:  # a process killed in the middle of its write
        f.write(b'[["acme","d')
    assert WaitingRefits(kept.path).read() == [("acme", "ann"), ("acme", "bob"), ("globex", "cy")]
    kept.rewrite([("acme", "bob")])
    assert kept.read() == [("acme", "bob")] and kept.lines == 1
    kept.drop()
    assert not kept.path.exists() and kept.read() == [] and kept.lines == 0


def test_forget_takes_only_the_users_named_and_leaves_a_file_naming_none_of_them_as_it_was(tmp_path):
    kept = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    kept.add([("acme", "ann"), ("acme", "zoë")])
    kept.add([("globex", "ann")])
    before = kept.path.read_bytes()
    kept.forget({("acme", "an"), ("globex", "zoë")})  # a prefix of a name, another tenant's: none of them named
    assert kept.path.read_bytes() == before and kept.lines == 2
    kept.forget({("acme", "zoë"), ("globex", "ann")})
    assert kept.read() == [("acme", "ann")] and kept.lines == 1
    kept.forget({("acme", "ann")})  # the last one: the file goes
    assert not kept.path.exists()


def test_users_the_worker_owes_stay_named_through_a_drain_until_handed_on_and_a_delete_forgets_them(tmp_path):
    """`owe` (the ingest worker's `before_done`): the users of a move are named before the log lets go of their rows,
    and a drain of the refit queue meanwhile (`drop`) or a rewrite keeps them, until `refit_waiting` hands them on
    (session crash53: a kill in that window lost their refit)."""
    kept = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    kept.owe([("acme", "ann")])
    assert WaitingRefits(kept.path).read() == [("acme", "ann")]
    kept.drop()  # another user's refit drained the queue meanwhile
    assert WaitingRefits(kept.path).read() == [("acme", "ann")]
    kept.rewrite([("acme", "bob")])
    assert WaitingRefits(kept.path).read() == [("acme", "ann"), ("acme", "bob")]
    kept.handed_on([("acme", "ann")])
    kept.drop()
    assert not kept.path.exists()
    kept.owe([("acme", "cy")])
    kept.forget({("acme", "cy")})  # deleted: no id of theirs stays, in the file or held back for it
    assert not kept.path.exists() and not kept.moving


def test_a_line_a_full_disk_cut_short_does_not_hide_the_users_appended_once_there_is_room_again(tmp_path, caplog):
    """A full disk (here RLIMIT_FSIZE: the write stops part way, then fails, as ENOSPC does) cut the worker's line
    short (`owe`), then there was room again and the next move's users were appended. Before (review of crash53):
    they were glued to the torn line, and the next start's read skipped both as one damaged line, so a kill after
    that lost their refits (those of the line cut short are logged as such, and refitted at their next read)."""
    kept = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    kept.owe([("acme", "ann")])
    before = kept.path.read_bytes()
    with file_size_limit(len(before) + 8):  # room for part of the next line only
        kept.owe([("acme", "bob")])
    assert "cannot be written" in caplog.text
    assert kept.path.read_bytes() == before  # cut back: no part of bob's line (nor of his id) left
    kept.owe([("acme", "cy")])  # room again
    kept.add([("globex", "dee")])
    # what the next start reads after a kill: every user of the lines written whole
    assert WaitingRefits(kept.path).read() == [("acme", "ann"), ("acme", "cy"), ("globex", "dee")]
    with open(kept.path, "ab") as f:  # a line a machine's power loss cut short, found by the next start's first move
        f.write(b'[["acme","e')
    WaitingRefits(kept.path).owe([("acme", "fay")])
    assert WaitingRefits(kept.path).read() == [("acme", "ann"), ("acme", "cy"), ("globex", "dee"), ("acme", "fay")]


def test_a_deleted_users_id_in_a_line_cut_short_leaves_the_file(tmp_path):
    """Review reviewlate53b: a DELETE rewrites the file without the user's id only where it found their pair whole
    (`["acme","ann"]`); a line a power loss cut short after their id (`[["acme","ann"`) kept it on disk after the
    DELETE, until the refit queue next drained with nobody waiting (for good while a backlog never clears). The
    others' users are kept; the torn line's are skipped, as the next start skips them."""
    kept = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    kept.add([("acme", "bob")])
    with open(kept.path, "ab") as f:  # a line a power loss cut short
        f.write(b'[["acme","ann"')
    kept.forget({("acme", "ann")})
    assert b'"ann"' not in kept.path.read_bytes(), kept.path.read_bytes()
    assert WaitingRefits(kept.path).read() == [("acme", "bob")]
    kept.forget({("acme", "an")})  # a prefix of an id is not that user: nothing rewritten for it
    assert WaitingRefits(kept.path).read() == [("acme", "bob")]
