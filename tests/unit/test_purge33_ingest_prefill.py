"""benchmarks/feedback_ingest.py's prefill writes rows of the preferences table's whole schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_feedback_ingest_prefill_fills_every_column_of_the_schema(tmp_path):
    """Before: the prefill's columns lacked `received_at` (added to the schema since), and
    `pa.table(..., schema=)` raised KeyError, so the benchmark never got past its first step."""
    code = ("import sys; from pathlib import Path; from benchmarks.feedback_ingest import prefill, MINILM_ID, DIM;"
            "from pluralign.store import Store; prefill(Path(sys.argv[1]), 300, 7, chunk=200);"
            "s = Store(sys.argv[1] + '/lancedb', MINILM_ID, DIM);"
            "t = s.preferences.search().select(['received_at', 'created_at']).limit(None).to_arrow();"
            "print(t.num_rows, t.column('received_at').null_count)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["300", "0"], done.stdout
