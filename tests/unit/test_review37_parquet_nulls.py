"""Review session 37: a TRL dataset `datasets` wrote to Parquet (`to_parquet`) and one it wrote to JSON lines
(`to_json`) give the same file through `pluralign data export`: TRL's extra columns with their nulls, in
their order. Before, a Parquet row's null extra column was dropped: a column null in every row (UltraFeedback's
`score_rejected` of a split without scores) was gone from the export, and one null in the first row moved
after pluralign's columns; the JSON lines file of the same dataset kept both."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

datasets = pytest.importorskip("datasets")

ROWS = [  # TRL's standard form with extra columns of each type `datasets` writes: ints, floats, strings, lists, nulls
    {"prompt": "Tea?", "chosen": "Tea.", "rejected": "Coffee.", "id": 1, "prompt_id": None, "score_chosen": 8.5,
     "score_rejected": None, "chosen_rating": None, "chosen_model": ["a", "b"], "rejected_model": None},
    {"prompt": "Cats?", "chosen": "Cats.", "rejected": "Dogs.", "id": 2, "prompt_id": None, "score_chosen": 7.0,
     "score_rejected": None, "chosen_rating": 4, "chosen_model": None, "rejected_model": "m"},
]


def export(tmp_path, source, fmt: str):
    out = tmp_path / f"{fmt}-out.jsonl"
    result = subprocess.run([sys.executable, "-m", "training.cli", "data", "export", "--source", fmt, "--path", str(source),
                             "--user", "u", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return datasets.load_dataset("json", data_files=str(out), split="train")


def test_a_parquet_dataset_exports_as_its_json_lines_twin(tmp_path):
    original = datasets.Dataset.from_list(ROWS)
    original.to_json(str(tmp_path / "in.jsonl"))
    original.to_parquet(str(tmp_path / "in.parquet"))
    from_json, from_parquet = export(tmp_path, tmp_path / "in.jsonl", "jsonl"), export(tmp_path, tmp_path / "in.parquet", "parquet")
    assert from_parquet.column_names == from_json.column_names  # before: without prompt_id and score_rejected, rejected_model last
    assert from_parquet.to_list() == from_json.to_list()
    assert from_json.select_columns(original.column_names).to_list() == original.to_list()


def test_a_64_bit_unsigned_extra_column_writes_to_parquet_or_is_refused_naming_it(tmp_path):
    """TRL's extra columns keep integers up to 2**64-1 (the service's bound, `extra_column_problem`). Before:
    `pluralign data export --out x.parquet` of such a row died in a traceback (OverflowError: Arrow infers
    int64). Now a column of integers within uint64 is written as uint64 and reads back as it was; one Arrow
    cannot hold in one type (-1 beside 2**64-1, or past 64 bits) is an error naming the column, nothing written."""
    def run(ids, out):
        source = tmp_path / "in.jsonl"
        source.write_text("".join(f'{{"prompt": "Q{i}?", "chosen": "Yes.", "rejected": "No.", "id": {v}}}\n' for i, v in enumerate(ids)))
        return subprocess.run([sys.executable, "-m", "training.cli", "data", "export", "--source", "jsonl", "--path", str(source),
                               "--user", "u", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)

    ids = [2**64 - 1, 1, 2**63]
    result = run(ids, tmp_path / "ok.parquet")
    assert result.returncode == 0, result.stderr
    assert datasets.load_dataset("parquet", data_files=str(tmp_path / "ok.parquet"), split="train")["id"] == ids
    for bad in ([-1, 2**64 - 1], [2**64]):
        result = run(bad, tmp_path / "bad.parquet")
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert result.stderr.startswith("pluralign: error: column `id`") and "Traceback" not in result.stderr, result.stderr
        assert "JSON lines" in result.stderr, result.stderr
        assert not (tmp_path / "bad.parquet").exists()
