"""Review of trial60 (`.arrow` files `datasets` keeps a set in, attributes as key/value pairs): what its tests did
not try. The pairs read from a Parquet or Arrow file (or rows in memory) by other rules than from JSON lines; a
`save_to_disk` folder's shard cut short said in pyarrow's words; a filtered set's indices file read as bad rows."""

from __future__ import annotations

import json

import pytest

from pluralign.data.io import PreferenceError, read_rows
from tests.unit.clitools import cli

ROW = {"user_id": "u", "prompt": "Q?", "chosen": "Short.", "rejected": "A longer answer."}
PAIRS = (
    # a name given twice: README says a bad row; before, a Parquet file or `read_rows` kept the last silently
    ([{"key": "a", "value": "1"}, {"key": "a", "value": "2"}], "`a` given 2 times"),
    # a struct of other fields: before, KeyError 'value' and a traceback from `data stats`
    ([{"key": "a", "val": "1"}], "expected an object of labels"),
    # texts of two characters: before, read as the labels {"a": "b", "c": "d"}
    (["ab", "cd"], "expected an object of labels"),
    # a text of another length: before, "dictionary update sequence element #0 has length 3; 2 is required"
    (["abc"], "expected an object of labels"),
)


@pytest.mark.parametrize(("attributes", "problem"), PAIRS)
def test_key_value_pairs_read_by_one_rule_in_json_lines_parquet_and_rows(tmp_path, capsys, hf, attributes, problem):
    """The same row written by `datasets` as JSON lines, as Parquet and as `save_to_disk`, and given to `read_rows`:
    each is the same bad row naming `attributes`, as trial60 made the JSON line."""
    hf.run("d = datasets.Dataset.from_list([row])\n"
           "d.to_json(folder + '/set.jsonl'); d.to_parquet(folder + '/set.parquet'); d.save_to_disk(folder + '/saved')",
           row=dict(ROW, attributes=attributes), folder=str(tmp_path))
    for path in ("set.jsonl", "set.parquet", "saved"):
        code, stdout, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(tmp_path / path), "--json")
        assert code == 2 and stdout == "", (path, stdout, err)
        assert "row 1, field `attributes`" in err or "line 1, field `attributes`" in err, (path, err)
        assert problem in err and "Traceback" not in err, (path, err)
    with pytest.raises(PreferenceError, match=r"row 1, field `attributes`") as caught:
        read_rows([dict(ROW, attributes=attributes)])
    assert problem in str(caught.value)


def test_an_arrow_map_of_attributes_still_reads_as_labels(tmp_path, capsys):
    """Older files' attributes, an Arrow map, read as labels, a name given twice in one a bad row as among pairs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = pa.map_(pa.string(), pa.string())
    for name, pairs in (("good", [("stance", "pro"), ("age", "30")]), ("twice", [("a", "1"), ("a", "2")])):
        table = pa.table({**{k: [v] for k, v in ROW.items()}, "attributes": pa.array([pairs], type=kind)})
        pq.write_table(table, tmp_path / f"{name}.parquet")
    out = tmp_path / "out.jsonl"
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(tmp_path / "good.parquet"), "--out", str(out))
    assert code == 0, err
    assert json.loads(out.read_text())["attributes"] == {"stance": "pro", "age": "30"}
    code, _, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(tmp_path / "twice.parquet"), "--json")
    assert code == 2 and "row 1, field `attributes`: `a` given 2 times" in err, err


def test_a_saved_folder_whose_shard_is_cut_short_names_the_shard(tmp_path, capsys, hf):
    """Before: "--path saved: Expected to be able to read 1056 bytes for message body, got 88", pyarrow's OSError,
    naming neither the shard nor the problem (trial60 caught it for one `.arrow` file, not for a folder's)."""
    hf.run("datasets.Dataset.from_list([row] * 50).save_to_disk(folder + '/saved')", row=ROW, folder=str(tmp_path))
    shard = tmp_path / "saved" / "data-00000-of-00001.arrow"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    code, stdout, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(tmp_path / "saved"), "--json")
    assert code == 2 and stdout == "", err
    assert "data-00000-of-00001.arrow: not a whole Arrow file (truncated or another format)" in err, err


def test_a_filtered_sets_indices_file_is_named_as_one(tmp_path, capsys, hf):
    """A filtered (or shuffled, selected) set's `cache_files` names two files: the rows it was loaded with, and an
    indices mapping (`cache-*.arrow`, one column `indices`), the newest, which a user takes for the filtered set. Before,
    that file was "row 1, field `chosen`: missing required field (--skip-bad skips bad rows)", and skipping read none."""
    rows = [dict(ROW, user_id=f"u{i % 2}", prompt=f"Q{i}?") for i in range(6)]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    files = hf.run("d = datasets.load_dataset('json', data_files=folder + '/set.jsonl', split='train', cache_dir=folder + '/c')\n"
                   "result = [f['filename'] for f in d.filter(lambda r: r['user_id'] == 'u0').cache_files]", folder=str(tmp_path))
    assert len(files) == 2, files
    code, stdout, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", files[1], "--json", "--skip-bad")
    assert code == 2 and stdout == "", err
    assert "an indices mapping" in err and "save_to_disk" in err and "chosen" not in err, err


def test_a_long_name_given_twice_is_named_shortened(tmp_path, capsys):
    """The name given twice is quoted in 64 characters at most, as a field's name is (`PreferenceError`); before, whole:
    an import body's 100,000-character name given twice made a 400 of 200,000 characters."""
    name = "n" * 100_000
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(dict(ROW, attributes=[{"key": name, "value": "1"}, {"key": name, "value": "2"}])) + "\n")
    code, _, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(path), "--json")
    assert code == 2 and "given 2 times among its key/value pairs" in err, err[:300]
    assert len(err) < 400, len(err)
