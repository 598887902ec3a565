"""Session user42: a Parquet file whose TRL extra column is Arrow's `arrow.json` type (Hugging Face `datasets`
writes its `Json` feature so: a column holding a number in one row and text in another, as an export of rows
imported with `score_chosen` 8.0 and "high" gives) with a null in a row that has no value there. Before,
`pluralign data import --source parquet` of such a file, loaded and saved with `to_parquet`, died in a
traceback (`TypeError: a bytes-like object is required, not 'NoneType'`): the null was decoded as JSON text."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pluralign.data.io import read_preferences


def test_a_null_in_a_json_extra_column_reads_as_a_null_of_that_column(tmp_path):
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.table({
        "prompt": ["Tea?", "Cats?"], "chosen": ["Tea.", "Cats."], "rejected": ["Coffee.", "Dogs."], "user_id": ["u", "u"],
        "score_chosen": pa.array(["8.0", None], pa.json_()),
    }), path)
    records, report = read_preferences(path)
    assert [r.prompt for r in records] == ["Tea?", "Cats?"] and report.skipped == 0
    assert [r.trl.extra.get("score_chosen") for r in records] == [8.0, None]
