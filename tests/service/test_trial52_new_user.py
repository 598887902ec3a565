"""Session trial52: a new user's trial with the tools people already use (the `openai` client, Hugging Face
`datasets`, httpx). Each test is a defect found then, driven as that user drove it."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("trial52"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def test_a_users_export_rewritten_by_datasets_imports_again_into_that_user_as_already_stored(svc, hf, tmp_path):
    """A user's preference file mixing forms (a conversational implicit-prompt row, a standard row with TRL's
    `score_chosen`/`score_rejected`, a plain row), loaded with `datasets` and written back with `to_json` (to filter
    or edit it), then imported into the same user again: every row is one the user holds under its `pref_id`, so
    nothing is stored twice (`already_stored`). `datasets` gives every row every column some row has, so the rows
    without TRL's score columns came back with `"score_chosen": null`: that was taken for another form of the row,
    a 409 `pref_id_conflict` naming `line 1.pref_id`, and nothing imported."""
    implicit = {"chosen": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "user", "content": "Sky colour?"}, {"role": "assistant", "content": "Green."}]}
    scored = {"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", "score_chosen": 9.0, "score_rejected": 2.0}
    body = "\n".join(json.dumps(row) for row in (implicit, scored)).encode()
    with svc.client("acme") as c:
        first = c.post("/v1/users/rt52/import", content=body)
        assert first.status_code == 201, first.text
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "rt52", "prompt": "Milk?", "chosen": "Yes.",
                                            "rejected": "No."}).status_code == 201
        export = c.get("/v1/users/rt52/export", params={"format": "preferences"})
        assert export.status_code == 200, export.text
    (tmp_path / "export.jsonl").write_bytes(export.content)
    rewritten = tmp_path / "rewritten.jsonl"
    hf.run("datasets.load_dataset('json', data_files=src, split='train').to_json(out)",
           src=str(tmp_path / "export.jsonl"), out=str(rewritten))
    assert b'"score_chosen":null' in rewritten.read_bytes()  # what `datasets` writes for the rows without it
    ids = [json.loads(line)["pref_id"] for line in export.content.splitlines()]
    with svc.client("acme") as c:
        again = c.post("/v1/users/rt52/import", content=rewritten.read_bytes())
        assert again.status_code == 201, again.text  # before: 409 `line 1.pref_id`, "another form of its TRL columns"
        assert again.json()["stored"] == [] and sorted(again.json()["already_stored"]) == sorted(ids), again.text
        assert c.get("/v1/users/rt52/export", params={"format": "preferences"}).content == export.content  # held as it was


def test_a_gzip_file_sent_as_an_import_body_is_named_as_one(svc, tmp_path):
    """Hugging Face datasets ship as `.jsonl.gz` (Anthropic's HH-RLHF; `Dataset.to_json(path, compression="gzip")`),
    which the `pluralign` commands read as they are. Sent as the import's body (`curl --data-binary @train.jsonl.gz`),
    it was a 400 saying only "it holds NUL bytes: a binary file, not JSON lines"; now the 400 names `line 1` and says
    it is gzip-compressed and what to send instead, nothing stored."""
    import gzip

    rows = [{"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: It is 4.", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: It is 5."}]
    body = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    with svc.client("acme") as c:
        r = c.post("/v1/users/gz52/import", content=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "line 1", r.text
        message = r.json()["error"]["message"]
        assert "gzip" in message and "gunzip" in message and "pluralign data import" in message, message  # before: "a binary file"
        assert c.get("/v1/users/gz52").status_code == 404  # nothing of it stored


def test_a_users_export_whose_scores_datasets_rounds_imports_again_into_that_user_as_already_stored(svc, hf, tmp_path):
    """`datasets`' `to_json` writes floats with 10 decimals (pandas' `double_precision`): TRL's `score_chosen`
    0.123456789012345 comes back 0.123456789, and 1e-12 as 0.0. The user's export so rewritten, imported into them
    again, was a 409 naming `line 1.pref_id`, "another form of its TRL columns" (the form was the same); numbers of
    TRL's extra columns are now compared to those 10 decimals, so its rows are the ones held (`already_stored`)."""
    rows = [{"prompt": "Q1?", "chosen": "a", "rejected": "b", "score_chosen": 0.123456789012345, "score_rejected": 1e-12},
            {"prompt": "Q2?", "chosen": "a", "rejected": "b", "score_chosen": 7.5, "score_rejected": 2}]
    with svc.client("acme") as c:
        assert c.post("/v1/users/sc52/import", content="\n".join(map(json.dumps, rows))).status_code == 201
        export = c.get("/v1/users/sc52/export", params={"format": "preferences"}).content
    (tmp_path / "export.jsonl").write_bytes(export)
    rewritten = tmp_path / "rewritten.jsonl"
    hf.run("datasets.load_dataset('json', data_files=src, split='train').to_json(out)",
           src=str(tmp_path / "export.jsonl"), out=str(rewritten))
    assert b'"score_chosen":0.123456789,' in rewritten.read_bytes()  # what `datasets` writes
    with svc.client("acme") as c:
        again = c.post("/v1/users/sc52/import", content=rewritten.read_bytes())
        assert again.status_code == 201, again.text  # before: 409 `line 1.pref_id`
        assert again.json()["stored"] == [] and len(again.json()["already_stored"]) == 2, again.text
        assert c.get("/v1/users/sc52/export", params={"format": "preferences"}).content == export  # the held values kept
        other = json.loads(export.splitlines()[0]) | {"score_chosen": 0.1234}  # a score really changed is still a 409
        refused = c.post("/v1/users/sc52/import", content=json.dumps(other))
        assert refused.status_code == 409 and refused.json()["error"]["param"] == "line 1.pref_id", refused.text
        # the column that differs is named, not "another form of its TRL columns" (the form is the same)
        assert "another `score_chosen` (one of TRL's columns)" in refused.json()["error"]["message"], refused.text


def test_scores_datasets_writes_otherwise_than_rounding_to_10_decimals_import_again_as_already_stored(svc, hf, tmp_path):
    """Review of trial52: `to_json` does not write Python's `round(v, 10)`. pandas' writer (ujson's
    `Buffer_AppendDoubleUnchecked`) rounds `(v - whole) * 1e10` in floating point, so a decimal whose 11th place is
    5 may go up where `round` goes down (0.12345678915 written 0.1234567892, `round` 0.1234567891; 0.99999999995
    written 1.0, or 0.9999999999 as here: `datasets` reads a file with `"attributes": {}` with pandas' own, imprecise,
    parser); it writes a
    number past 1e16 to 10 significant digits (1.2345678912345e20 as 1.234567891e+20); and it rounds the numbers
    inside a list (TRL's extra columns hold lists: `chosen_rating: [0.123456789012345, 0.5]`). Each such export
    rewritten by `datasets` and imported into its user again was a 409 naming `line N.pref_id` ("another
    `score_chosen`", "another `chosen_rating`"); now they are the rows held (`already_stored`), the held values
    kept, and a number changed by more than what writing it lost is still a 409 naming its column."""
    rows = [{"prompt": "Q1?", "chosen": "a", "rejected": "b", "score_chosen": 0.12345678915, "score_rejected": 0.99999999995},
            {"prompt": "Q2?", "chosen": "a", "rejected": "b", "score_chosen": 1.2345678912345e20, "score_rejected": -0.12345678915},
            {"prompt": "Q3?", "chosen": "a", "rejected": "b", "chosen_rating": [0.123456789012345, 0.5], "rejected_rating": [[1e-12]]}]
    with svc.client("acme") as c:
        assert c.post("/v1/users/rd52/import", content="\n".join(map(json.dumps, rows))).status_code == 201
        export = c.get("/v1/users/rd52/export", params={"format": "preferences"}).content
    (tmp_path / "export.jsonl").write_bytes(export)
    rewritten = tmp_path / "rewritten.jsonl"
    hf.run("datasets.load_dataset('json', data_files=src, split='train').to_json(out)",
           src=str(tmp_path / "export.jsonl"), out=str(rewritten))
    written = rewritten.read_bytes()
    for number in (b"0.1234567892,", b"1.234567891e+20", b"[0.123456789,0.5]", b"[[0.0]]"):  # what `datasets` writes
        assert number in written, written
    with svc.client("acme") as c:
        again = c.post("/v1/users/rd52/import", content=written)
        assert again.status_code == 201, again.text  # before: 409 `line 1.pref_id`, another `score_chosen`
        assert again.json()["stored"] == [] and len(again.json()["already_stored"]) == 3, again.text
        assert c.get("/v1/users/rd52/export", params={"format": "preferences"}).content == export  # the held values kept
        for line, changed in ((0, {"score_chosen": 0.1234567894}), (2, {"chosen_rating": [0.12345679, 0.5]})):
            other = json.loads(written.splitlines()[line]) | changed
            refused = c.post("/v1/users/rd52/import", content=json.dumps(other))
            assert refused.status_code == 409, refused.text
            assert f"another `{next(iter(changed))}`" in refused.json()["error"]["message"], refused.text



def test_a_score_added_to_a_plain_row_held_is_a_409_naming_the_score(svc):
    """Review of trial52: a 409 whose row differs from the held one only in one of TRL's extra columns names it;
    but a plain row held (text, no extra column: stored without a TRL form) sent again with `score_chosen` added
    was still said as "another form of its TRL columns (`trl`: ...)", the form being the same."""
    row = {"pref_id": "plain-1", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
    with svc.client("acme") as c:
        assert c.post("/v1/users/pl52/import", content=json.dumps(row)).status_code == 201
        refused = c.post("/v1/users/pl52/import", content=json.dumps(row | {"score_chosen": 0.5}))
        assert refused.status_code == 409 and refused.json()["error"]["param"] == "line 1.pref_id", refused.text
        assert "another `score_chosen` (one of TRL's columns)" in refused.json()["error"]["message"], refused.text
        assert c.post("/v1/users/pl52/import", content=json.dumps(row | {"score_chosen": None})).status_code == 201
