"""Scale session 37: the feedback log's writer encoded every record of its round inside the log's lock
(`_io`) since the stamp (`received_at`) moved into the writer (session 36): an 8,000-row import's
encoding held the round, and every feedback queued behind it, ~4 ms more. Records are now encoded by
their callers with a placeholder stamp the writer overwrites; the stamp is still the writer's, taken
under the lock (tests/service/test_data36_received_at.py), and the frames are byte for byte what
`frame` encodes of the stamped rows (an older release replays them)."""

from __future__ import annotations

import json

import pytest

from pluralign.store import feedback_log
from pluralign.store.feedback_log import read_frames
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("s37-log")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    service.data_dir = data
    with server:
        yield service


def test_an_import_and_a_feedback_are_not_encoded_under_the_log_s_lock(svc, monkeypatch):
    """Before: the writer called the encoder under `_io` for each record of its round (an import's rows,
    then the feedback's one). The import is past ENCODE_INLINE_ROWS (encoded in a worker thread) but
    small: its rows are embedded after the answer, and 2,000 of them kept the service's worker, and the
    encoder the whole test session shares, busy past the module's end (a 10 s teardown, and the next
    module's requests waiting on the encoder)."""
    log = svc.runtime.ingest.log
    under_lock, encode = [], feedback_log._encode
    monkeypatch.setattr(feedback_log, "_encode", lambda value: under_lock.append(log._io.locked()) or encode(value))
    body = "\n".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Kind answer {i}.", "rejected": f"Curt answer {i}."})
                     for i in range(feedback_log.ENCODE_INLINE_ROWS + 1))
    with svc.client("acme") as c:
        r = c.post("/v1/users/importer/import", content=body)
        assert r.status_code == 201, r.text
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
        assert r.status_code == 201, r.text
    assert under_lock and not any(under_lock), f"{sum(under_lock)} of {len(under_lock)} encodings under the log's lock"


def test_a_frame_is_what_frame_encodes_of_its_stamped_rows(svc):
    """Written, the rows' `received_at` is the round's stamp in the file and in memory alike, and the bytes are
    `frame(rows)`'s: what this and earlier releases replay."""
    log = svc.runtime.ingest.log
    rows = [feedback_log.StoredPreference(tenant="acme", user_id="bo", pref_id=f"p{i}", prompt=f"Q{i}? «received_at\u02c0»",
                                          chosen="A.", rejected="B.", kind="comparison", created_at=1.0 + i, attributes={"k": "v"})
            for i in range(70)]
    entry = log.append(rows)
    assert all(r.received_at is None for r in rows)  # the caller's rows are left as they were
    stamps = {r.received_at for r in entry.rows}
    assert len(stamps) == 1 and None not in stamps
    assert [msgspec_dict(r) for r in entry.rows] == [{**msgspec_dict(r), "received_at": entry.rows[0].received_at} for r in rows]
    written = [frame for frame in read_frames(log._path(entry.segment)) if frame and frame[0].user_id == "bo"]
    assert written == [entry.rows]
    with open(log._path(entry.segment), "rb") as f:
        assert feedback_log.frame(entry.rows) in f.read()


def msgspec_dict(row) -> dict:
    import msgspec

    return msgspec.structs.asdict(row)


def test_a_record_whose_placeholder_is_not_found_once_a_row_is_encoded_row_by_row(monkeypatch):
    """The writer finds each row's `received_at` by its placeholder's bytes; found other than once a row, the
    rows are encoded one by one instead, and the frame is the same."""
    rows = [feedback_log.StoredPreference(tenant="acme", user_id="cy", pref_id=f"p{i}", prompt=f"Q{i}?", chosen="A.", rejected="B.",
                                          kind="comparison", created_at=1.0 + i) for i in range(300)]
    found = feedback_log._placeholder_ends
    monkeypatch.setattr(feedback_log, "_placeholder_ends", lambda payload: found(payload)[:-1])
    ticket = feedback_log._Ticket.of(rows)
    assert ticket.stamped(1_800_000_000.25) == feedback_log.frame(ticket.rows)
    assert {r.received_at for r in ticket.rows} == {1_800_000_000.25}


def test_rows_keeping_a_trl_form_are_stamped_as_frame_encodes_them():
    """Both changes of session 37 together: fidelity37 added `StoredPreference.trl` after `received_at`,
    so the stamp was no longer the encoding's end and the module refused to import (`_check_tail`); now
    `received_at` is the last field again, and rows holding a TRL row (nested messages, extra columns
    whose own keys and floats come before the stamp) get the same frame either way."""
    from pluralign.data.record import Message, TrlRow

    trl = TrlRow(prompt=[Message(role="user", content="Hi?")], chosen=[Message(role="assistant", content="Hello.")],
                 rejected=[Message(role="assistant", content="Go.")], extra={"score_chosen": 0.0, "score_rejected": 1.5, "id": "received_at"})
    rows = [feedback_log.StoredPreference(tenant="acme", user_id="di", pref_id=f"p{i}", prompt="user: Hi?", chosen="Hello.",
                                          rejected="Go.", kind="comparison", created_at=1.0 + i, trl=trl if i % 2 else None)
            for i in range(40)]
    ticket = feedback_log._Ticket.of(rows)
    assert ticket.stamped(1_800_000_000.5) == feedback_log.frame(ticket.rows)
    assert [r.trl for r in ticket.rows] == [r.trl for r in rows]
