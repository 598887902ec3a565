"""Session 50 (dletters50): an encoder failing now and then sets no good feedback aside, and a letter whose
`set_aside_at` is not a number keeps every page of the dead letters reachable. A real feedback log, a real LanceDB
folder, and the real app over HTTP for the listing."""

from __future__ import annotations

import threading

import msgspec

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_backlog49 import PickyEncoder
from tests.service.test_feedback_log import DIM, feedback
from tests.stores import wait_for


class EveryOtherCall(PickyEncoder):
    """`PickyEncoder` (a text holding \\x7f refused, every time), whose every other call fails whatever its texts, as a
    remote encoder behind a proxy answering 502 now and then (its HTML page failing the JSON decode: a ValueError)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.lock = threading.Lock()

    def encode(self, texts):
        with self.lock:
            self.n += 1
            flaky = self.n % 2 == 1
        if flaky:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        return super().encode(texts)


def test_an_encoder_failing_every_other_call_sets_no_good_feedback_aside(tmp_path, quick_retries):
    """Four good records (one an import of 3 rows) and one whose text the encoder always refuses, with an encoder that
    fails every other call: the good rows are all stored, none set aside; the bad record's row alone is. Before, a
    refusal counted as the records' own at once whenever the probe that followed it passed (`TextRefused`): the good
    records were dead letters within three batches."""
    log = FeedbackLog(tmp_path / "log")
    for i in range(3):
        log.append(feedback(f"u{i}", 0, tenant="t1"))
    log.append(feedback("imp", 0, tenant="t2", n=3))
    log.append([msgspec.structs.replace(r, prompt="broken \x7f text") for r in feedback("bad", 0, tenant="t1")])
    log.close()
    store = Store(str(tmp_path / "db"), "hash", DIM)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, EveryOtherCall(), tries=3)
    try:
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=60.0)
        stored = [store.count_preferences(t, u) for t, u in (("t1", "u0"), ("t1", "u1"), ("t1", "u2"), ("t2", "imp"))]
        assert stored == [1, 1, 1, 3] and store.count_preferences("t1", "bad") == 0
        assert ingest.set_aside == 1 and ingest.dead_letters.rows_for("t1", "bad") == 1 and ingest.dead_letters.rows() == 1
    finally:
        ingest.close()
