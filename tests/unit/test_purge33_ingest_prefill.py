"""benchmarks/feedback_ingest.py's prefill writes rows of the preferences table's whole schema."""

from __future__ import annotations


def test_feedback_ingest_prefill_fills_every_column_of_the_schema(tmp_path):
    """Before: the prefill's columns lacked `received_at` (added to the schema since), and
    `pa.table(..., schema=)` raised KeyError, so the benchmark never got past its first step.
    (In this process: a fresh interpreter importing the benchmark, LanceDB and the service's keys
    took ~2 s of CPU, 15 s and more under load, for a prefill of 300 rows.)"""
    from benchmarks.feedback_ingest import DIM, MINILM_ID, prefill
    from pluralign.store import Store

    prefill(tmp_path, 300, 7, chunk=200)
    store = Store(str(tmp_path / "lancedb"), MINILM_ID, DIM)
    table = store.preferences.search().select(["received_at", "created_at"]).limit(None).to_arrow()
    assert (table.num_rows, table.column("received_at").null_count) == (300, 0)
