"""Every TRL preference form imports and exports back as it came, and Hugging Face `datasets`
loads the exports (JSONL and Parquet) with the columns TRL's DPOTrainer reads."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pluralign.data.io import read_preferences, write_jsonl, write_parquet
from pluralign.data.record import PreferenceError

SYSTEM = {"role": "system", "content": "Answer briefly."}
ASK = {"role": "user", "content": "Tea or coffee?"}
TEA, COFFEE = {"role": "assistant", "content": "Tea."}, {"role": "assistant", "content": "Coffee."}
EXTRA = {"id": "row-1", "score_chosen": 8.5, "score_rejected": 3}
FORMS = {
    # form: (TRL row, the text pluralign's models read: prompt, chosen, rejected)
    "standard/explicit": ({"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", **EXTRA}, ("Tea or coffee?", "Tea.", "Coffee.")),
    "standard/implicit": ({"chosen": "Tea or coffee? Tea, always.", "rejected": "Tea or coffee? Coffee, black.", **EXTRA},
                          ("Tea or coffee?", " Tea, always.", " Coffee, black.")),
    "conversational/explicit": ({"prompt": [SYSTEM, ASK], "chosen": [TEA], "rejected": [COFFEE], **EXTRA},
                                ("system: Answer briefly.\nuser: Tea or coffee?", "Tea.", "Coffee.")),
    "conversational/implicit": ({"chosen": [SYSTEM, ASK, TEA], "rejected": [SYSTEM, ASK, COFFEE], **EXTRA},
                                ("system: Answer briefly.\nuser: Tea or coffee?", "Tea.", "Coffee.")),
}


def trl_file(tmp_path, form: str, users=("ann", "bo")):
    row, _ = FORMS[form]
    rows = [{**row, "user_id": user, "id": f"{user}-{i}", "attributes": {"group": "g1", "age": 41, "vip": True}}
            for i, user in enumerate(users)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def trl_columns(row: dict) -> dict:
    return {k: v for k, v in row.items() if k in ("prompt", "chosen", "rejected", "id", "score_chosen", "score_rejected")}


@pytest.mark.parametrize("form", list(FORMS))
def test_each_trl_form_imports_and_exports_as_it_came(tmp_path, form):
    path, rows = trl_file(tmp_path, form)
    records, _ = read_preferences(path)
    assert [(r.prompt, r.chosen, r.rejected) for r in records] == [FORMS[form][1]] * 2
    assert records[0].trl is not None and records[0].trl.form == form
    assert records[0].attributes == {"group": "g1", "age": "41", "vip": "true"}  # non-string labels accepted
    for name, write in (("out.jsonl", write_jsonl), ("out.parquet", write_parquet)):
        write(records, tmp_path / name)
        again, _ = read_preferences(tmp_path / name)
        assert again == records  # lossless through either file
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [trl_columns(w) for w in written] == [trl_columns(r) for r in rows]  # the form it came in


# in the `datasets` process: the export at `path` as `load_dataset` gives it (builder "json" or "parquet")
LOAD = """
ds = datasets.load_dataset(builder, data_files=path, split="train", cache_dir=cache)
result = {"columns": ds.column_names, "rows": ds.to_list()}
"""


@pytest.mark.parametrize("form", list(FORMS))
def test_datasets_loads_every_export_with_the_columns_dpo_reads(tmp_path, form, hf):
    path, rows = trl_file(tmp_path, form)
    records, _ = read_preferences(path)
    write_jsonl(records, tmp_path / "out.jsonl")
    write_parquet(records, tmp_path / "out.parquet")
    assert "map" not in str(pq.read_schema(tmp_path / "out.parquet").field("attributes").type)
    for builder, name in (("json", "out.jsonl"), ("parquet", "out.parquet")):
        ds = hf.run(LOAD, builder=builder, path=str(tmp_path / name), cache=str(tmp_path / "hf-cache"))
        columns, loaded = ds["columns"], ds["rows"]
        # DPOTrainer reads prompt/chosen/rejected (explicit) or chosen/rejected and extracts the prompt (implicit)
        wanted = {"chosen", "rejected"} | ({"prompt"} if form.endswith("explicit") else set())
        assert wanted <= set(columns) and ("prompt" in columns) == form.endswith("explicit")
        if form.startswith("conversational"):
            assert all(set(m) == {"role", "content"} for m in loaded[0]["chosen"])  # messages, as TRL's chat template wants
        else:
            assert isinstance(loaded[0]["chosen"], str)
        assert [trl_columns(r) for r in loaded] == [trl_columns(r) for r in rows]
        attributes = loaded[0]["attributes"]  # an object in JSON lines, key/value pairs in Parquet
        assert loaded[0]["user_id"] == "ann"
        assert (set(attributes) if builder == "json" else {a["key"] for a in attributes}) == {"group", "age", "vip"}


def test_implicit_rows_need_a_shared_prompt_and_unknown_columns_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"user_id": "u", "chosen": "Yes.", "rejected": "No."}) + "\n")
    with pytest.raises(PreferenceError, match="share no prompt") as info:
        read_preferences(path)
    assert info.value.field == "prompt"
    path.write_text(json.dumps({"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r", "colour": 1}) + "\n")
    with pytest.raises(PreferenceError, match="unknown"):
        read_preferences(path)
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    records, _ = read_preferences(path, default_user="imported")  # TRL datasets carry no user: name one
    assert records[0].user_id == "imported"
