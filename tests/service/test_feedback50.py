"""Session 50: the feedback set aside and the backlog, with a real feedback log and a real LanceDB folder (the HTTP
tests of the same are in test_backlog49.py, on its module's service)."""

from __future__ import annotations

import threading

import msgspec
import numpy as np
import pytest

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog, TenantBacklog
from pluralign.store.ingest import Ingestor
from tests.service.test_backlog49 import quick_retries, wait_for  # noqa: F401 (a fixture)
from tests.service.test_feedback_log import DIM, HashEncoder, feedback

NOT_FINITE = "embedded-as-nan"


class NanEncoder(HashEncoder):
    """Embeds a text holding NOT_FINITE as NaN (a model overflowing on it): no error, a vector the store refuses."""

    def encode(self, texts):
        vectors = super().encode(texts)
        vectors[[NOT_FINITE in t for t in texts]] = np.nan
        return vectors


def test_records_refused_for_their_vectors_alone_in_the_log_do_not_hold_the_tenant_at_its_bound(tmp_path, quick_retries):  # noqa: F811
    """Two records of one tenant whose texts the encoder embeds as NaN (the store refuses the vectors), alone in the log
    and at the tenant's bound: the encoder embeds another text finite (a probe), so the vectors are the texts' own; they
    are set aside after their tries and the tenant's feedback is taken again. Before, a batch whose every record failed
    on its own for a vector was passed over and counted only once other feedback was stored: none could be (the tenant
    was refused for the backlog those rows filled), so its 503 `feedback_backlog` lasted for good."""
    log = FeedbackLog(tmp_path / "log")
    for i in range(2):
        log.append([msgspec.structs.replace(r, chosen=f"{NOT_FINITE} {r.chosen}") for r in feedback(f"u{i}", 0, tenant="t1", n=2)])
    log.close()
    store = Store(str(tmp_path / "db"), "hash", DIM)
    ingest = Ingestor(FeedbackLog(tmp_path / "log", tenant_rows=4), store, NanEncoder(), tries=3)
    try:
        with pytest.raises(TenantBacklog):
            ingest.submit(feedback("good", 0, tenant="t1"))
        wait_for(lambda: ingest.set_aside == 4 and ingest.log.backlog() == (0, 0), timeout=60.0)
        ingest.submit(feedback("good", 0, tenant="t1"))
        wait_for(lambda: store.count_preferences("t1", "good") == 1, timeout=60.0)
        assert len(ingest.dead_letters.names()) == 2
    finally:
        ingest.close()


def test_an_encoder_making_every_vector_nan_sets_nothing_aside(tmp_path, quick_retries):  # noqa: F811
    """The encoder embeds every text as NaN for a while (a broken model: the probe's vector is NaN too): two records
    of a tenant alone in the log are retried, not set aside, and stored once it embeds again."""
    broken = threading.Event()
    broken.set()

    class Broken(HashEncoder):
        def encode(self, texts):
            vectors = super().encode(texts)
            return vectors * np.nan if broken.is_set() else vectors

    log = FeedbackLog(tmp_path / "log")
    for i in range(2):
        log.append(feedback(f"u{i}", 0, tenant="t1"))
    log.close()
    store = Store(str(tmp_path / "db"), "hash", DIM)
    encoder = Broken()
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, encoder, tries=3)
    try:
        wait_for(lambda: len(encoder.calls) >= 12, timeout=60.0)  # well past 3 tries of each
        assert ingest.set_aside == 0 and ingest.log.backlog() == (2, 2)
        broken.clear()
        wait_for(lambda: ingest.log.backlog() == (0, 0), timeout=60.0)
        assert store.count_preferences("t1", "u0") == store.count_preferences("t1", "u1") == 1 and ingest.set_aside == 0
    finally:
        ingest.close()
