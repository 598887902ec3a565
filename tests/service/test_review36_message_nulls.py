"""Review session 36: a message key whose value is null is absent, in JSON lines as in Parquet and in rows
in memory. `datasets` gives every message every key some message of the dataset has, null where it has
none, and `Dataset.to_json` writes them: `{"role": "user", "content": "Tea?", "name": null}`. Since
daf3218 such a key was refused as an unknown field (`prompt[0].name`) on every line of the file, by the
import route and the CLI, while the same dataset as Parquet or passed to `read_rows` was read (their
readers drop nulls): a file TRL reads was refused whole for a key that holds nothing. A key that holds
something (`"name": "bob"`) is still refused, naming its path."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import field_named, start_service
from tests.unit.test_newuser31_cli import one_error_line, pluralign


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("rv36-nulls"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


# in the `datasets` process: `rows` as a Dataset (only its first row unless `named`) written with `to_json` to `path`
WRITE = """
dataset = datasets.Dataset.from_list(rows)
if not named:
    dataset = dataset.select([0])
dataset.to_json(path)
"""


def datasets_jsonl(hf, tmp_path, named: bool) -> bytes:
    """What `datasets` writes for a conversational preference dataset one of whose messages has a `name`
    (the second row's, when `named`; else a message of a row left out of the file had it)."""
    rows = [{"prompt": [{"role": "user", "content": f"Tea or coffee {i}?"}], "chosen": [{"role": "assistant", "content": f"Tea {i}."}],
             "rejected": [{"role": "assistant", "content": f"Coffee {i}."}]} for i in range(2)]
    rows[1]["prompt"][0]["name"] = "bob"
    path = tmp_path / f"prefs-{named}.jsonl"
    hf.run(WRITE, rows=rows, named=named, path=str(path))
    return path.read_bytes()


def test_a_null_message_key_as_datasets_writes_it_is_absent_on_import(svc, hf, tmp_path):
    body = datasets_jsonl(hf, tmp_path, named=False)
    assert b'"name":null' in body, body  # what makes it a test of this
    with svc.client("acme") as c:
        r = c.post("/v1/users/nia/import", content=body)
        assert r.status_code == 201, r.text  # before: 400 `line 1.prompt[0].name`: unknown field
        (row,) = c.get("/v1/users/nia/preferences").json()["data"]
        assert (row["prompt"], row["chosen"], row["rejected"]) == ("Tea or coffee 0?", "Tea 0.", "Coffee 0.")
        r = c.post("/v1/users/nia/import", content=datasets_jsonl(hf, tmp_path, named=True))
        assert r.status_code == 400 and field_named(r) == "line 2.prompt[0].name", r.text  # a name that holds one: refused


def test_the_cli_reads_a_null_message_key_as_absent(hf, tmp_path):
    path = tmp_path / "named.jsonl"
    path.write_bytes(datasets_jsonl(hf, tmp_path, named=True))
    line = one_error_line(pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--user", "ann"))
    assert f"{path}: line 2, field `prompt[0].name`: unknown field" in line, line  # before: line 1, whose name is null
    skipped = pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--user", "ann", "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout.strip().splitlines()[-1])["pairs"] == 1, skipped.stdout


def test_a_row_without_attributes_in_a_datasets_file_imports_with_none(svc, hf, tmp_path):
    """Session trial47a: `datasets` writes a row that has no `attributes`, beside rows that have some, as
    `"attributes": null` (and a label only other rows have as `"group": null`, already read as no label); the
    import refused the whole file, `line 2.attributes`: Expected `object`, got `null` (the CLI the same). A null
    `attributes` is none now, as a null `tie` is no tie."""
    rows = [{"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", "attributes": {"group": "a"}},
            {"prompt": "Cats or dogs?", "chosen": "Cats.", "rejected": "Dogs.", "attributes": None},
            {"prompt": "Sea or hills?", "chosen": "Sea.", "rejected": "Hills.", "attributes": {}}]
    path = tmp_path / "attributes.jsonl"
    hf.run("datasets.Dataset.from_list(rows).to_json(path)", rows=rows, path=str(path))
    body = path.read_bytes()
    assert b'"attributes":null' in body and b'"attributes":{"group":null}' in body, body  # what makes it a test of this
    with svc.client("acme") as c:
        r = c.post("/v1/users/ola/import", content=body)
        assert r.status_code == 201, r.text
        stored = {row["prompt"]: row["attributes"] for row in c.get("/v1/users/ola/preferences").json()["data"]}
    assert stored == {"Tea or coffee?": {"group": "a"}, "Cats or dogs?": {}, "Sea or hills?": {}}, stored


def test_a_null_user_id_as_datasets_writes_it_is_the_path_s_user_on_import(svc, hf, tmp_path):
    """newlib56: `Dataset.to_json` writes a row's missing user_id as `"user_id": null`; the import took a line without
    `user_id` as the path's user's but refused this one, 400 `line 1.user_id` ("Expected `str`, got `null`")."""
    path = tmp_path / "users.jsonl"
    rows = [{"user_id": None, "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."},
            {"user_id": "oda", "prompt": "Milk or lemon?", "chosen": "Lemon.", "rejected": "Milk."}]
    hf.run("datasets.Dataset.from_list(rows).to_json(path)", rows=rows, path=str(path))
    body = path.read_bytes()
    assert body.startswith(b'{"user_id":null'), body  # what makes it a test of this
    with svc.client("acme") as c:
        r = c.post("/v1/users/oda/import", content=body)
        assert r.status_code == 201, r.text
        stored = c.get("/v1/users/oda/preferences").json()["data"]
        assert sorted(row["prompt"] for row in stored) == ["Milk or lemon?", "Tea or coffee?"]
