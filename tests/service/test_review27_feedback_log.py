"""The feedback log keeps acknowledged feedback whose segment files were removed, not only the one being written.

A backlog (the table cannot be written, or the encoder is slow) spans several segment files of the
log; a cleanup of `*.log` files (an operator freeing room) removes them all. Every pending record is
only in those files: the next round must write all of them again, not only the current segment's."""

from __future__ import annotations

from pluralign.store.feedback_log import read_frames
from tests.service.test_break27_storage import comparison


def test_feedback_acknowledged_into_older_segment_files_someone_removed_survives(serve):
    data, server, svc = serve()
    folder = data / "feedback-log"
    rt = svc.runtime
    acknowledged = []
    with server, svc.client("acme") as acme, rt.ingest.paused():  # the records stay pending: only the log holds them
        rt.ingest.log.segment_bytes = 1  # each round fills its segment: the backlog spans several files
        for i in range(3):
            r = acme.post("/v1/feedback", json=comparison("ann", i))
            assert r.status_code == 201, r.text
            acknowledged += r.json()["stored"]
        assert len(list(folder.glob("*.log"))) > 2
        for segment in folder.glob("*.log"):
            segment.unlink()
        r = acme.post("/v1/feedback", json=comparison("ann", 3))
        assert r.status_code == 201, r.text
        acknowledged += r.json()["stored"]
        # what a restart after a crash now would replay
        replayed = [row.pref_id for path in sorted(folder.glob("*.log")) for rows in read_frames(path) for row in rows]
        assert sorted(replayed) == sorted(acknowledged)
        assert len(rt.ingest.log.pending) == 4
    # and a real restart on the folder serves every acknowledged row
    _, server, svc = serve()
    with server, svc.client("acme") as acme:
        page = acme.get("/v1/users/ann/preferences", params={"limit": 100}).json()
        assert sorted(p["pref_id"] for p in page["data"]) == sorted(acknowledged)


def test_a_record_a_later_version_wrote_stops_the_start_and_stays(serve, tmp_path):
    """A record whose checksum is whole but whose rows carry a field this version does not know was
    written by a later version (the binary rolled back while feedback waited in the log; this version
    wrote `received_at`, which the one before cannot read). Before: replay took it for a torn record,
    found nothing pending in the segment and removed the file: acknowledged feedback gone, silently.
    Now the start fails naming the file, and the file stays for the version that can read it."""
    import zlib

    import msgspec
    import pytest

    from pluralign.store.feedback_log import FRAME

    folder = tmp_path / "data" / "feedback-log"  # the data folder `serve` starts on, written before it starts
    folder.mkdir(parents=True)
    row = {"tenant": "acme", "user_id": "ann", "pref_id": "p1", "kind": "comparison", "created_at": 1.0, "prompt": "Which?",
           "chosen": "Tea.", "rejected": "Coffee.", "acknowledged_by": "a later version"}
    payload = msgspec.msgpack.encode([row])
    segment = folder / "000000000001.log"
    segment.write_bytes(FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
    with pytest.raises(ValueError) as caught:
        serve()
    message = str(caught.value)
    assert str(segment) in message and "acknowledged_by" in message and "later version" in message, message
    assert segment.read_bytes().endswith(payload)


def test_a_zero_filled_tail_a_crash_left_is_still_a_torn_record(tmp_path):
    """A crash mid-round can leave a segment's tail zero-filled (the file's size reached the disk, its
    data did not; XFS and ext4 do this): a zero header reads as an empty record whose checksum matches.
    It was never acknowledged: skipped, as a torn record is, not taken for a later version's record."""
    import time

    from pluralign.store.feedback_log import FeedbackLog
    from pluralign.store.tables import StoredPreference

    folder = tmp_path / "feedback-log"
    log = FeedbackLog(folder)
    log.append([StoredPreference(tenant="acme", user_id="ann", pref_id="p1", kind="comparison", created_at=time.time(),
                                 received_at=time.time(), prompt="Which?", chosen="Tea.", rejected="Coffee.")])
    log.close()
    (segment,) = [p for p in folder.glob("*.log") if p.stat().st_size]
    with segment.open("ab") as f:
        f.write(bytes(64))
    log = FeedbackLog(folder)
    try:
        assert [r.pref_id for e in log.pending.values() for r in e.rows] == ["p1"]
    finally:
        log.close()
