"""Session 62's review of breakA62: the cases its `keys revoke` and `--host` checks left out. A key copied with what
surrounds it (a space, the header's `Bearer `) was printed whole, a key's hash was taken of an argument that is no
text (bytes not UTF-8 in argv), a URL given as --host that does not parse was an error naming nothing, and a `?`
with no query after it in `data import --url` went into every request's path. (`keys create` with its stdout closed:
tests/unit/test_breakA62_cli.py's `test_keys_create_whose_key_cannot_be_printed_keeps_no_key`.)"""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli, import_stand_in, write_jsonl


@pytest.fixture
def a_key(capsys, tmp_path) -> str:
    code, out, err = cli(capsys, "keys", "create", "--tenant", "acme", "--name", "web", "--data-dir", str(tmp_path))
    assert code == 0, err
    return json.loads(out)["key"]


@pytest.mark.parametrize("pasted", [" {key}", "{key}\n", "{key} "])
def test_keys_revoke_of_a_key_pasted_with_a_space_takes_it_and_never_prints_it(capsys, tmp_path, a_key, pasted):
    """Before: ` pk-...` (a space copied with it) was `no key with id or name ' pk-<the whole key>'`: not taken, and
    printed whole; `pk-... ` was not taken either. A key holds no space: it is matched as it is without them."""
    code, out, err = cli(capsys, "keys", "revoke", pasted.format(key=a_key), "--data-dir", str(tmp_path))
    assert code == 0 and a_key not in out + err, (code, err)
    assert [k["name"] for k in json.loads(out)["revoked"]] == ["web"]


def test_keys_revoke_of_a_key_copied_with_its_header_never_prints_it(capsys, tmp_path, a_key):
    """Before: `keys revoke "Bearer pk-..."` (copied from a curl line's header) said `no key with id or name 'Bearer
    pk-<the whole key>'`, though docs/api.md says an argument that looks like a key is never printed whole."""
    code, out, err = cli(capsys, "keys", "revoke", f"Bearer {a_key}", "--data-dir", str(tmp_path))
    assert code == 2 and out == "", (code, out, err)
    assert a_key[len("pk-") + 4:] not in err and "(a key, not shown whole)" in err, err


def test_keys_revoke_of_an_argument_not_utf8_says_no_such_key(capsys, tmp_path, a_key):
    """Bytes that are no UTF-8 in argv (`keys revoke $'\\xff'`, Python's surrogate escapes): before, the key's hash of
    it raised `'utf-8' codec can't encode characters in position 0-1: surrogates not allowed`, naming nothing."""
    code, out, err = cli(capsys, "keys", "revoke", "\udcff\udcfe", "--data-dir", str(tmp_path))
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.strip().splitlines()
    assert line.startswith("pluralign: error: no key with id or name "), line


def test_a_url_as_host_that_does_not_parse_names_host():
    """`--host 'http://[::1'` (a bracket left out): before, `pluralign: error: Invalid IPv6 URL`, naming no option:
    the URL's second reading, for its host, raised urllib's error out of `check_listen`."""
    from training.common import check_listen

    with pytest.raises(ValueError) as caught:
        check_listen("http://[::1", 0)
    assert str(caught.value).startswith("--host http://[::1: not an address this machine can listen on: a URL"), caught.value


@pytest.mark.parametrize("tail, sent", [("/v1?", None), ("/?", None), ("/v1#top", "/v1/users/u/import")])
def test_data_import_url_with_an_empty_query_or_a_fragment(capsys, tmp_path, tail, sent):
    """A `?` with nothing after it is a query too: before, `--url http://host/v1?` passed breakA62's check (urllib
    reads it as no query) and each chunk went to `POST /v1?/v1/users/u/import`. A fragment after `/v1` (`/v1#top`): before,
    `/v1/v1/users/u/import`, the `/v1` of the base URL not seen behind it; now the fragment is left out, as httpx does."""
    paths: list[str] = []

    def answer(path, headers, body):
        paths.append(path)
        return 201, {"user": "u", "stored": ["x"], "already_stored": []}

    source = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    with import_stand_in(answer) as url:
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", source, "--user", "u",
                             "--url", url + tail, "--key", "pk-test")
    if sent is None:
        assert (code, paths) == (2, []), (code, paths, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(f"pluralign: error: --url {url}{tail}: holds a query (`?`)") and "nothing was sent" in line, line
    else:
        assert (code, paths) == (0, [sent]), (code, paths, err)
