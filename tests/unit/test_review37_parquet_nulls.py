"""Review session 37: a TRL dataset `datasets` wrote to Parquet (`to_parquet`) and one it wrote to JSON lines
(`to_json`) give the same file through `pluralign data export`: TRL's extra columns with their nulls, in
their order. Before, a Parquet row's null extra column was dropped: a column null in every row (UltraFeedback's
`score_rejected` of a split without scores) was gone from the export, and one null in the first row moved
after pluralign's columns; the JSON lines file of the same dataset kept both."""

from __future__ import annotations

from tests.unit.clitools import cli

ROWS = [  # TRL's standard form with extra columns of each type `datasets` writes: ints, floats, strings, lists, nulls
    {"prompt": "Tea?", "chosen": "Tea.", "rejected": "Coffee.", "id": 1, "prompt_id": None, "score_chosen": 8.5,
     "score_rejected": None, "chosen_rating": None, "chosen_model": ["a", "b"], "rejected_model": None},
    {"prompt": "Cats?", "chosen": "Cats.", "rejected": "Dogs.", "id": 2, "prompt_id": None, "score_chosen": 7.0,
     "score_rejected": None, "chosen_rating": 4, "chosen_model": None, "rejected_model": "m"},
]


# in the `datasets` process (tests/hf_datasets.py, the `hf` fixture): what `load_dataset` reads from `path`
LOAD = """
loaded = datasets.load_dataset(builder, data_files=path, split="train")
result = {"columns": loaded.column_names, "rows": loaded.to_list()}
"""

# `rows` as a Dataset written with `to_json` and `to_parquet`; the rows and columns it holds
WRITE = """
original = datasets.Dataset.from_list(rows)
original.to_json(jsonl)
original.to_parquet(parquet)
result = {"columns": original.column_names, "rows": original.to_list()}
"""


def select_columns(loaded: dict, columns: list[str]) -> list[dict]:
    return [{c: row[c] for c in columns} for row in loaded["rows"]]


def export(hf, capsys, tmp_path, source, fmt: str) -> dict:
    """`pluralign data export` run in this process (store61: in a subprocess each cost ~0.5 CPU-s of imports, checking
    no more), read back by `datasets`."""
    out = tmp_path / f"{fmt}-out.jsonl"
    code, _, err = cli(capsys, "data", "export", "--source", fmt, "--path", str(source), "--user", "u", "--out", str(out))
    assert code == 0, err
    return hf.run(LOAD, builder="json", path=str(out))


def test_a_parquet_dataset_exports_as_its_json_lines_twin(tmp_path, hf, capsys):
    original = hf.run(WRITE, rows=ROWS, jsonl=str(tmp_path / "in.jsonl"), parquet=str(tmp_path / "in.parquet"))
    from_json = export(hf, capsys, tmp_path, tmp_path / "in.jsonl", "jsonl")
    from_parquet = export(hf, capsys, tmp_path, tmp_path / "in.parquet", "parquet")
    assert from_parquet["columns"] == from_json["columns"]  # before: without prompt_id and score_rejected, rejected_model last
    assert from_parquet["rows"] == from_json["rows"]
    assert select_columns(from_json, original["columns"]) == original["rows"]


def test_a_64_bit_unsigned_extra_column_writes_to_parquet_or_is_refused_naming_it(tmp_path, hf, capsys):
    """TRL's extra columns keep integers up to 2**64-1 (the service's bound, `extra_column_problem`). Before:
    `pluralign data export --out x.parquet` of such a row died in a traceback (OverflowError: Arrow infers
    int64). Now a column of integers within uint64 is written as uint64 and reads back as it was; one Arrow
    cannot hold in one type (-1 beside 2**64-1, or past 64 bits) is an error naming the column, nothing written."""
    def run(ids, out):
        source = tmp_path / "in.jsonl"
        source.write_text("".join(f'{{"prompt": "Q{i}?", "chosen": "Yes.", "rejected": "No.", "id": {v}}}\n' for i, v in enumerate(ids)))
        return cli(capsys, "data", "export", "--source", "jsonl", "--path", str(source), "--user", "u", "--out", str(out))

    ids = [2**64 - 1, 1, 2**63]
    code, _, err = run(ids, tmp_path / "ok.parquet")
    assert code == 0, err
    assert [row["id"] for row in hf.run(LOAD, builder="parquet", path=str(tmp_path / "ok.parquet"))["rows"]] == ids
    for bad in ([-1, 2**64 - 1], [2**64]):
        code, _, err = run(bad, tmp_path / "bad.parquet")
        assert code == 2, (code, err)
        # `--out` named first since session trial52 (tests/unit/test_trial52_parquet_forms.py)
        assert err.startswith(f"pluralign: error: --out {tmp_path / 'bad.parquet'}: column `id`") and "Traceback" not in err, err
        assert "JSON lines" in err, err
        assert not (tmp_path / "bad.parquet").exists()
