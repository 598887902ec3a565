"""Review of replica40's pref_id claims (`pluralign.store.claims`), on a real folder.

A folder claim was a file created with O_EXCL and then written: for a moment it is at its name and empty.
A reader finding it empty waited ~100 ms and then took it for the claim of a killed maker and removed it.
A maker paused between its create and its write (a loaded machine, a slow network filesystem) for longer
lost its claim, the reader claimed the id for its own content, and both imports were acknowledged: the
race the claims are there to close. Now a claim is written whole under a temporary name and hard-linked
to its name (put-if-absent): it is never seen empty."""

from __future__ import annotations

import os
import threading
import time

from pluralign.store import StoredPreference
from pluralign.store import claims as claims_module
from pluralign.store.claims import FolderClaims, claim_of


def claim(pref_id: str, chosen: str) -> dict:
    row = StoredPreference(tenant="acme", user_id="u", pref_id=pref_id, prompt="Tea?", chosen=chosen, rejected="No.",
                           kind="comparison", created_at=1.0, received_at=time.time())
    return {pref_id: claim_of(row, stamped=False)}


def test_a_maker_slow_to_write_its_claim_keeps_it(tmp_path, monkeypatch):
    """Two replicas (two FolderClaims on one folder) claim one id with different content; the first is paused
    0.5 s while it writes its claim. Exactly one of them holds the id; before, both did."""
    slow = threading.Event()
    write = os.write

    def paused_write(fd, data):
        if threading.current_thread().name == "slow":
            slow.set()
            time.sleep(0.5)
        return write(fd, data)

    monkeypatch.setattr(claims_module.os, "write", paused_write)
    results: dict[str, tuple] = {}
    first = threading.Thread(name="slow", target=lambda: results.update(a=FolderClaims(tmp_path).claim("acme", "u", claim("p-1", "Tea."))))
    first.start()
    assert slow.wait(5)
    results["b"] = FolderClaims(tmp_path).claim("acme", "u", claim("p-1", "Coffee."))
    first.join(5)
    holders = sorted(k for k, (made, _) in results.items() if made == ["p-1"])
    refused = sorted(k for k, (_, taken) in results.items() if "p-1" in taken)
    assert len(holders) == 1 and refused == sorted({"a", "b"} - set(holders)), results  # before: both held it
    names = [p for p in (tmp_path / "pref_id_claims").rglob("*") if p.is_file()]
    assert len(names) == 1 and not names[0].name.startswith("."), names  # no temporary file left
