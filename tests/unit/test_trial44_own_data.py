"""A researcher's own preference data (TRL rows with user ids, as Hugging Face `datasets` saves them) through
pluralign's readers and the file protocol: what session trial44 found going wrong on it."""

from __future__ import annotations

import json
import random

from pluralign.data.io import read_rows
from pluralign.data.splits import comparison_key, file_protocol, split_unseen
from tests.service.tiny import tiny_generator_dir  # noqa: F401 (a fixture)
from tests.unit.clitools import cli, write_jsonl


def rows(user: str, n: int, prefers_short: bool = True) -> list[dict]:
    out = []
    for i in range(n):
        short, long = f"Yes, at {i}.", f"Here is a longer answer, number {i}, with the reasons for it."
        out.append({"user_id": user, "prompt": f"When should we meet, option {i}?",
                    "chosen": short if prefers_short else long, "rejected": long if prefers_short else short})
    return out


def test_a_comparison_given_twice_never_lands_in_train_and_test_both():
    """Before: a file holding each row twice (two exports concatenated, a retried import) was split row by row:
    of the 18 test pairs of six users 12 were also training pairs, and `train pal --protocol file` reported
    their accuracy as held-out. A row judged the other way round is the same comparison asked again too."""
    data = [row for user, short in (("ann", True), ("bob", True), ("cat", False), ("émile", False)) for row in rows(user, 8, short)]
    flipped = {**data[3], "chosen": data[3]["rejected"], "rejected": data[3]["chosen"]}
    records, _ = read_rows(data + data + [flipped])
    protocol = file_protocol(records)
    trained = {(r.user_id, comparison_key(r)) for r in protocol.seen.train}
    held_out = [(r.user_id, comparison_key(r)) for r in protocol.seen.val + protocol.seen.test]
    assert held_out and not [key for key in held_out if key in trained]
    validated = {(r.user_id, comparison_key(r)) for r in protocol.seen.val}
    assert not validated & {(r.user_id, comparison_key(r)) for r in protocol.seen.test}
    assert len(protocol.seen.train) + len(held_out) == len(records)
    # without repeats the split is the one it always was: the first records of each user's shuffle to test, by count
    once = file_protocol(read_rows(data)[0])
    assert [len(once.seen.train), len(once.seen.val), len(once.seen.test)] == [20, 4, 8]


def test_a_new_users_query_comparison_is_never_in_their_support_pool():
    """The unseen-user protocol scores a user's query set after fitting them on the first k of their support pool.
    Before: the pool and the query were cut from one shuffled list row by row, so a comparison the user gave twice
    could be both a shot and a query (UKP's unseen workers: 2 of 1,693 query pairs were in the first 50 shots)."""
    records, _ = read_rows(rows("ann", 12) * 2)
    split = split_unseen({"ann": records}, seed=0, min_query=5)
    asked = {comparison_key(r) for r in split.support["ann"]}
    assert split.query["ann"] and not [r for r in split.query["ann"] if comparison_key(r) in asked]
    assert len(split.query["ann"]) + len(split.support["ann"]) == 24
    single = read_rows(rows("ann", 12))[0]
    once = split_unseen({"ann": single}, seed=0, min_query=5)  # without repeats: the split by counts, as before
    random.Random("0:ann").shuffle(single)
    assert (once.query["ann"], once.support["ann"]) == (single[:5], single[5:])


def test_a_user_whose_rows_repeat_a_few_comparisons_is_left_out_as_too_few():
    """Six copies of two comparisons are two comparisons: below the file protocol's five, the user is left out
    (counted with their rows), not split into a test of a training pair."""
    data = rows("ann", 8) + rows("bob", 2) * 3
    protocol = file_protocol(read_rows(data)[0])
    assert {r.user_id for r in protocol.seen.train} == {"ann"} and protocol.left_out == {"bob": 6}


def test_a_nan_margin_is_named_as_nan_in_parquet_and_in_a_json_line(tmp_path, capsys):
    """Before: a Parquet margin of NaN (`datasets.Dataset.from_list` keeps float('nan'); `to_parquet` writes it) was
    "field `margin`: must be >= 0 ... and at most 1e6", the value unsaid; the same rows written with Python's
    `json.dumps` (which writes `NaN`, not JSON) were "line 1: malformed JSON (... invalid character (byte 172))",
    no field named. Now both name `margin` and what is wrong, and `data export` writes nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = rows("ann", 6)
    table = pa.Table.from_pylist([{**row, "margin": float("nan") if i == 1 else 1.0} for i, row in enumerate(data)])
    pq.write_table(table, tmp_path / "prefs.parquet")
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps({**row, "margin": float("nan")}) + "\n" for row in data))
    for name, where, word in (("prefs.parquet", "row 2", "nan"), ("prefs.jsonl", "line 1", "`NaN` is not JSON")):
        out = tmp_path / f"out-{name}.jsonl"
        code, stdout, err = cli(capsys, "data", "export", "--source", name.split(".")[1], "--path", str(tmp_path / name),
                                "--out", str(out))
        assert code == 2 and stdout == "" and "Traceback" not in err, err
        assert f"{where}, field `margin`: " in err and word in err and "null" in err, err
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl", "prefs.parquet"]


def test_a_number_out_of_range_in_a_json_line_is_named_by_its_field(tmp_path, capsys):
    """A number no float holds (`1e400`, valid JSON) in a preference file's line: the error names the line and the field
    holding it, an attribute by its key, and says so. Before (review admin55): "line 2: malformed JSON (Number out of
    range - at `$[...][...]`)", no field named, as if the line were not JSON."""
    data = rows("ann", 6)
    lines = [json.dumps(row) for row in data]
    lines[1] = lines[1][:-1] + ', "attributes": {"segment": "a", "age": 1e400}}'
    (tmp_path / "prefs.jsonl").write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(tmp_path / "prefs.jsonl"), "--out", str(out))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert "line 2, field `attributes.age`: 1e400 is out of range" in err and "malformed" not in err, err
    assert not out.exists()


def test_a_folder_datasets_save_to_disk_wrote_reads_as_its_rows_and_a_dataset_dicts_names_its_splits(tmp_path, capsys, hf):
    """Before: `--path` a `Dataset.save_to_disk` folder (how `datasets` users keep a set between sessions) was
    "--path DIR: is a directory, not a file", and a `DatasetDict`'s the same, its splits unsaid. Now the Dataset's
    folder reads as the rows `to_json` writes (filtered first: save_to_disk writes the kept rows), and the
    DatasetDict's is an error naming its splits and the folder to give; nothing is written."""
    data = [{**row, "prompt": [{"role": "user", "content": row["prompt"]}], "chosen": [{"role": "assistant", "content": row["chosen"]}],
             "rejected": [{"role": "assistant", "content": row["rejected"]}]}
            for user in ("ann", "émile", "用户🙂") for row in rows(user, 6)]
    hf.run("d = datasets.Dataset.from_list(rows).filter(lambda r: r['user_id'] != 'ann')\n"
           "d.save_to_disk(folder + '/saved'); d.to_json(folder + '/saved.jsonl')\n"
           "datasets.DatasetDict({'train': d, 'test': d.select(range(2))}).save_to_disk(folder + '/splits')",
           rows=data, folder=str(tmp_path))
    for path in ("saved", "saved.jsonl"):
        code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(tmp_path / path),
                                "--out", str(tmp_path / f"{path}.out.jsonl"))
        assert code == 0 and '"records":12' in stdout and '"users":2' in stdout, err
    assert (tmp_path / "saved.out.jsonl").read_bytes() == (tmp_path / "saved.jsonl.out.jsonl").read_bytes()
    code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(tmp_path / "splits"),
                            "--out", str(tmp_path / "splits.out.jsonl"))
    assert code == 2 and stdout == "" and not (tmp_path / "splits.out.jsonl").exists(), err
    assert (f"--path {tmp_path / 'splits'}: a Hugging Face DatasetDict saved with save_to_disk (splits: train, test): "
            f"give one split's folder ({tmp_path / 'splits' / 'train'})") in err, err


def test_an_adapter_never_holds_out_a_comparison_it_trains_on(tmp_path, capsys, tiny_generator_dir):  # noqa: F811
    """`train adapter` holds a fifth of the user's comparisons out and reports (and the service's promotion reads) its
    accuracy on them. Before: a user's one comparison given five times (a retried choice, a file concatenated) held
    one copy out and trained on the other four: "held_out": 1, "held_out_acc_after" measured on a trained pair.
    Now a repeat goes with the comparison it repeats: nothing different is left to hold out, so none is."""
    data = write_jsonl(tmp_path / "prefs.jsonl", rows("ann", 1) * 5)
    code, out, err = cli(capsys, "train", "adapter", "--user", "ann", "--data", data, "--base", str(tiny_generator_dir),
                         "--registry", str(tmp_path / "reg"), "--steps", "1", "--batch-size", "2")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["comparisons"], report["held_out"]) == (5, 0), report
