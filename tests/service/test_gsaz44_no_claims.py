"""Session 44 (gsaz44): replicas on a store that makes no pref_id claims (`gs://`, `az://`, `abfss://`:
`pluralign.store.claims.claims_for` gives None), here two real Stores with their feedback logs on one folder, claims
switched off the way `claims_for` does for those stores. Two imports of one id with other content sent to two replicas
are then both acknowledged; the mover that comes second must leave out only that row, not the import's rows of other
ids (acknowledged feedback is never lost), and one id must name one content."""

from __future__ import annotations

import logging

import pytest

from pluralign.store import Store
from pluralign.store import tables as tables_module
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from pluralign.store.tables import StoredPreference
from tests.service.test_feedback_log import HashEncoder
from tests.service.test_store import DIM


@pytest.fixture
def replicas(tmp_path, monkeypatch):
    """Two replicas (Store + Ingestor, each its own feedback log) on one store folder that makes no claims."""
    monkeypatch.setattr(tables_module, "claims_for", lambda uri, options=None: None)  # as for gs://, az://, abfss://
    made = []
    for name in ("one", "two"):
        store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
        assert store.claims is None
        made.append((store, Ingestor(FeedbackLog(tmp_path / f"log-{name}"), store, HashEncoder())))
    yield made
    for _, ingest in made:
        ingest.close()


def rows_of(store: Store) -> dict[str, list[str]]:
    """{pref_id: [chosen of each row under it]} of user u, read from the table's newest version."""
    store.preferences.checkout_latest()
    table = store.preferences.search().where("user_id = 'u'").select(["pref_id", "chosen"]).limit(None).to_arrow().to_pylist()
    held: dict[str, list[str]] = {}
    for row in table:
        held.setdefault(row["pref_id"], []).append(row["chosen"])
    return held


def imported(*rows: tuple[str, str], received_at: float) -> list:
    """Rows of user u an import gave with ids (`rows`: (pref_id, chosen)), received at `received_at`."""
    return [StoredPreference(tenant="t", user_id="u", pref_id=pref_id, prompt="Drink?", chosen=chosen, rejected="None.",
                             kind="comparison", created_at=1_000.0, received_at=received_at) for pref_id, chosen in rows]


def test_the_second_mover_leaves_out_only_the_row_held_with_other_content(replicas, caplog):
    """Replica one stores p-1 ("Tea.") and p-0. Replica two acknowledged an import of p-1 with other content ("Coffee."),
    p-0 as stored (the same row: already stored) and two new ids. Before, its mover found p-1 in the table and left the
    whole import out: p-2 and p-3, acknowledged, were lost, with a warning about an `Idempotency-Key` the import never
    used. Now only p-1's row is left out, logged naming the id and the field that differs, and counted."""
    (one, ingest_one), (two, ingest_two) = replicas
    ingest_one.submit(imported(("p-0", "Same."), ("p-1", "Tea."), received_at=100.0), received_at=100.0)
    ingest_one.flush()
    ingest_two.submit(imported(("p-0", "Same."), ("p-1", "Coffee."), ("p-2", "Juice."), ("p-3", "Water."), received_at=101.0),
                      received_at=101.0)
    with caplog.at_level(logging.WARNING, logger="pluralign.store"):
        ingest_two.flush()
    assert not ingest_two.log.pending
    assert rows_of(one) == {"p-0": ["Same."], "p-1": ["Tea."], "p-2": ["Juice."], "p-3": ["Water."]}  # before: no p-2, p-3
    assert ingest_two.left_out == 1 and ingest_two.moved == 2
    words = " ".join(r.getMessage() for r in caplog.records)
    assert "Idempotency-Key" not in words
    assert "'p-1'" in words and "`chosen`" in words and "'p-0'" not in words, words
