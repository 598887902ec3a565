"""owed59: the waiting refits' file (`service.waiting_refits`) and the owed retractions' (`service.owed_retractions`), two
small sets of keys kept across a crash, in one format read and written whole by one code (`service.key_sets`). Before,
the owed file was one JSON list and the waiting file JSON lines, each with its own reader: a damaged owed file gave the
keys it still held whole, a damaged waiting line none (its users' refits lost to a crash though their ids were there)."""

from __future__ import annotations

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE, OwedRetractions
from service.waiting_refits import WAITING_REFITS_FILE, WaitingRefits

# as the previous release (c28ebd92) wrote each: the owed keys one JSON list, no line's end; the waiting users a line a batch
OLD_OWED = b'[["acme","ann","p-1"],["globex","bo","p-2"]]'
OLD_WAITING = b'[["acme","ann"],["acme","bob"]]\n[["globex","cy"]]\n[["acme","bob"],["acme","dee"]]\n'


def test_the_files_the_previous_release_wrote_are_read_as_they_are(tmp_path):
    (tmp_path / OWED_RETRACTIONS_FILE).write_bytes(OLD_OWED)
    (tmp_path / WAITING_REFITS_FILE).write_bytes(OLD_WAITING)
    owed = OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE)
    assert owed.keys() == {("acme", "ann", "p-1"), ("globex", "bo", "p-2")}
    assert owed.path.read_bytes() == OLD_OWED  # read whole: not written again
    waiting = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    assert waiting.read() == [("acme", "ann"), ("acme", "bob"), ("globex", "cy"), ("acme", "dee")] and waiting.lines == 3


def test_both_files_are_written_in_one_format_which_the_previous_release_reads(tmp_path):
    owed = OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE)
    owed.owe({("globex", "bo", "p-2"), ("acme", "ann", "p-1")})
    waiting = WaitingRefits(tmp_path / WAITING_REFITS_FILE)
    waiting.add([("globex", "cy"), ("acme", "ann")])
    waiting.rewrite([("globex", "cy"), ("acme", "ann")])  # written whole, as the owed file always is
    assert owed.path.read_bytes() == b'[["acme","ann","p-1"],["globex","bo","p-2"]]\n'
    assert waiting.path.read_bytes() == b'[["acme","ann"],["globex","cy"]]\n'
    # the previous release's readers (a downgrade): its owed file's decoder, its waiting file's line by line
    assert msgspec.json.Decoder(list[tuple[str, str, str]]).decode(owed.path.read_bytes()) == sorted(owed.keys())
    assert WaitingRefits(waiting.path).read() == [("acme", "ann"), ("globex", "cy")]


def test_a_waiting_line_cut_short_keeps_the_users_it_still_names_whole(tmp_path, caplog):
    """A line a full disk or a power loss cut short after its first users: they were skipped with it, their refits lost
    to a crash. Now they are read as the owed file's whole keys are; the user cut short is counted, never named."""
    path = tmp_path / WAITING_REFITS_FILE
    path.write_bytes(b'[["acme","ann"]]\n[["acme","bob"],["globex","cy"],["acme","de\n[["acme","fay"]]\n')
    assert WaitingRefits(path).read() == [("acme", "ann"), ("acme", "bob"), ("globex", "cy"), ("acme", "fay")]
    said = [r.getMessage() for r in caplog.records]
    assert any("1 lines cut short or damaged" in m and "9 other bytes" in m for m in said), said  # "acme""de
    assert not any('"de' in m for m in said), said
