"""A new user's `datasets` files through `pluralign data`, as session trial60 met them: the `.arrow` file that
`datasets` keeps a set in (`Dataset.cache_files`, a `save_to_disk` folder's `data-00000-of-00001.arrow`)."""

from __future__ import annotations

import json

from tests.unit.clitools import cli


def test_an_arrow_file_datasets_wrote_reads_as_its_rows(tmp_path, capsys, hf):
    """Before: `--path` the `.arrow` file of a set (what `ds.cache_files` names, what `ls` shows in a
    save_to_disk folder) was "line 1: malformed JSON ...; it holds NUL bytes: a binary file, not JSON lines
    (--skip-bad skips bad rows)", and `--skip-bad` then read no row. Now an Arrow file, stream or file format,
    reads as its rows, the same records as the `to_json` of the set."""
    rows = [{"user_id": user, "prompt": f"Question {i}?", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
             "attributes": {"segment": user}} for user in ("ann", "bob") for i in range(3)]
    files = hf.run(
        "d = datasets.Dataset.from_list(rows)\n"
        "d.save_to_disk(folder + '/saved', num_shards=2); d.to_json(folder + '/set.jsonl')\n"
        "import pyarrow as pa\n"
        "with pa.OSFile(folder + '/set.arrowfile', 'wb') as sink, pa.ipc.new_file(sink, d.data.table.schema) as w:\n"
        "    w.write_table(d.data.table)\n"
        "loaded = datasets.load_dataset('json', data_files=folder + '/set.jsonl', split='train', cache_dir=folder + '/cache')\n"
        "result = [f['filename'] for f in loaded.cache_files]",
        rows=rows, folder=str(tmp_path))
    assert len(files) == 1 and files[0].endswith(".arrow"), files
    expected = None
    for path in (tmp_path / "set.jsonl", files[0], tmp_path / "set.arrowfile"):
        out = tmp_path / "out.jsonl"
        code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(path), "--out", str(out))
        assert code == 0 and '"records":6' in stdout and '"users":2' in stdout, err
        expected = expected or out.read_bytes()
        assert out.read_bytes() == expected
        out.unlink()
    shard = tmp_path / "saved" / "data-00000-of-00002.arrow"
    code, stdout, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(shard), "--json")
    assert code == 0 and '"pairs":3' in stdout, err


def test_a_damaged_arrow_file_is_named_as_one(tmp_path, capsys, hf):
    """An `.arrow` file cut short is an error saying it is not a whole Arrow file, not a bad JSON line to skip."""
    hf.run("datasets.Dataset.from_list([{'prompt': 'p', 'chosen': 'a', 'rejected': 'b', 'user_id': 'u'}] * 50)"
           ".save_to_disk(folder + '/saved')", folder=str(tmp_path))
    shard = tmp_path / "saved" / "data-00000-of-00001.arrow"
    cut = tmp_path / "cut.arrow"
    cut.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    code, stdout, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(cut), "--json", "--skip-bad")
    assert code == 2 and stdout == "", err
    assert f"--path {cut}: not a whole Arrow file (truncated or another format)" in err, err
    assert "JSON" not in err, err


def test_attributes_datasets_wrote_as_key_value_pairs_read_back_from_json_lines(tmp_path, capsys, hf):
    """README: an export's Parquet loads in `datasets` (attributes as key/value pairs), and what `datasets` writes back,
    loaded, filtered and saved with `to_json`, imports again. Before: that JSON file was refused at its first line,
    "line 1, field `attributes`: expected an object of labels" (the Parquet reader took the pairs, the JSON lines
    reader did not). Now the pairs read as the labels they are, in a file as from the Parquet."""
    source = tmp_path / "prefs.jsonl"
    source.write_text("".join(json.dumps({"user_id": user, "prompt": f"Q{i}?", "chosen": "Short.", "rejected": "A longer answer.",
                                          "attributes": {"stance": user, "age": 30}}) + "\n"
                              for user in ("ann", "bob") for i in range(3)))
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(source), "--out", str(tmp_path / "x.parquet"))
    assert code == 0, err
    written = hf.run("d = datasets.load_dataset('parquet', data_files=folder + '/x.parquet', split='train', cache_dir=folder + '/c')\n"
                     "d = d.filter(lambda r: r['user_id'] == 'bob'); d.to_json(folder + '/bob.jsonl')\n"
                     "result = open(folder + '/bob.jsonl').readline()", folder=str(tmp_path))
    assert '"attributes":[{"key":' in written, written
    code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(tmp_path / "bob.jsonl"),
                            "--out", str(tmp_path / "bob.out.jsonl"))
    assert code == 0 and '"records":3' in stdout, err
    rows = [json.loads(line) for line in (tmp_path / "bob.out.jsonl").read_text().splitlines()]
    assert [row["attributes"] for row in rows] == [{"stance": "bob", "age": "30"}] * 3


def test_key_value_pairs_that_are_not_labels_are_named(tmp_path, capsys):
    """A list of another shape, or a name given twice among the pairs, is a bad row naming `attributes`."""
    for attributes, problem in (([{"key": "a", "value": "1"}, {"key": "a", "value": "2"}], "`a` given 2 times"),
                                ([{"key": "a", "val": "1"}], "expected an object of labels"),
                                (["a", "b"], "expected an object of labels")):
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"user_id": "u", "prompt": "p", "chosen": "a", "rejected": "b", "attributes": attributes}) + "\n")
        code, stdout, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(path), "--json")
        assert code == 2 and stdout == "" and "line 1, field `attributes`" in err and problem in err, err
