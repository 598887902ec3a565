"""left57 and owed58: a damaged `retractions-owed.json` (the rows a replica stored that a user took back through another
replica, owed a retraction: `service.owed_retractions`). Before left57 it was logged as unreadable and overwritten by
the next row owed: what it held was lost. left57 kept it aside as `retractions-owed.json.damaged-<UTC time>`, a copy
every later DELETE of a user it named then had to scrub. Now (owed58) the keys it still holds whole are written in its
place at the start and owed again, nothing of it is kept, and the log says how many keys and bytes, never which ids."""

from __future__ import annotations

import logging
import time

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE

# cut short by a crash or a full disk mid-copy: the keys of two rows owed, the second half gone
DAMAGED = b'[["acme","ann","p-1"],["acme","bob","p-'


def test_a_damaged_owed_retractions_file_is_replaced_by_its_whole_keys_and_nothing_of_it_is_kept(serve, tmp_path, caplog):
    (tmp_path / "data").mkdir()  # the service's data folder (`serve`'s), as a replica killed mid-write left it
    (tmp_path / "data" / OWED_RETRACTIONS_FILE).write_bytes(DAMAGED)
    with caplog.at_level(logging.ERROR, logger="pluralign.service"):
        data, server, svc = serve()
        with server:
            owed = svc.runtime.owed_retractions
            # its one key whole owed again, and owed no more once the start's look found no such row stored
            deadline = time.monotonic() + 60
            while owed.keys() or (data / OWED_RETRACTIONS_FILE).exists():
                assert time.monotonic() < deadline, owed.keys()
                time.sleep(0.05)
            assert not list(data.glob(f"{OWED_RETRACTIONS_FILE}.*"))  # no copy kept aside, naming bob
            # the next row owed writes the file anew
            owed.owe({("acme", "cy", "p-9")})
            assert msgspec.json.decode((data / OWED_RETRACTIONS_FILE).read_bytes()) == [["acme", "cy", "p-9"]]
    said = [r.getMessage() for r in caplog.records if OWED_RETRACTIONS_FILE in r.getMessage()]
    assert any("the 1 rows it still names whole are taken back now" in m and "14 other bytes" in m for m in said), said
    assert not any('"ann"' in m or '"bob"' in m or "p-1" in m for m in said), said  # a log cannot be deleted per user
