"""Session 36 (review b): a key given twice in one JSON object of an import's JSON lines.

f24e90a made a key given twice in a JSON body a 400 naming it (msgspec keeps the last value, a gateway
or log reader the first); the import route's body (JSON lines) and the files the CLI reads kept the
last silently: `{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "chosen": "Coffee!"}` was
stored as chosen "Coffee!" (201). Such a line is now a bad row naming the key by its path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("review36b-keys"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


GOOD = b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}\n'


@pytest.mark.parametrize("line, field", [
    (b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "chosen": "Coffee!"}', "line 2.chosen"),
    (b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "ch\\u006fsen": "Coffee!"}', "line 2.chosen"),  # the same key, escaped
    (b'{"chosen": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes.", "content": "Coffee!"}], '
     b'"rejected": [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "No."}]}', "line 2.chosen[1].content"),
    (b'{"prompt": 1, "prompt": "Milk?", "chosen": "Yes.", "rejected": "No."}', "line 2.prompt"),  # a bad first value, a good last one
    (b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": "twice", "user_id": "twice"}', "line 2.user_id"),  # the same value
    (b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"g": "a", "g": "b"}}', "line 2.attributes.g"),
    # deep in a TRL column kept as it is: named, not a 500 (the path's walk once overflowed Python's stack at 600-900 levels)
    (b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "id": ' + b"[" * 700 + b'{"a": 1, "a": 2}' + b"]" * 700 + b"}",
     "line 2.id[0][0][0]"),  # the path shown cut (service.errors.shown)
], ids=["plain", "escaped", "in-a-message", "bad-then-good", "same-value", "attribute", "deep"])
def test_a_key_given_twice_in_an_imported_line_is_a_400_naming_it_and_stores_nothing(svc, line, field):
    with svc.client("acme") as c:
        r = c.post("/v1/users/twice/import", content=GOOD + line + b"\n", headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 400, (r.status_code, r.text)
        error = r.json()["error"]
        assert (error["param"].startswith(field) if field.endswith("[0]") else error["param"] == field), str(error)[:300]
        assert "given 2 times" in error["message"], error
        assert c.get("/v1/users/twice/export", params={"format": "preferences"}).status_code == 404  # nothing stored


def test_keys_that_differ_only_by_unicode_normalisation_are_two_keys(svc):
    line = '{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"caf\u00e9": "a", "cafe\u0301": "b"}}\n'.encode()
    with svc.client("acme") as c:
        r = c.post("/v1/users/nfc/import", content=line, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 201, r.text


def test_the_cli_names_the_line_and_key_given_twice(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(GOOD.replace(b"{", b'{"user_id": "a", ') + b'{"user_id": "a", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": "b"}\n')
    done = subprocess.run([sys.executable, "-m", "training.cli", "data", "stats", "--source", "jsonl", "--path", str(path), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "line 2, field `user_id`" in done.stderr and "given 2 times" in done.stderr, done.stderr


def test_the_colon_count_shortcut_agrees_with_python_s_decoder_on_every_line():
    """repeated_key skips Python's decoder (~30 ms a MB) for a line whose colons are as many as the keys
    msgspec kept: never for one that gives a key twice, whatever its spacing, escapes or texts."""
    import json

    from pluralign.data.json_keys import repeated_key
    from tests.unit.test_perf36_lines import _lines

    def exact(raw: bytes) -> bool:
        def pairs(items):
            if len(dict(items)) != len(items):
                raise KeyError
            return dict(items)
        try:
            json.loads(raw, object_pairs_hook=pairs)
        except KeyError:
            return True
        except (ValueError, RecursionError):
            return False
        return False

    def decodes(raw: bytes) -> bool:
        try:
            json.loads(raw)
        except (ValueError, RecursionError):
            return False
        return True

    extra = [b'{"k" :1, "k"\n:2}', b'{"a":"x\\":","a":1}', b'{"a":"\\\\","a":1}', b'{"a":": hi","b":[{"c":1},{"c":2}]}',
             b'{"us\\u0065r":1,"user":2}', b'[{"x":{"y":1,"y":1}}]', b'{"a":{},"b":[],"a":null}']
    lines = _lines() + extra
    lines += [raw.replace(b'{"prompt": ', b'{"prompt" :1, "prompt": ', 1) for raw in lines if raw.startswith(b'{"prompt": ')]  # each given twice
    lines = [raw for raw in lines if decodes(raw)]  # a malformed line is left to the reader's own decoding
    assert sum(map(exact, lines)) > 300
    assert [raw for raw in lines if (repeated_key(raw) is not None) != exact(raw)] == []
