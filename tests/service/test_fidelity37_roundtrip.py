"""Fidelity session 37: a user's preferences go through the service without loss. A TRL dataset written
by Hugging Face `datasets` (`to_json`), imported, then exported (`?format=preferences`) and read back by
`datasets.load_dataset("json")` has the original's columns with the original's values: conversational
rows stay message lists, the implicit-prompt form stays implicit, TRL's other columns (`id`,
`score_chosen`, `chosen_model`, ...) come back. Before, the service kept only each row's text."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import field_named, start_service

# the columns a preference file adds to a TRL row (pluralign's: `pluralign.data.io.preference_row`)
OWN_COLUMNS = {"user_id", "margin", "tie", "source", "created_at", "attributes", "pref_id"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("f37-roundtrip"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


STANDARD = [  # TRL's standard explicit form with its extra columns (UltraFeedback's binarized columns)
    {"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", "id": 1, "prompt_id": "p-1",
     "score_chosen": 8.5, "score_rejected": 3.0, "chosen_model": "model-a", "rejected_model": "model-b"},
    {"prompt": "Cats or dogs?", "chosen": "Cats, quietly.", "rejected": "Dogs!", "id": 2, "prompt_id": "p-2",
     "score_chosen": 7.0, "score_rejected": None, "chosen_model": "model-c", "rejected_model": None},
]
CONVERSATIONAL = [  # explicit prompt, message lists, with extras
    {"prompt": [turn("system", "Be brief."), turn("user", "Tea or coffee?")],
     "chosen": [turn("assistant", "Tea.")], "rejected": [turn("assistant", "Coffee, lots of it.")], "id": "a", "score_chosen": 9.0},
    {"prompt": [turn("user", "Sea or hills?")],
     "chosen": [turn("assistant", "Hills.")], "rejected": [turn("assistant", "Sea.")], "id": "b", "score_chosen": 4.5},
]
IMPLICIT = [  # whole conversations sharing their prompt, no `prompt` column
    {"chosen": [turn("user", "Rain or sun?"), turn("assistant", "Rain, for the garden.")],
     "rejected": [turn("user", "Rain or sun?"), turn("assistant", "Sun.")], "chosen_rating": 5},
    {"chosen": [turn("user", "Tabs or spaces?"), turn("assistant", "Spaces.")],
     "rejected": [turn("user", "Tabs or spaces?"), turn("assistant", "Tabs.")], "chosen_rating": 2},
]
IMPLICIT_STANDARD = [  # the standard form's implicit prompt: texts sharing a prefix
    {"chosen": "Q: Red or blue? A: Red.", "rejected": "Q: Red or blue? A: Blue."},
    {"chosen": "Q: Up or down? A: Up.", "rejected": "Q: Up or down? A: Down, always."},
]


# in the `datasets` process: `rows` as a Dataset written with `to_json` to `sent`
WRITE = "datasets.Dataset.from_list(rows).to_json(sent)"
# in the `datasets` process: the original Dataset and the one `load_dataset("json")` reads from `back`, as
# {"columns": column_names, "rows": to_list() (back's: of the original's columns), "features": features.to_dict()}
READ = """
original = datasets.Dataset.from_list(rows)
back = datasets.load_dataset("json", data_files=back, split="train")
result = {"original": {"columns": original.column_names, "rows": original.to_list(), "features": original.features.to_dict()},
          "back": {"columns": back.column_names, "rows": back.select_columns(original.column_names).to_list(),
                   "features": back.features.to_dict()}}
"""


def round_trip(svc, hf, tmp_path, user: str, rows: list[dict]) -> tuple[dict, dict]:
    """(original dataset, dataset read from the service's export) of `rows` sent as `datasets` writes them,
    each as READ gives it."""
    sent = tmp_path / f"{user}-in.jsonl"
    hf.run(WRITE, rows=rows, sent=str(sent))
    with svc.client("acme") as c:
        r = c.post(f"/v1/users/{user}/import", content=sent.read_bytes())
        assert r.status_code == 201, r.text
        export = c.get(f"/v1/users/{user}/export", params={"format": "preferences"})
        assert export.status_code == 200, export.text
    back = tmp_path / f"{user}-out.jsonl"
    back.write_bytes(export.content)
    read = hf.run(READ, rows=rows, back=str(back))
    return read["original"], read["back"]


@pytest.mark.parametrize("rows", [STANDARD, CONVERSATIONAL, IMPLICIT, IMPLICIT_STANDARD],
                         ids=["standard", "conversational", "implicit", "implicit-standard"])
def test_a_datasets_file_comes_back_from_the_export_as_it_went_in(svc, hf, tmp_path, rows):
    """Before: the conversational rows came back as one text each (`"system: Be brief.\\nuser: ..."`),
    the implicit ones with a `prompt` column, and `id`, `score_chosen`, ... not at all."""
    user = f"f37-{len(rows[0])}-{'conv' if isinstance(rows[0]['chosen'], list) else 'text'}-{'prompt' in rows[0]}"
    original, back = round_trip(svc, hf, tmp_path, user, rows)
    assert set(original["columns"]) <= set(back["columns"]), (original["columns"], back["columns"])
    assert set(back["columns"]) - set(original["columns"]) <= OWN_COLUMNS, back["columns"]
    assert back["rows"] == original["rows"]  # back's rows: of the original's columns
    assert back["features"].keys() >= original["features"].keys()
    for name in original["columns"]:  # the same types: messages stay lists of {role, content}, scores floats
        assert back["features"][name] == original["features"][name], (name, back["features"][name], original["features"][name])


def test_the_models_still_read_the_text(svc, hf, tmp_path):
    """The stored prompt/chosen/rejected stay the text the models read (the preferences page shows them)."""
    round_trip(svc, hf, tmp_path, "f37-text", CONVERSATIONAL[:1])
    with svc.client("acme") as c:
        (stored,) = c.get("/v1/users/f37-text/preferences").json()["data"]
    assert (stored["prompt"], stored["chosen"], stored["rejected"]) == ("system: Be brief.\nuser: Tea or coffee?", "Tea.", "Coffee, lots of it.")


def test_an_exported_file_imports_again_unchanged(svc, hf, tmp_path):
    """The export of an import, imported for another user and exported again, is the same file (but for the user)."""
    round_trip(svc, hf, tmp_path, "f37-again", IMPLICIT + [])
    with svc.client("acme") as c:
        first = c.get("/v1/users/f37-again/export", params={"format": "preferences"}).content
        assert c.post("/v1/users/f37-again2/import", content=first.replace(b'"f37-again"', b'"f37-again2"')).status_code == 201
        second = c.get("/v1/users/f37-again2/export", params={"format": "preferences"}).content
    assert second == first.replace(b'"f37-again"', b'"f37-again2"')


@pytest.mark.parametrize(("column", "value", "problem"), [
    ("chosen_model", "m" * 2000, "bytes"),
    ("id", [[[[["deep"]]]]], "nested"),
    ("prompt_id", 2**70, "past 64 bits"),  # before: a 500 (the feedback log's msgpack refused it)
])
def test_an_extra_column_past_its_bounds_is_a_400_naming_it(svc, column, value, problem):
    """TRL's extra columns are kept, so they are bounded: a value past `MAX_EXTRA_BYTES` encoded or nested past
    `MAX_EXTRA_DEPTH` is a 400 naming `line N.<column>`, nothing of the body stored."""
    good = {"prompt": "Milk?", "chosen": "Yes.", "rejected": "No."}
    with svc.client("acme") as c:
        r = c.post("/v1/users/f37-big/import", content=json.dumps(good) + "\n\n" + json.dumps({**good, column: value}))
        assert r.status_code == 400, r.text
        assert field_named(r) == f"line 3.{column}", r.json()
        assert problem in r.text, r.text
        assert c.get("/v1/users/f37-big/preferences").json().get("total", 0) == 0


def test_a_full_delete_leaves_nothing_of_the_kept_columns(svc, hf, tmp_path):
    """The TRL form is in the user's own rows: a DELETE removes it, from the table and every file of the data folder."""
    marker = "model-f37-marker-zq"
    rows = [{**CONVERSATIONAL[0], "chosen_model": marker}]
    round_trip(svc, hf, tmp_path, "f37-gone", rows)
    data = svc.runtime.settings.data_path
    holding = lambda: [p for p in data.rglob("*") if p.is_file() and marker.encode() in p.read_bytes()]  # noqa: E731
    assert holding()  # kept, so the check below can fail
    with svc.client("acme") as c:
        assert c.delete("/v1/users/f37-gone").status_code == 200
        assert c.get("/v1/users/f37-gone/export", params={"format": "preferences"}).status_code == 404
    table = svc.runtime.store.preferences.to_arrow()
    assert not any(marker in (t or "") for t in table.column("trl").to_pylist())
    assert not holding(), holding()


def test_a_schema_2_store_gains_the_column_on_open_and_its_rows_export_as_before(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A data folder schema 2 wrote (no `trl` column, tables marked 2) is upgraded on open: the column is
    added (null in its rows, which export as text, as before), the mark is 3, and new imports keep their form."""
    import lancedb

    from pluralign.store import SCHEMA_VERSION

    data = tmp_path / "data"
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    with server, service.client("acme") as c:
        assert c.post("/v1/users/old/import", content=json.dumps(STANDARD[0])).status_code == 201
        before = c.get("/v1/users/old/export", params={"format": "preferences"}).json()
    db = lancedb.connect(str(service.runtime.settings.data_path / "lancedb"))
    prefs = db.open_table("preferences")
    prefs.drop_columns(["trl"])  # as schema 2 wrote it
    for name in db.list_tables().tables:
        table = db.open_table(name)
        if (table.schema.metadata or {}).get(b"schema_version"):
            table.to_lance().update_schema_metadata({"schema_version": "2"})
    assert "trl" not in db.open_table("preferences").schema.names
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    with server, service.client("acme") as c:
        table = db.open_table("preferences")
        assert "trl" in table.schema.names and table.schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode() == b"3"
        assert table.to_arrow().column("trl").to_pylist() == [None]
        old = c.get("/v1/users/old/export", params={"format": "preferences"}).json()
        # schema 2 kept no TRL column of the row: it exports as before, its text and pluralign's columns
        assert old == {k: v for k, v in before.items() if k in {"prompt", "chosen", "rejected"} | OWN_COLUMNS} | {"pref_id": old["pref_id"]}
        assert "id" in before and "id" not in old
        assert c.post("/v1/users/new/import", content=json.dumps(CONVERSATIONAL[0])).status_code == 201
        new = c.get("/v1/users/new/export", params={"format": "preferences"}).json()
        assert (new["prompt"], new["id"], new["score_chosen"]) == (CONVERSATIONAL[0]["prompt"], "a", 9.0)
