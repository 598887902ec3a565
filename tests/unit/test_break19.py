"""A fifth hostile pass on the `pluralign` command line (break session 19): a bad preference file
given to `data stats|export|import` (or a trainer's `--data`) was an error naming its line but not
the file; `audit --store` ignored `--user-groups` (and the other inputs it does not read) without a
word; `data import` to a service it could not reach printed a traceback.

The tests call the CLI's `main` with real files in a temp dir, as tests/unit/test_break18_cli.py does."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli, import_stand_in
from tests.unit.clitools import write_jsonl as write_lines


def rows(n_users: int = 2, per_user: int = 4) -> list[dict]:
    return [
        {"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
         "attributes": {"segment": f"s{u % 2}"}}
        for u in range(n_users) for i in range(per_user)
    ]






DATA_COMMANDS = {  # the arguments each `data` command needs besides --source and --path
    "stats": [],
    "export": ["--out", "{tmp}/out.jsonl"],
    "import": ["--url", "http://127.0.0.1:9", "--key", "pk-test"],
}
BAD_LINES = {  # a bad third line, and what the error says of it
    "not JSON": ("{not json", "line 3: malformed JSON"),
    "a bad field": ({**rows()[2], "chosen": 3}, "line 3, field `chosen`:"),
    "nested too deeply": ("[" * 100_000, "line 3: malformed JSON (nested too deeply)"),
}


@pytest.mark.parametrize("command", DATA_COMMANDS)
@pytest.mark.parametrize("bad", BAD_LINES)
def test_a_bad_line_in_a_data_command_s_file_names_the_file_and_line(tmp_path, capsys, command, bad):
    """`pluralign: error: line 3, field `chosen`: ...` named no file: with `--path` in a script's
    loop, which one? Now `--path FILE: line 3, ...`, as `audit --data` says."""
    line, said = BAD_LINES[bad]
    good = rows()
    data = write_lines(tmp_path / "p.jsonl", [*good[:2], line, *good[2:]])
    extra = [a.format(tmp=tmp_path) for a in DATA_COMMANDS[command]]
    code, out, err = cli(capsys, "data", command, "--source", "jsonl", "--path", data, *extra)
    assert code == 2 and out == "" and "Traceback" not in err, err
    (message,) = err.strip().splitlines()
    assert message.startswith(f"pluralign: error: --path {data}: {said}"), message
    assert "--skip-bad" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]  # export wrote nothing


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_an_empty_file_is_an_error_naming_it_without_a_line_0(tmp_path, capsys, command):
    """It said `line 0: FILE holds no preference rows`."""
    data = write_lines(tmp_path / "p.jsonl", [])
    extra = [a.format(tmp=tmp_path) for a in DATA_COMMANDS[command]]
    code, _, err = cli(capsys, "data", command, "--source", "jsonl", "--path", data, *extra)
    assert code == 2 and err.strip() == f"pluralign: error: --path {data}: holds no preference rows", err


def test_a_trainer_s_bad_data_file_is_named_too(tmp_path, capsys):
    good = rows()
    data = write_lines(tmp_path / "p.jsonl", [*good[:2], "{not json", *good[2:]])
    code, _, err = cli(capsys, "train", "adapter", "--user", "u0", "--data", data, "--registry", str(tmp_path / "adapters"))
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().startswith(f"pluralign: error: --data {data}: line 3: malformed JSON"), err


# -- audit --store and the inputs it does not read ---------------------------------------------------


@pytest.fixture
def store(tmp_path) -> str:
    import numpy as np

    from pluralign.store import Store, StoredPreference

    db = Store(str(tmp_path / "db"), "enc", 4)
    stored = [
        StoredPreference(tenant="acme", user_id=f"u{u}", pref_id=f"p{u}{i}", prompt=f"q{i}", chosen="yes", rejected="no",
                         kind="comparison", created_at=float(i), attributes={"segment": f"s{u % 2}"})
        for u in range(4) for i in range(3)  # two users a segment: an audit shows no group of one user (session 49)
    ]
    vectors = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    db.add_preferences(stored, vectors, vectors, -vectors)
    return str(tmp_path / "db")


def test_audit_store_with_user_groups_is_refused_not_ignored(tmp_path, capsys, store):
    """`--user-groups` was never read with `--store`: the report grouped by the stored attribute, and
    said nothing of the file the user had given."""
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"u0": "a", "u1": "a"}))
    code, out, err = cli(capsys, "audit", "--store", store, "--group-by", "segment", "--user-groups", str(groups),
                         "--min-comparisons", "1", "--json")
    assert code == 2 and out == "" and "Traceback" not in err, err
    (message,) = err.strip().splitlines()
    assert message.startswith(f"pluralign: error: --user-groups {groups}: not read with --store"), message


@pytest.mark.parametrize("extra", [["--data", "p.jsonl"], ["--source", "persona"], ["--path", "x"], ["--skip-bad"],
                                   ["--em", "em"], ["--pal", "pal"]])
def test_audit_store_refuses_every_input_it_would_not_read(capsys, store, extra):
    code, out, err = cli(capsys, "audit", "--store", store, "--group-by", "segment", *extra, "--json")
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert err.startswith(f"pluralign: error: {extra[0]}") and "--store" in err, err


def test_audit_tenant_without_store_and_data_with_source_are_refused(tmp_path, capsys):
    data = write_lines(tmp_path / "p.jsonl", rows())
    code, _, err = cli(capsys, "audit", "--data", data, "--tenant", "acme", "--group-by", "segment", "--json")
    assert code == 2 and err.startswith("pluralign: error: --tenant") and "--store" in err, err
    code, _, err = cli(capsys, "audit", "--data", data, "--source", "persona", "--group-by", "segment", "--json")
    assert code == 2 and err.startswith("pluralign: error: --data") and "--source" in err, err


def test_audit_store_alone_still_runs(capsys, store):
    code, out, err = cli(capsys, "audit", "--store", store, "--group-by", "segment", "--min-comparisons", "1", "--json")
    assert code == 0, err
    assert sorted(g["group"] for g in json.loads(out.strip().splitlines()[-1])["groups"]) == ["s0", "s1"]
def test_data_import_to_a_service_it_cannot_reach_is_an_error_naming_the_url(tmp_path, capsys):
    """A refused connection was a traceback ending in httpx.ConnectError, exit 1."""
    data = write_lines(tmp_path / "p.jsonl", rows())
    for url in ("http://127.0.0.1:9", "localhost:8000", "http://[::1"):
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", data, "--url", url, "--key", "pk-test")
        assert code == 2 and out == "" and "Traceback" not in err, (url, err)
        (message,) = err.strip().splitlines()
        assert message.startswith(f"pluralign: error: --url {url}: "), message




def test_data_import_refused_half_way_says_what_was_stored_and_escapes_user_ids(tmp_path, capsys):
    """A refusal for the second user said nothing of the first user's rows, already stored; a user id
    holding `?` or `/` was pasted into the URL as it was (`/v1/users/a?b/import` is another request)."""
    paths: list[str] = []

    def answer(path, headers, body):
        paths.append(path)
        ok = path.startswith("/v1/users/u0/")
        return (201, {"user": "u0", "stored": [str(i) for i in range(body.count(b"\n"))]}) if ok else \
            (400, {"error": {"message": "`user_id`: not a valid id", "param": "user_id"}})

    with import_stand_in(answer) as url:
        data = write_lines(tmp_path / "p.jsonl", [*rows(1), *({**r, "user_id": "a+b@c:d"} for r in rows(1))])
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", data, "--url", url, "--key", "pk-test")
        assert paths == ["/v1/users/u0/import", "/v1/users/a%2Bb%40c%3Ad/import"]
        assert code == 2 and out == "" and "Traceback" not in err, err
        (message,) = err.strip().splitlines()
        assert "'a+b@c:d'" in message and "(400)" in message and "not a valid id" in message, message
        assert "4 rows of 1 user were stored before it" in message, message
        # a user id the service never takes (`?` and `/` in it) is refused before anything is sent (session 25b)
        paths.clear()
        data = write_lines(tmp_path / "q.jsonl", [*rows(1), *({**r, "user_id": "a?b/c"} for r in rows(1))])
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", data, "--url", url, "--key", "pk-test")
        assert paths == [] and code == 2, err
        assert f"--path {data}: line 5, field `user_id`: 'a?b/c': a user id is" in err and "nothing was sent" in err, err


UKP_PAIR = ("<annotatedArgumentPair><id>p1</id><debateMetaData><title>T</title></debateMetaData>"
            "<arg1><text>A</text><stance>s</stance></arg1>{arg2}"
            "<mTurkAssignment><value>a1</value><turkID>w1</turkID></mTurkAssignment></annotatedArgumentPair>")


@pytest.mark.parametrize("xml,said", [
    ('<?xml version="1.0"?><list><unclosed>', "line 1, column 37: malformed XML"),
    (f'<?xml version="1.0"?><list>{UKP_PAIR.format(arg2="")}</list>', "pair p1: `rejected` must not be empty"),
    # both: the malformed file is named, as when the importer parsed each file whole before reading its pairs
    (f'<?xml version="1.0"?><list>{UKP_PAIR.format(arg2="")}<unclosed>', "line 1, column 260: malformed XML"),
])
def test_a_broken_ukp_xml_file_is_an_error_naming_the_file(tmp_path, capsys, xml, said):
    """A malformed XML file was a traceback (xml.etree's ParseError is not a ValueError); a pair
    without its second argument was an error naming neither the file nor the pair."""
    (tmp_path / "topic.xml").write_text(xml)
    code, out, err = cli(capsys, "data", "stats", "--source", "ukp_convarg1", "--path", str(tmp_path))
    assert code == 2 and out == "" and "Traceback" not in err, err
    (message,) = err.strip().splitlines()
    assert message.startswith(f"pluralign: error: {tmp_path / 'topic.xml'}: {said}"), message


@pytest.mark.parametrize("content", [b"{broken", b'{"sha256": "x"}', b"\xff\xfe"])
def test_a_damaged_api_key_file_is_an_error_naming_it(tmp_path, capsys, content):
    """`pluralign keys list` over a damaged api_keys.json said only 'Expected `array`, got `object`'."""
    (tmp_path / "api_keys.json").write_bytes(content)
    for action in (["list"], ["create", "--tenant", "acme"]):
        code, out, err = cli(capsys, "keys", "--data-dir", str(tmp_path), *action)
        assert code == 2 and out == "" and "Traceback" not in err, err
        assert err.startswith(f"pluralign: error: {tmp_path / 'api_keys.json'}: not a list of API keys ("), err
    assert (tmp_path / "api_keys.json").read_bytes() == content  # create wrote nothing over it
