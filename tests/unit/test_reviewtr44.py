"""Review of session trial44 (repeats split together, NaN margins, `Dataset.save_to_disk` folders): what broke."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from pluralign.data.io import read_preferences, read_rows
from pluralign.data.record import Preference, PreferenceError
from pluralign.data.splits import file_protocol, hold_out, split_unseen
from tests.unit.clitools import cli


def rows(user: str, n: int) -> list[dict]:
    return [{"user_id": user, "prompt": f"When should we meet, option {i}?", "chosen": f"Yes, at {i}.",
             "rejected": f"Here is a longer answer, number {i}."} for i in range(n)]


def asked(record: Preference) -> tuple[str, str, frozenset[str]]:
    """The comparison as the test sees it, apart from the product's `comparison_key`: user, prompt, the two answers."""
    return record.user_id, record.prompt, frozenset((record.chosen, record.rejected))


def test_the_same_two_answers_judged_both_ways_are_one_comparison_in_every_split():
    """trial44's test checked its flipped row with the product's own `comparison_key`, so a key that kept the order
    (chosen, rejected) still passed it. Here each comparison is asked once each way: a user's judgment of the two
    answers never lands on both sides of a split, whichever way round it was given."""
    data = rows("ann", 10)
    both_ways = data + [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in data]
    records, _ = read_rows(both_ways)
    seen = file_protocol(records).seen
    parts = [{asked(r) for r in part} for part in (seen.train, seen.val, seen.test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), parts
    unseen = split_unseen({"ann": records}, seed=0, min_query=5)
    assert unseen.query["ann"] and not {asked(r) for r in unseen.query["ann"]} & {asked(r) for r in unseen.support["ann"]}
    held, rest = hold_out(records, 4)
    assert held and not {asked(r) for r in held} & {asked(r) for r in rest}
    assert file_protocol(read_rows(rows("bob", 2) + rows("ann", 5) * 2)[0]).left_out == {"bob": 2}


@pytest.mark.parametrize("margin", [10**400, -(10**400)])
def test_a_huge_integer_margin_is_a_row_error_not_a_crash(tmp_path, capsys, margin):
    """A JSON integer too large for a float (msgspec reads `1000...0`, 400 digits, as a Python int): trial44's NaN hint
    asked `math.isfinite` of it, an OverflowError, so `data export` ended in a traceback and `Preference(margin=...)`
    raised OverflowError, not the ValueError naming `margin` it documents."""
    lines = [json.dumps(row) for row in rows("ann", 3)]
    lines[1] = lines[1][:-1] + f', "margin": {margin}}}'
    (tmp_path / "prefs.jsonl").write_text("\n".join(lines) + "\n")
    code, stdout, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(tmp_path / "prefs.jsonl"),
                            "--out", str(tmp_path / "out.jsonl"))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert "line 2, field `margin`: must be a number >= 0" in err and "leave it out" not in err, err
    with pytest.raises(ValueError, match="`margin` must be a number"):
        Preference(user_id="ann", prompt="p", chosen="a", rejected="b", margin=margin)
def _arrow_stream(path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def test_a_saved_dataset_with_an_indices_mapping_reads_only_the_rows_it_maps(tmp_path):
    """`datasets` before 2.0 saved a filtered, selected or shuffled Dataset as its whole table (`dataset.arrow`) and an
    indices mapping (`indices.arrow`, listed in state.json's `_indices_data_files`); `load_from_disk` gives the mapped
    rows in the mapped order. trial44's reader ignored the mapping: every row of the table, those filtered out too."""
    data = rows("ann", 6)
    _arrow_stream(tmp_path / "dataset.arrow", pa.Table.from_pylist(data))
    _arrow_stream(tmp_path / "indices.arrow", pa.table({"indices": pa.array([4, 0, 2], pa.uint64())}))
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "dataset.arrow"}],
                                                     "_indices_data_files": [{"filename": "indices.arrow"}]}))
    records, _ = read_preferences(tmp_path)
    assert [r.prompt for r in records] == [data[i]["prompt"] for i in (4, 0, 2)]
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "dataset.arrow"}],
                                                     "_indices_data_files": [{"filename": "../indices.arrow"}]}))
    with pytest.raises(PreferenceError, match="state.json is not the state"):
        read_preferences(tmp_path)


def test_a_file_whose_users_only_repeat_a_few_comparisons_says_so():
    """Before: a user of 8 strict rows, 2 comparisons each given four times, was "no user has 5 or more strict
    comparisons to train on": untrue as a count of the rows the user sees in their file; the repeats went unsaid."""
    data = [{"user_id": "ann", "prompt": f"Where to, option {i % 2}?", "chosen": "North.", "rejected": "South."} for i in range(8)]
    with pytest.raises(ValueError, match=r"^no user has 5 or more strict comparisons to train on \(6 of the 8 strict "
                                         r"records repeat a comparison their user gave before, which counts once\)$"):
        file_protocol(read_rows(data)[0])


def test_a_support_pool_and_what_is_not_held_out_keep_the_shuffle_order():
    """The first k of a new user's support pool are their k-shot set (and `train adapter` scores its held-out pairs
    after `train_pairs[:shots]`). trial44 rebuilt the rest from the repeat groups, each comparison's copies side by
    side: a user whose file holds every row twice got the 2-shot set [A, A], one comparison, where the shuffle gives
    two. What is left after the query (or the held-out pairs) is taken keeps the shuffle's order."""
    records, _ = read_rows(rows("ann", 12) * 2)
    split = split_unseen({"ann": records}, seed=0, min_query=4)
    shuffled = list(records)
    random.Random("0:ann").shuffle(shuffled)
    queried = {asked(r) for r in split.query["ann"]}
    assert split.support["ann"] == [r for r in shuffled if asked(r) not in queried]
    held, rest = hold_out(shuffled, 4)
    assert rest == [r for r in shuffled if asked(r) not in {asked(h) for h in held}]
    seen = file_protocol(records).seen
    assert seen.train == [r for r in shuffled if asked(r) not in {asked(r) for r in seen.test + seen.val}]


def test_a_nan_inside_a_field_is_named_with_that_field_not_a_later_one(tmp_path):
    """trial44 named the first top-level field holding a NaN or infinity itself, but the word of the first constant in
    the line: `"attributes": {"group": NaN}, "margin": Infinity` was "field `margin`: `NaN` is not JSON", a NaN the
    margin does not hold. The field named is the one the first constant is in."""
    (tmp_path / "prefs.jsonl").write_text('{"user_id": "ann", "prompt": "p", "chosen": "a", "rejected": "b", '
                                          '"attributes": {"group": NaN}, "margin": Infinity}\n')
    with pytest.raises(PreferenceError, match=r"line 1, field `attributes`: `NaN` is not JSON"):
        read_preferences(tmp_path / "prefs.jsonl")


def test_an_adapter_that_held_nothing_out_is_kept_with_a_note_saying_why(tmp_path):
    """Since trial44 a user whose comparisons repeat too few different ones (20 retried posts of one choice) gets an
    adapter that held nothing out (`held_out`: 0, `held_out_acc_after`: null), so it is kept, not served. The note
    said only "the result has none of heldout_accuracy, held_out_acc_after, val_acc": an admin could not tell why."""
    from tests.e2e.job_kinds import TEST_KINDS
    from training.jobs.runner import LocalJobRunner, RunnerConfig

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        job = runner.wait(runner.submit("adapter", {"user": "ann", "accuracy": None, "report": {"held_out": 0, "comparisons": 20}}).id)
    finally:
        runner.stop()
    assert job.state == "succeeded" and job.promoted is False, job
    assert job.promotion_note.startswith("kept, not served: the result has none of heldout_accuracy"), job.promotion_note
    assert "held no comparison out" in job.promotion_note and "different" in job.promotion_note, job.promotion_note


def test_an_artifact_the_service_will_not_serve_is_kept_with_its_reason_and_the_next_one_is_compared_with_nothing(tmp_path):
    """`on_promote` raising NotServed (a replica given a population model, operator47): the job is `promoted: false`
    with the reason as its note, promotions.json does not name it, and the next candidate is promoted over nothing."""
    from tests.e2e.job_kinds import TEST_KINDS
    from training.jobs.runner import LocalJobRunner, NotServed, RunnerConfig

    refused: list[str] = []

    def on_promote(job, key):
        if not refused:
            refused.append(job.id)
            raise NotServed("served by this replica alone")

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS, on_promote=on_promote)
    runner.start()
    try:
        kept = runner.wait(runner.submit("adapter", {"user": "ann", "accuracy": 0.9}).id)
        assert runner.promotions.served("adapter/default/ann") is None
        served = runner.wait(runner.submit("adapter", {"user": "ann", "accuracy": 0.5}).id)  # below the one kept
    finally:
        runner.stop()
    assert refused == [kept.id]
    assert kept.state == "succeeded" and kept.promoted is False, kept
    assert kept.promotion_note == "kept, not served: served by this replica alone", kept.promotion_note
    assert served.promoted is True and runner.promotions.served("adapter/default/ann").job_id == served.id
