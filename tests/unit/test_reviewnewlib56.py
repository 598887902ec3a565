"""reviewnewlib56: what newlib56's preference-file hints (pandas' whole-table JSON, CSV headers) misread, driven as a
user runs the `pluralign` commands (in-process CLI, tests/unit/clitools.py)."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli, write_jsonl

GOOD = [{"user_id": "ann", "prompt": f"Tea or coffee, {i}?", "chosen": "Tea.", "rejected": "Coffee, please."} for i in range(3)]


def test_a_row_whose_answers_are_single_messages_is_a_bad_row_naming_chosen_not_a_pandas_table(capsys, tmp_path):
    """A conversational row whose chosen and rejected are one message object each, not a list of them (a common slip:
    TRL's form is a list), was named by newlib56's whole-table check as "one JSON object holding a whole table, as
    pandas' DataFrame.to_json writes it with orient='columns'" at line 4 of a file whose other rows read, without the
    --skip-bad hint. It is one bad row, named by its field as before newlib56."""
    slip = {"user_id": "ann", "prompt": [{"role": "user", "content": "Milk or lemon?"}],
            "chosen": {"role": "assistant", "content": "Lemon."}, "rejected": {"role": "assistant", "content": "Milk."}}
    path = write_jsonl(tmp_path / "chat prefs.jsonl", [*GOOD, slip])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--json")
    assert code == 2, (code, out, err)
    assert "line 4, field `chosen`: expected a string or a non-empty list of messages" in err, err
    assert "pandas" not in err and "(--skip-bad skips bad rows)" in err, err
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--skip-bad", "--json")
    assert (code, json.loads(out.strip().splitlines()[-1])["pairs"]) == (0, 3), err
    assert "skipped 1 bad row" in err and "line 4, field `chosen`" in err, err


def test_null_user_ids_as_datasets_writes_them_are_read_in_the_one_step_decoding(monkeypatch, tmp_path):
    """newlib56 took a JSON line's `"user_id": null` as the default user's, but only in the row-by-row reader: the
    one-step typed decoding (`_line_record`, what keeps an import's 8,000 lines short while the interpreter lock is
    held) refused the null, so every such line was decoded twice and read field by field: 40,000 of them took 1.82 s
    against 0.38 s without the column (load 12, 2 cores). Now none goes to the row reader, and the records are its."""
    from pluralign.data import io

    rows = [{"user_id": None if i % 2 else "ann", "prompt": f"Tea or coffee, {i}?", "chosen": "Tea.", "rejected": f"Coffee {i}."}
            for i in range(40)]
    path = tmp_path / "prefs.jsonl"  # as Dataset.from_list(rows).to_json(path) writes them (test_newlib56_cli runs it)
    path.write_text("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows))
    slow = []
    row_reader = io.row_to_preference
    monkeypatch.setattr(io, "row_to_preference", lambda *a, **k: slow.append(a[1]) or row_reader(*a, **k))
    records, _ = io.read_preferences(path, default_user="carol")
    assert slow == [] and [r.user_id for r in records] == ["ann", "carol"] * 20, slow[:5]
    monkeypatch.setattr(io, "row_to_preference", row_reader)
    assert records == [io.row_to_preference(row, i, "carol") for i, row in enumerate(rows, 1)]


def test_a_json_line_whose_text_lists_chosen_and_rejected_is_not_named_a_csv_header(capsys, tmp_path):
    """The CSV-header hint split any malformed line at its commas: a JSON row whose prompt lists the words "chosen,
    rejected" (an annotation guide's question) with a NaN margin, as Python's json.dumps writes one, was named "a CSV
    file (its header row names `chosen` and `rejected`)" at line 2, not skippable, rather than its `NaN`; rows joined
    on one line (`curl -d @FILE`) likewise. A JSON object is no CSV header."""
    question = {"user_id": "ann", "prompt": "Mark each reply: good, chosen, rejected, unsure. Which fits?",
                "chosen": "Chosen.", "rejected": "Unsure."}
    path = write_jsonl(tmp_path / "guide.jsonl", [GOOD[0], json.dumps({**question, "margin": float("nan")}), *GOOD[1:]])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--json")
    assert code == 2 and "line 2, field `margin`: `NaN` is not JSON" in err and "CSV" not in err, err
    assert "(--skip-bad skips bad rows)" in err, err
    joined = write_jsonl(tmp_path / "joined.jsonl", [json.dumps(question) + json.dumps(GOOD[0])])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", joined, "--json")
    assert code == 2 and "several JSON objects on one line" in err and "CSV" not in err, err


def test_a_nan_user_id_of_a_frame_s_records_is_named_as_pandas_missing_value_not_as_float_ids():
    """A DataFrame of text user ids with one missing (NaN: pandas' missing value, as read_csv gives a blank cell) read
    as its records (`read_rows(df.to_dict('records'))`) was told "a float, nan, ...: pandas makes a column of int ids
    holding a missing one floats; keep them whole with df['user_id'].astype('Int64')", which fails on text ids. It is
    named as pandas' missing value, with how it is read as no user (the frame itself, or None)."""
    import pandas as pd

    from pluralign.data.io import read_rows
    from pluralign.data.record import PreferenceError

    frame = pd.DataFrame([{"user_id": user, **{k: v for k, v in row.items() if k != "user_id"}}
                          for user, row in zip(["ann", None, "bob"], GOOD, strict=True)])
    frame["user_id"] = frame["user_id"].astype(object).where(frame["user_id"].notna(), float("nan"))
    with pytest.raises(PreferenceError) as caught:
        read_rows(frame.to_dict("records"), default_user="carol")
    message = str(caught.value)
    assert message.startswith("row 2, field `user_id`: NaN, pandas' missing value") and "astype('Int64')" not in message
    assert "read_rows(df)" in message, message
    assert [r.user_id for r in read_rows(frame, default_user="carol")[0]] == ["ann", "carol", "bob"]  # what it says


def test_group_accuracy_reads_a_list_of_0_d_tensors_by_value():
    """newlib56 read a tensor of group labels by value, and docs/library.md says labels "may be lists, numpy arrays or
    tensors, read by value"; a list of the tensor's elements (`list(t)`, `[batch.group[i] for i in ...]`) still keyed
    each comparison by its own 0-d tensor, which hashes by identity: four groups of one comparison for two groups, and
    the worst one a comparison, without a word. `macro` and `user_accuracy` read such a list by value already."""
    import numpy as np
    import torch

    from pluralign.evaluation import group_accuracy, macro

    correct = [1.0, 0.0, 1.0, 1.0]
    labels = torch.tensor([0, 1, 0, 1])
    assert group_accuracy(correct, list(labels)) == ({0: 1.0, 1: 0.5}, {0: 2, 1: 2})
    assert group_accuracy(correct, list(np.array(["a", "b", "a", "b"]))) == ({"a": 1.0, "b": 0.5}, {"a": 2, "b": 2})
    assert macro(correct, list(labels)) == 0.75


def test_range_half_width_names_a_level_that_is_not_a_share_as_percentile_interval_does():
    """newlib56 made percentile_interval name a `level` given in percent (95); its sibling range_half_width, which
    docs/library.md names in the same sentence for the gap's interval, still gave numpy's 'Quantiles must be in the
    range [0, 1]' for 95, and took 1.0 and 0 (the largest and the smallest range: no interval)."""
    import numpy as np

    from pluralign.fairness.metrics import range_half_width

    resampled, estimates = np.random.default_rng(0).random((2, 50)), np.array([0.5, 0.5])
    for level in (95, 1.0, 0, float("nan"), True):
        with pytest.raises(ValueError, match=r"`level` must be a share in \(0, 1\) \(0.95 for 95%\), got "):
            range_half_width(resampled, estimates, level=level)
    assert 0 < range_half_width(resampled, estimates, level=0.95) < 1
