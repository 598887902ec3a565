"""Session 62 (breakA62): a newcomer's careless command lines. Every error is one line starting
`pluralign: error: ` that names the option and the problem, and leaves the user's files as they were."""

from __future__ import annotations

import contextlib
import json

import pytest

from tests.unit.clitools import cli, import_stand_in, write_jsonl


@pytest.mark.parametrize("out_name", ["prefs.jsonl", "./prefs.jsonl"])
def test_data_export_skip_bad_onto_its_own_source_is_refused_and_leaves_it_as_it_was(capsys, tmp_path, monkeypatch, out_name):
    """Before: `data export --path prefs.jsonl --out prefs.jsonl --skip-bad` answered 0 and replaced the source with
    the export: its bad row was gone for good. An export over its own --path without --skip-bad still rewrites it
    (tests/unit/test_newuser31_cli.py): every row is kept."""
    monkeypatch.chdir(tmp_path)
    source = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "Q", "chosen": "a", "rejected": "b"},
        "{not json",
        {"prompt": "R", "chosen": "c", "rejected": "d"},
    ])
    before = (tmp_path / "prefs.jsonl").read_bytes()
    code, out, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", source, "--user", "u", "--skip-bad",
                         "--out", out_name)
    assert (tmp_path / "prefs.jsonl").read_bytes() == before
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --out {out_name}: is the file --path reads ({source}), and --skip-bad "), line


def test_data_export_skip_bad_to_another_file_still_writes_it(capsys, tmp_path):
    """The check refuses only the source itself: an export beside it skips the bad row as before."""
    source = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}, "{not json"])
    code, out, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", source, "--user", "u", "--skip-bad",
                         "--out", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    assert json.loads(out)["records"] == 1
    assert json.loads((tmp_path / "out.jsonl").read_text())["user_id"] == "u"


@pytest.fixture
def recording_service():
    """A stand-in service on loopback that answers every import 201 and records each request's `Authorization`."""
    seen: list[str | None] = []

    def answer(path, headers, body):
        seen.append(headers.get("Authorization"))
        return 201, {"user": "u", "stored": ["x"], "already_stored": []}

    with import_stand_in(answer) as url:
        yield int(url.rpartition(":")[2]), seen


@pytest.mark.parametrize("url, said", [
    ("http://admin:s3cret@127.0.0.1:{port}", "a user name and password"),
    ("http://token@127.0.0.1:{port}/v1", "a user name"),
    ("http://127.0.0.1:{port}/v1?api_key=x", "a query (`?api_key="),
])
def test_data_import_url_with_credentials_or_a_query_is_refused_before_sending(capsys, tmp_path, recording_service, url, said):
    """Before: `--url http://admin:s3cret@host` sent `Authorization: Basic ...` (httpx reads a URL's user and password
    as Basic authentication) in place of the key's Bearer, and the error blamed the key: "--key: ... refused it (401:
    the scheme must be `Bearer` ...): not a key of this service". A query was pasted into every route's path
    (`POST /?x=1/v1/users/u/import`: "no pluralign import route there"). Now each is an error naming --url, nothing sent."""
    port, seen = recording_service
    source = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    url = url.format(port=port)
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", source, "--user", "u",
                         "--url", url, "--key", "pk-test")
    assert seen == []
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.strip().splitlines()
    assert line.startswith("pluralign: error: --url ") and said in line and "nothing was sent" in line, line
    assert "s3cret" not in line, line


def test_data_import_plain_url_sends_the_key_as_bearer(capsys, tmp_path, recording_service):
    """The stand-in records the key as sent: the check above refuses only what would replace or bend it."""
    port, seen = recording_service
    source = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", source, "--user", "u",
                         "--url", f"http://127.0.0.1:{port}/v1/", "--key", "pk-test")
    assert code == 0, err
    assert seen == ["Bearer pk-test"]


def _closed_pipe():
    """A text file writing into a pipe whose reader has gone (`pluralign ... | head -1` once head has exited)."""
    import os

    read, write = os.pipe()
    os.close(read)
    return os.fdopen(write, "w")


def test_keys_list_into_a_closed_pipe_ends_quietly(capsys, tmp_path, monkeypatch):
    """Before: `pluralign keys list | head -1` (a reader that leaves early) printed `pluralign: error: [Errno 32] Broken
    pipe` and exited 2, as if the command had failed. Now it ends as a Unix command does when its reader has gone:
    no error line, exit 141 (128 + SIGPIPE, what a shell shows for `yes | head -1`'s yes)."""
    import sys

    assert cli(capsys, "keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path))[0] == 0
    with _closed_pipe() as gone:
        monkeypatch.setattr(sys, "stdout", gone)
        code, out, err = cli(capsys, "keys", "list", "--data-dir", str(tmp_path))
        monkeypatch.undo()
    assert (code, err) == (141, ""), (code, err)


def test_keys_create_whose_key_cannot_be_printed_keeps_no_key(capsys, tmp_path, monkeypatch):
    """Before: `pluralign keys create ... > /dev/full` (or into a closed pipe) stored the key, could not print it, and
    said `pluralign: error: [Errno 28] No space left on device`: a working key nobody had seen stayed issued, the user
    told only that something failed. Now the key is revoked again and the error says so, naming stdout. The review: a
    stdout closed before the start (`>&-`: Python's `sys.stdout` is None) was an AttributeError's traceback, exit 1,
    the key kept."""
    import sys

    for target in ("/dev/full", "a closed pipe", "closed"):
        stream = open(target, "w") if target == "/dev/full" else _closed_pipe() if target == "a closed pipe" else None  # noqa: SIM115
        try:
            monkeypatch.setattr(sys, "stdout", stream)
            code, out, err = cli(capsys, "keys", "create", "--tenant", "acme", "--name", "lost", "--data-dir", str(tmp_path))
        finally:
            monkeypatch.undo()
            with contextlib.suppress(OSError, AttributeError):  # AttributeError: None, the closed stdout
                stream.close()
        assert code == 2, (code, err)
        (line,) = err.strip().splitlines()
        assert line.startswith("pluralign: error: stdout: ") and "the key was not kept" in line, line
    code, out, err = cli(capsys, "keys", "list", "--data-dir", str(tmp_path))
    assert code == 0 and json.loads(out.splitlines()[-1]) == {"keys": 0}, out


@pytest.mark.parametrize("argv", [
    ["data", "stats", "--source", "jsonl", "--path", "-"],
    ["audit", "--group-by", "g", "--data", "-"],
])
def test_a_dash_for_standard_input_says_how_to_give_a_pipe(capsys, tmp_path, monkeypatch, argv):
    """`curl .../export?format=preferences | pluralign data stats --path -`: before, `--path -: no such file or folder`
    alone, as if the pipe were not there. Now the line says how to read one: /dev/stdin (which reads it)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.strip().splitlines()
    assert line.endswith("-: no such file or folder (`-` is read as a file's name: give a pipe's input as /dev/stdin)"), line


@pytest.mark.parametrize("host, said", [
    ("http://127.0.0.1:8000", "a URL, where the host alone goes (--host 127.0.0.1 --port 8000)"),
    ("https://localhost", "a URL, where the host alone goes (--host localhost)"),
    ("127.0.0.1:8000", "a host and a port, where the host alone goes (--host 127.0.0.1 --port 8000)"),
    ("[::1]:8000", "a host and a port, where the host alone goes (--host ::1 --port 8000)"),
])
def test_a_url_or_host_and_port_given_as_host_says_what_goes_there(host, said):
    """`HOST=http://127.0.0.1:8000 make serve` (a URL copied from the README), or `--host 127.0.0.1:8000`: before,
    `--host http://127.0.0.1:8000: not an address this machine can listen on (Name or service not known)`, which does
    not say what is wrong with it. `check_listen` is what `pluralign serve` and `serve-embeddings` check first."""
    from training.common import check_listen

    with pytest.raises(ValueError) as caught:
        check_listen(host, 0)
    assert str(caught.value).startswith(f"--host {host}: not an address this machine can listen on: {said}"), caught.value


def test_serve_with_a_url_as_host_is_refused_naming_it_before_anything_is_made(capsys, tmp_path):
    code, out, err = cli(capsys, "serve", "--host", "http://127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "data"))
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.strip().splitlines()
    assert line.startswith("pluralign: error: --host http://127.0.0.1: not an address this machine can listen on: a URL"), line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("argv, option", [
    (["tenants", "remove", "--tenant", "old", "--tenant", "acme"], "--tenant"),
    (["keys", "create", "--tenant", "a", "--tenant", "b"], "--tenant"),
    (["data", "stats", "--source", "jsonl", "--path", "p.jsonl", "--user", "ann", "--user", "bob"], "--user"),
])
def test_a_tenant_or_user_given_twice_is_refused_before_anything_is_done(capsys, tmp_path, monkeypatch, argv, option):
    """Before: argparse kept the last, so `tenants remove --tenant old --tenant acme` (meant: both) began removing
    acme alone, `keys create --tenant a --tenant b` issued b's key; nothing said the first was dropped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert cli(capsys, "keys", "create", "--tenant", "acme")[0] == 0
    keys_before = (tmp_path / "data" / "api_keys.json").read_bytes()
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    assert f"pluralign: error: argument {option}: given twice, " in err and "run it once for each" in err, err
    assert (tmp_path / "data" / "api_keys.json").read_bytes() == keys_before  # acme's key kept, no key issued


def test_a_tenant_given_twice_alike_and_other_options_given_twice_are_taken(capsys, tmp_path):
    """The same tenant twice names one; another option (`--name`) keeps argparse's last-wins."""
    code, out, err = cli(capsys, "keys", "create", "--tenant", "acme", "--tenant", "acme", "--name", "a", "--name", "b",
                         "--data-dir", str(tmp_path))
    assert code == 0, err
    assert (json.loads(out)["tenant"], json.loads(out)["name"]) == ("acme", "b")


def test_keys_revoke_takes_the_key_itself_and_never_prints_it(capsys, tmp_path):
    """A leaked key is known as the key, not by its id. Before: `pluralign keys revoke pk-...` said `no key with id or
    name 'pk-<the whole key>'`, exit 2: the key stayed valid and was printed again on stderr."""
    code, out, err = cli(capsys, "keys", "create", "--tenant", "acme", "--name", "web", "--data-dir", str(tmp_path))
    key = json.loads(out)["key"]
    code, out, err = cli(capsys, "keys", "revoke", key[:-1] + ("A" if key[-1] != "A" else "B"), "--data-dir", str(tmp_path))
    assert code == 2 and key[8:] not in err and "(a key, not shown whole)" in err, err  # not this key: none revoked
    code, out, err = cli(capsys, "keys", "revoke", key, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert [k["name"] for k in json.loads(out)["revoked"]] == ["web"] and key not in out + err
    code, out, err = cli(capsys, "keys", "list", "--data-dir", str(tmp_path))
    assert json.loads(out.splitlines()[-1]) == {"keys": 0}
