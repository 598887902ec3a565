"""The file that keeps waiting background refits across a crash (`service.waiting_refits`)."""

from __future__ import annotations

from service.waiting_refits import WAITING_REFITS_FILE, WaitingRefits


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
