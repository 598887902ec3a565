"""Session fuzz36, end to end: an import whose body mixes adversarial lines (repeated keys, numbers at
float's and int's edges, unicode that renders as nothing, TRL's message lists, implicit prompts and
extra columns) stores exactly what the reference reader (`row_to_preference` on each decoded line)
gives for each line; and a line the reader once crashed on is a 400 naming it."""

from __future__ import annotations

import json

import msgspec
import pytest

from pluralign.data.io import _decode_line, preference_row, row_to_preference
from tests.service.tiny import field_named, start_service
from tests.unit.clitools import cli, write_jsonl

USER = "fz36"


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("fuzz36-import"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def _conversation(answer: str) -> list[dict]:
    return [{"role": "user", "content": "Tea or coffee?"}, {"role": "assistant", "content": answer}]


# every line a good row the reference reads; each with something a typed decoding might read otherwise (times at
# the ends of the range a file takes, session rows42: 2**64 and 2**53 + 1 seconds, taken before, are past it) (a line giving
# a key twice, read as its last value before, is refused since review36b: test_review36b_repeated_keys)
LINES = [
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}',
    b'  {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "margin": -0.0, "created_at": 253402300799}\t\r',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "margin": 1000000, "created_at": 1726000000.999999999999999999999}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "created_at": -0.0, "tie": null, "source": null}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"e\\u0301": "\\u00e9", "lang": "\\u05e9\\u05dc\\u05d5\\u05dd"}}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"g": "b", "n": 4, "f": 1.50, "t": true, "x": null}}',
    b'{"prompt": "Tea?", "chosen": "a\\u0000b", "rejected": "No.\\u00a0"}',
    '{"prompt": "Tea?", "chosen": "Caf\u00e9.", "rejected": "Cafe\u0301 au lait.\u200b"}'.encode(),
    b'{"prompt": "\\u202eTea?", "chosen": "\\ud83d\\udc69\\u200d\\ud83d\\udcbb", "rejected": "\\ud83d\\udc69\\u200d\\ud83d\\udc67"}',
    json.dumps({"chosen": _conversation("Tea."), "rejected": _conversation("Coffee.")}).encode(),  # implicit, conversational
    # an id at uint64's edge (past it: a 400, test_fidelity37_roundtrip), kept with the row and exported back
    json.dumps({"chosen": "Tea? Yes.", "rejected": "Tea? No.", "id": 2**64 - 1, "score_chosen": -0.0, "chosen_model": None}).encode(),
    # (a prompt of another form than its answers is refused since session trl55: REFUSED_ROWS below)
    json.dumps({"prompt": [{"role": "system", "content": "Be brief."}, {"content": "Tea?"}], "chosen": [{"content": "Yes."}],
                "rejected": [{"role": "assistant", "content": "No."}]}).encode(),
    json.dumps({"prompt": [{"content": "Tea?", "name": None}], "chosen": [{"role": "assistant", "content": "Yes.", "name": None}],
                "rejected": [{"role": None, "content": "No."}]}).encode(),  # null keys: absent
]


def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


def _reference(raw: bytes):
    return row_to_preference(_decode_line(1, raw), 1, USER)


def test_an_import_of_adversarial_lines_stores_what_the_reference_reader_reads(svc):
    expected = [_reference(raw) for raw in LINES]  # every line a good row (else this raises)
    body = b"\n".join(LINES[:5] + [b"", b"  "] + LINES[5:]) + b"\n"
    with svc.client("acme") as c:
        r = c.post(f"/v1/users/{USER}/import", content=body)
        assert r.status_code == 201, r.text
        page = c.get(f"/v1/users/{USER}/preferences", params={"limit": 500}).json()
    stored = {row["pref_id"]: row for row in page["data"]}
    rows = [stored[pref_id] for pref_id in r.json()["stored"]]
    assert len(rows) == len(LINES)
    for raw, row, record in zip(LINES, rows, expected, strict=True):
        want = {"user_id": USER, "prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected, "margin": record.margin,
                "tie": record.tie, "source": record.source or "import", "attributes": record.attributes}
        got = {k: row[k] for k in want}
        assert got == want, raw
        if record.created_at is not None:
            assert row["created_at"] == record.created_at, raw
    # the export gives each row back as the reference reader keeps it (`preference_row`: its TRL form, since fidelity37)
    with svc.client("acme") as c:
        exported = [json.loads(line) for line in c.get(f"/v1/users/{USER}/export", params={"format": "preferences"}).text.splitlines()]
    want = [{**preference_row(msgspec.structs.replace(record, source=record.source or "import")), "created_at": None} for record in expected]
    got = [{**row, "created_at": None} for row in exported]
    assert sorted(row.pop("pref_id") for row in got) == sorted(r.json()["stored"])  # each row's id (session ids39)
    assert sorted(map(_key, got)) == sorted(map(_key, want))


@pytest.mark.parametrize("raw", [
    b'{"rejected": "\\ud800", "chosen": "\xed\xa0\x80", "prompt": "Tea?"}',
    b'{"prompt": "Tea?", "chosen": "\\udfff Yes.", "rejected": "No. \xff"}',
])
def test_a_lone_surrogate_escape_beside_bytes_not_utf8_is_a_400_naming_the_line(svc, raw):
    """Before: 500 (UnicodeDecodeError out of `lone_surrogate_escape`, which tries the line with its lone
    escapes mended and met the bytes that are not UTF-8). Now a 400 naming line 2, nothing stored; and
    the same bytes in a JSON body (POST /v1/feedback) a 400 too."""
    with svc.client("acme") as c:
        good = b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}'
        r = c.post("/v1/users/fz36-lone/import", content=good + b"\n" + raw)
        assert r.status_code == 400, (r.status_code, r.text)
        assert field_named(r) == "line 2", r.json()
        assert c.get("/v1/users/fz36-lone/preferences").status_code == 404  # nothing of the body was stored
        feedback = raw.replace(b"{", b'{"type": "comparison", "user": "fz36-lone", ', 1)
        r = c.post("/v1/feedback", content=feedback, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and field_named(r) == "body", (r.status_code, r.text)


def test_an_imported_rows_trl_key_is_a_400_naming_it(svc):
    """`trl` is no column of a preference file (`Preference`'s own field): before, a 201 (the row read with
    its TRL form taken from the key), now a 400 naming `line 1.trl`, as any unknown key of a row."""
    row = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "trl": {"chosen": "Sure, tea.", "rejected": "Coffee!"}}
    with svc.client("acme") as c:
        r = c.post("/v1/users/fz36-trl/import", content=json.dumps(row))
        assert r.status_code == 400 and field_named(r) == "line 1.trl", (r.status_code, r.text)
        assert "unknown field" in r.json()["error"]["message"], r.text


# Session trl55: rows TRL cannot read back. TRL judges a row's form by one of its columns (`is_conversational` pops
# any of prompt/chosen/rejected from a set) and concatenates `prompt + chosen` (`apply_chat_template`, the DPO
# trainer's tokenize step), so a row must be all text or all message lists; TRL's scores are numbers.
ASK, YES, NO = [{"role": "user", "content": "Tea?"}], [{"role": "assistant", "content": "Yes."}], [{"role": "assistant", "content": "No."}]
REFUSED_ROWS = {
    "text prompt, message answers": ({"prompt": "Tea?", "chosen": YES, "rejected": NO}, "prompt"),
    "message prompt, text answers": ({"prompt": ASK, "chosen": "Yes.", "rejected": "No."}, "prompt"),
    "text chosen, message rejected": ({"prompt": ASK, "chosen": "Yes.", "rejected": NO}, "rejected"),
    "a score as text": ({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "score_chosen": "high"}, "score_chosen"),
    "a score as a boolean": ({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "score_rejected": True}, "score_rejected"),
    "a rating as text": ({"prompt": ASK, "chosen": YES, "rejected": NO, "chosen_rating": "5"}, "chosen_rating"),
    "a rating list holding text": ({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "rejected_rating": [4, "n/a"]}, "rejected_rating"),
}


@pytest.mark.parametrize("case", list(REFUSED_ROWS))
def test_a_row_trl_cannot_read_is_a_400_naming_its_line_and_field_nothing_stored(svc, case):
    """Before: a 201, the row stored in its form and exported so (a `datasets` file TRL's DPO trainer fails on:
    `str + list`, or a `score_chosen` column of Arrow's JSON type, not float64). Now a 400 naming `line 2.<field>`,
    the good line 1 not stored either."""
    row, field = REFUSED_ROWS[case]
    user = f"trl55-http-{list(REFUSED_ROWS).index(case)}"
    good = {"prompt": "Tea?", "chosen": "Yes, please.", "rejected": "No, thanks.", "score_chosen": 8.5, "chosen_rating": [4, 5.0]}
    with svc.client("acme") as c:
        r = c.post(f"/v1/users/{user}/import", content=json.dumps(good) + "\n" + json.dumps(row) + "\n")
        assert r.status_code == 400, (r.status_code, r.text)
        assert field_named(r) == f"line 2.{field}", r.json()
        assert c.get(f"/v1/users/{user}/preferences").status_code == 404  # nothing of the body was stored


@pytest.mark.parametrize("case", list(REFUSED_ROWS))
def test_pluralign_data_import_of_such_a_row_names_the_file_line_and_field_and_sends_nothing(svc, tmp_path, capsys, case):
    """The same rows in a file sent with `pluralign data import` (the CLI in-process, the module's live service):
    before, sent and stored; now exit 2 naming --path, the line and the field, nothing sent."""
    row, field = REFUSED_ROWS[case]
    user = f"trl55-cli-{list(REFUSED_ROWS).index(case)}"
    path = write_jsonl(tmp_path / "prefs.jsonl", [{"user_id": user, "prompt": "Tea?", "chosen": "Yes, please.", "rejected": "No."},
                                                  {"user_id": user, **row}])
    code, stdout, stderr = cli(capsys, "data", "import", "--source", "jsonl", "--path", path, "--url", svc.url, "--key", svc.keys["acme"])
    assert code == 2 and stdout == "", (code, stdout, stderr)
    assert f"--path {path}: line 2, field `{field}`: " in stderr, stderr
    with svc.client("acme") as c:
        assert c.get(f"/v1/users/{user}/preferences").status_code == 404  # nothing sent


@pytest.mark.parametrize(("columns", "field"), [
    ({"prompt": ["Tea?", "Milk?"], "chosen": [YES, YES], "rejected": [NO, NO]}, "prompt"),
    ({"prompt": ["Tea?", "Milk?"], "chosen": ["Yes.", "Yes."], "rejected": ["No.", "No."], "score_chosen": ["8.5", "high"]}, "score_chosen"),
])
def test_a_parquet_file_of_such_rows_is_named_by_its_row_and_sends_nothing(svc, tmp_path, capsys, columns, field):
    """A Parquet file holds one type a column, so every row is of the kind: its text `prompt` column beside message-list
    answers, or a `score_chosen` column of strings (a CSV's made Parquet). Before: sent and stored (`datasets` then read
    the scores as strings); now exit 2 naming row 1 and the field, nothing sent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    user = f"trl55-parquet-{field}"
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.table({"user_id": [user, user], **columns}), path)
    code, stdout, stderr = cli(capsys, "data", "import", "--source", "parquet", "--path", str(path), "--url", svc.url, "--key", svc.keys["acme"])
    assert code == 2 and stdout == "", (code, stdout, stderr)
    assert f"--path {path}: row 1, field `{field}`: " in stderr, stderr
    with svc.client("acme") as c:
        assert c.get(f"/v1/users/{user}/preferences").status_code == 404  # nothing sent


@pytest.mark.parametrize(("column", "value", "way_out"), [
    ("score_chosen", 2**70, float(2**70)),
    ("rejected_rating", [4, -(2**70)], [4, -float(2**70)]),
])
def test_a_score_past_64_bits_is_a_400_whose_way_out_imports(svc, column, value, way_out):
    """Review trl55: a score or rating holding an integer past 64 bits (which the feedback log's msgpack and Arrow do
    not keep) is a 400 naming `line N.<column>` whose advice, followed, imports. Before: it said "give it as a string",
    and a score given as a string is itself a 400 since session trl55 ("must be a number"): no way out named."""
    user = f"trl55-big-{column}"
    row = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}
    with svc.client("acme") as c:
        r = c.post(f"/v1/users/{user}/import", content=json.dumps({**row, column: value}))
        assert r.status_code == 400 and field_named(r) == f"line 1.{column}", (r.status_code, r.text)
        message = r.json()["error"]["message"]
        assert "past 64 bits" in message and "string" not in message and "1.2e21" in message, message
        r = c.post(f"/v1/users/{user}/import", content=json.dumps({**row, column: way_out}))  # the advice: as a float
        assert r.status_code == 201, r.text
        (stored,) = c.get(f"/v1/users/{user}/preferences").json()["data"]
    assert stored["trl"]["extra"][column] == way_out, stored
