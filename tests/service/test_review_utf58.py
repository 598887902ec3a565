"""review utf58: what utf58's readers of bytes that are not UTF-8 left out. A Parquet file or a `save_to_disk` folder
whose column's name holds such a byte (a byte of its footer or schema changed) stopped the CLI with a bare "'utf-8' codec
can't decode byte 0xff" naming no file, no column (`_rows_one_by_one`, utf58's way round a bad text, read the names
again and raised the same). The real CLI's entry point (`training.cli.main`, in this process as `tests.unit.clitools.cli`
runs it: a subprocess says the same and pays ~1 CPU-s of imports a run) on real files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.unit.clitools import cli

ROWS = {"prompt": ["Hi", "Yo"], "chosen": ["a", "b"], "rejected": ["c", "d"], "user_id": ["u", "u"], "extraZ": ["e", "f"]}


def _damaged(path, data: bytes) -> None:
    assert data.count(b"extraZ") >= 1  # the column's name, where the file keeps it
    path.write_bytes(data.replace(b"extraZ", b"extra\xff"))


def parquet_file(tmp_path):
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.table(ROWS), path, store_schema=False)  # the names in the footer alone (not Arrow's schema too)
    _damaged(path, path.read_bytes())
    return path


def saved_folder(tmp_path):
    """The folder `Dataset.save_to_disk` writes: an Arrow stream file and the state listing it."""
    folder = tmp_path / "saved"
    folder.mkdir()
    table = pa.table(ROWS)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    _damaged(folder / "data-00000-of-00001.arrow", sink.getvalue().to_pybytes())
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    return folder


@pytest.mark.parametrize("written", [parquet_file, saved_folder], ids=["parquet", "save_to_disk"])
def test_a_column_name_that_is_not_utf8_is_refused_naming_the_file(tmp_path, capsys, monkeypatch, written):
    """Before: "pluralign: error: 'utf-8' codec can't decode byte 0xff in position 5: invalid start byte", naming no
    file and no column; --skip-bad skips rows, not a file without readable column names, so it is refused as well."""
    monkeypatch.setenv("PLURALIGN_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.delenv("PLURALIGN_DATA_DIR", raising=False)
    path = written(tmp_path)
    for skip in ([], ["--skip-bad"]):
        code, _, err = cli(capsys, "data", "stats", "--source", "file", "--path", str(path), *skip)
        assert code == 2, err[-3000:]
        assert err.strip().splitlines()[-1].startswith(f"pluralign: error: --path {path}: a column's name is not valid UTF-8 (byte "
                                            "0xff at byte 6 of it: `extra\\xff`)"), err[-3000:]


def test_a_table_naming_a_column_twice_holding_a_text_not_utf8_skips_that_row():
    """`read_rows` of an Arrow table (pyarrow lets two columns share a name; the last one's value is read, as for the
    table's other rows): before, utf58's one-value-at-a-time reading asked for the column by its name and raised
    KeyError 'Field "user_id" exists 2 times in schema' instead of reading the other rows."""
    from pluralign.data.io import read_rows

    prompts = pa.array([b"Hi", b"H\xffo"], pa.binary()).view(pa.string())
    table = pa.Table.from_arrays([prompts, pa.array(["a", "b"]), pa.array(["c", "d"]), pa.array(["u", "u"]), pa.array(["v", "v"])],
                                 names=["prompt", "chosen", "rejected", "user_id", "user_id"])
    records, report = read_rows(table, skip_bad=True)
    assert [(r.prompt, r.user_id) for r in records] == [("Hi", "v")]
    assert (report.skipped, report.errors) == (1, ["row 2, field `prompt`: is not valid UTF-8 (byte 0xff at byte 2 of a text in it)"])
