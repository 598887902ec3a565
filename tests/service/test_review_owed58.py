"""review owed58: what owed58's simpler damaged owed-retractions file (`service.owed_retractions`) left uncovered.

- An owed file the service cannot read at all (an I/O error, a permission) is left as it is at the start (docs/api.md),
  for a start that can read it; but a `retractions-owed.json.damaged-*` an earlier release kept beside it was taken up
  all the same: the owed file was written with that copy's keys only, in place of the one it could not read, whose rows
  were then lost, and the copy removed. Now both are left for a start that can read the owed file.
- The `OwedRetractions.mark` a look takes before it reads (so that a row stored again under the same id and taken back
  again after that read stays owed) had tests for a DELETE's look and the start's, none for a batch's look again
  (`_look_again`) or a retraction's own take-back (`_retract_logged`): the two below fail when either clears the key
  whatever its mark.
- An owed file (or an earlier release's copy) damaged into bytes that are not UTF-8 (a byte changed, a cut inside a
  two-byte character) raised UnicodeDecodeError at the start, which stopped there: the service did not start.

The two mark tests drive the retraction functions on a real owed file with the store's two reads stubbed: the window is
between a read and the clear that follows it, which no request can aim at."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE, OwedRetractions
from service.users import retractions

KEPT_ASIDE = f"{OWED_RETRACTIONS_FILE}.damaged-20261206T101010Z"  # as an earlier release named one
KEY = ("acme", "dan", "p-1")


def on_disk(path: Path) -> set[tuple[str, str, str]]:
    return {tuple(k) for k in msgspec.json.decode(path.read_bytes())}


def test_an_owed_file_that_cannot_be_read_at_all_is_not_replaced_by_an_earlier_releases_copy(tmp_path, monkeypatch, caplog):
    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(msgspec.json.encode([["acme", "eve", "p-7"]]))
    (tmp_path / KEPT_ASIDE).write_bytes(b'[["acme","ann","p-1"],["acme","bo')
    read = Path.read_bytes

    def failing(self):
        if self == path:
            raise OSError(5, "Input/output error", str(self))
        return read(self)

    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, logger="pluralign.service"):
        patched.setattr(Path, "read_bytes", failing)
        OwedRetractions(path)
    assert path.read_bytes() == b'[["acme","eve","p-7"]]'  # eve's row still owed on disk
    assert (tmp_path / KEPT_ASIDE).exists()
    # a start that can read it takes up both
    assert OwedRetractions(path).keys() == {("acme", "eve", "p-7"), ("acme", "ann", "p-1")}
    assert on_disk(path) == {("acme", "eve", "p-7"), ("acme", "ann", "p-1")}
    assert [p.name for p in tmp_path.iterdir()] == [OWED_RETRACTIONS_FILE]


def owed_with(tmp_path: Path, store) -> SimpleNamespace:
    """A runtime with a real owed file holding KEY (as a run killed before it took the row back left it) and `store`."""
    owed = OwedRetractions(tmp_path / OWED_RETRACTIONS_FILE)
    owed.owe({KEY})
    return SimpleNamespace(owed_retractions=owed, store=store)


def test_a_row_stored_again_and_taken_back_again_while_a_batch_was_looked_at_again_stays_owed(tmp_path):
    """`_look_again`: the rows read before (the start's, `_owed_rows`), then one read of the retractions recorded after
    them; none named: owed no more. A row stored again under the id and taken back again through another replica in
    between (the ingest worker's look owes it again) stays owed: its retraction has still to run."""
    row = SimpleNamespace(tenant=KEY[0], user_id=KEY[1], pref_id=KEY[2])
    rt = None

    def retracted(rows):
        rt.owed_retractions.owe({KEY})  # as `OwedRetractions.check` owes it once its row is stored again
        return set()  # read before that retraction was recorded

    rt = owed_with(tmp_path, SimpleNamespace(stored_row=lambda *key: row, retracted=retracted))
    retractions._owed_rows(rt, [KEY], 0)
    assert rt.owed_retractions.keys() == {KEY}
    assert on_disk(tmp_path / OWED_RETRACTIONS_FILE) == {KEY}


def test_a_row_stored_again_and_taken_back_again_while_its_retraction_ran_stays_owed(tmp_path, monkeypatch):
    """`_retract_logged`: the row looked at, taken back, then the key cleared. A row stored again under the id and taken
    back again through another replica after the look stays owed."""
    rt = owed_with(tmp_path, None)
    taken = []

    def retract(rt, tenant, user_id, pref_id, arrived):
        taken.append((tenant, user_id, pref_id))
        rt.owed_retractions.owe({(tenant, user_id, pref_id)})  # stored again right after, and owed again
        return None

    monkeypatch.setattr(retractions, "_still_owed", lambda *_: True)
    monkeypatch.setattr(retractions, "retract", retract)
    retractions._retract_logged(rt, *KEY)
    assert taken == [KEY]
    assert rt.owed_retractions.keys() == {KEY}
    assert on_disk(tmp_path / OWED_RETRACTIONS_FILE) == {KEY}


def test_a_start_replaces_an_owed_file_damaged_into_bytes_that_are_not_utf8(serve, tmp_path, caplog):
    """A damaged byte (0xff) in one key of the owed file, and an earlier release's copy cut short inside a two-byte
    character (`é`): the start's read raised UnicodeDecodeError (neither msgspec's DecodeError nor an OSError), so the
    service did not start at all, at every try. Now each is damaged as any other: the keys it holds whole are owed
    again, the one holding the damaged byte is counted as bytes not read, and the copy is removed."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / OWED_RETRACTIONS_FILE).write_bytes(b'[["acme","ann","p-1"],["acme","b\xffb","p-2"]]')
    (tmp_path / "data" / KEPT_ASIDE).write_bytes('[["acme","cy","p-3"],["acme","jos\u00e9'.encode()[:-1])
    with caplog.at_level(logging.WARNING, logger="pluralign.service"):
        data, server, svc = serve()
        with server:
            owed = svc.runtime.owed_retractions
            assert not (data / KEPT_ASIDE).exists()
            # owed, then owed no more once the start's look found none of their rows stored
            deadline = time.monotonic() + 60
            while owed.keys() or (data / OWED_RETRACTIONS_FILE).exists():
                assert time.monotonic() < deadline, owed.keys()
                time.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if OWED_RETRACTIONS_FILE in r.getMessage()]
    assert any("the 1 rows it still names whole" in m and "16 other bytes" in m for m in said), said  # "acme""b?b""p-2"
    assert any("the 1 rows they still named whole" in m and "11 other bytes" in m for m in said), said  # "acme""jos?"
    assert not any(part in m for part in ('"ann"', '"cy"', "p-1", "p-3", "jos") for m in said), said
