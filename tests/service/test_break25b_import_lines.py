"""Session 25b, a new user's import: every error about a row names the line of the user's file.

`pluralign data import` regroups a file's rows by user and sends each user's rows in chunks
(<= 500 rows, <= 512 KB a request). When the service refused a row, the CLI printed the service's
own words, which name the line *within the chunk* ("`line 2.source`"): for a bad row on line 1203
of the file the user was sent to line 2. Now the CLI names `--path FILE: line 1203, field ...`,
for each form it reads (JSONL, a TRL dataset without user ids, Parquet), and for a user id the
service cannot take, before anything is sent."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.service.tiny import start_service
from tests.unit.clitools import cli

BIG = "A long and careful answer, with reasons. " * 2700  # ~110 KB: four rows fill a 512 KB chunk


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("b25b-import"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def _import(capsys, svc, path, *extra, source="jsonl", who="acme", key=None) -> subprocess.CompletedProcess:
    """`pluralign data import` of `path` into `svc` as tenant `who` (or with `key`), run in this process as tests/unit's
    CLI tests run it: a process apiece (~1 CPU-s of imports each) checked nothing more."""
    argv = ["data", "import", "--source", source, "--path", str(path), "--url", svc.url, "--key", key or svc.keys[who], *extra]
    code, out, err = cli(capsys, *argv)
    return subprocess.CompletedProcess(argv, code, out, err)


def _row(user, i, **fields):
    return {"user_id": user, "prompt": f"Question {i}?", "chosen": f"Short {i}.", "rejected": f"A longer answer {i}, with words.", **fields}


def _file_with_bad_row_at_1203(user):
    """Lines 1-5: `user`'s long rows (its first chunk is lines 1-4); 6-1202: another user's rows;
    1203: `user`'s row with a `source` over the service's max_source_chars; 1204: a good one."""
    rows = [_row(user, i, chosen=f"{i}: {BIG}") for i in range(5)]
    rows += [_row(f"{user}-other", i) for i in range(1197)]
    rows += [_row(user, 1203, source="s" * 200), _row(user, 1204)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_a_row_the_service_refuses_is_named_by_its_line_in_the_file(svc, tmp_path, capsys):
    path = tmp_path / "ann.jsonl"
    path.write_text(_file_with_bad_row_at_1203("ann"))
    result = _import(capsys, svc, path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--path {path}: line 1203, field `source`: 200 characters; at most 128" in result.stderr, result.stderr[-2000:]
    assert "line 2" not in result.stderr, result.stderr[-2000:]  # the chunk's own line, which the user's file does not have
    assert "4 rows of 0 users were stored" not in result.stderr and "4 rows" in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("pluralign: error: "), result.stderr[-2000:]


def test_a_trl_dataset_without_user_ids_is_named_by_its_line_too(svc, tmp_path, capsys):
    """TRL's conversational implicit-prompt form, the user given by --user; a blank line and a
    row skipped by --skip-bad before the bad one must not shift the count."""
    def conv(i, **extra):
        prompt = [{"role": "user", "content": f"Question {i}?"}]
        return {"chosen": prompt + [{"role": "assistant", "content": f"Short {i}."}],
                "rejected": prompt + [{"role": "assistant", "content": f"A longer answer {i}."}], **extra}

    lines = [json.dumps(conv(i)) for i in range(3)] + ["", "{not json"] + [json.dumps(conv(i)) for i in range(3, 6)]
    lines.append(json.dumps(conv(9, attributes={"x" * 100: "label"})))  # line 9: an attribute name over 64 characters
    path = tmp_path / "trl.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = _import(capsys, svc, path, "--user", "tia", "--skip-bad")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--path {path}: line 9, field `attributes`: an attribute name of 100 characters; at most 64" in result.stderr, result.stderr
    assert "line 7" not in result.stderr, result.stderr  # its place among the rows sent (lines 4 and 5 were not)


def test_a_parquet_row_the_service_refuses_is_named_by_its_row(svc, tmp_path, capsys):
    from pluralign.data.io import read_preference_lines, write_parquet

    rows = [_row("pia", i) for i in range(4)] + [_row("pat", 0)] + [_row("pia", 5, attributes={"group": "g" * 300})]
    records, _ = read_preference_lines([json.dumps(r).encode() for r in rows])
    path = tmp_path / "prefs.parquet"
    write_parquet(records, path)
    result = _import(capsys, svc, path, source="parquet")
    assert result.returncode == 2, result.stderr[-2000:]
    # a Parquet file has rows, not lines (edges35: it said "line 6")
    assert f"--path {path}: row 6, field `attributes.group`: 300 characters; at most 256" in result.stderr, result.stderr
    assert "line" not in result.stderr, result.stderr


def test_a_parquet_row_whose_user_id_the_service_cannot_take_is_named_by_its_row(svc, tmp_path, capsys):
    """edges35: before, `--path prefs.parquet: line 2, field `user_id``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ids.parquet"
    pq.write_table(pa.Table.from_pylist([_row("ida35", 0), _row("bob smith", 1)]), path)
    result = _import(capsys, svc, path, source="parquet")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--path {path}: row 2, field `user_id`: " in result.stderr and "nothing was sent" in result.stderr, result.stderr


def test_a_user_id_the_service_cannot_take_is_named_by_its_line_before_anything_is_sent(svc, tmp_path, capsys):
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [_row("ida25", 0), _row("ida25", 1), _row("bob smith", 2)]))
    result = _import(capsys, svc, path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--path {path}: line 3, field `user_id`: " in result.stderr and "'bob smith'" in result.stderr, result.stderr
    assert "nothing was sent" in result.stderr, result.stderr
    with svc.client("acme") as acme:
        assert acme.get("/v1/users/ida25").status_code == 404  # checked before the first request, not after ida25's rows


@pytest.mark.parametrize("key, said", [("pk-not-a-key", "not a key of this service"), ("admin", "an admin key")])
def test_a_key_the_service_refuses_is_named_as_the_key_not_as_the_user(svc, tmp_path, key, said, capsys):
    """Before: `the service refused user 'ida' (401): {...}`, as if the user's rows were at fault."""
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(_row("ida26", i)) + "\n" for i in range(2)))
    result = _import(capsys, svc, path, key=svc.keys.get(key, key))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pluralign: error: --key: {svc.url} refused it (") and said in line, line
    assert "user 'ida26'" not in line, line


@pytest.fixture(scope="module")
def limited_svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("b25b-limited"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    tenant_requests_per_second=2)
    with server:
        yield service


def test_an_import_waits_out_the_services_rate_limit_instead_of_failing_half_way(limited_svc, tmp_path, capsys):
    """Five users are five requests; at 2 requests a second the third was a 429 and the command
    stopped half way ("the service refused user 'u2' (429) ...; 2 rows of 2 users were stored
    before it"). Each chunk carries an Idempotency-Key, so sending it again after Retry-After is safe."""
    path = tmp_path / "five.jsonl"
    path.write_text("".join(json.dumps(_row(f"rl{u}", 0)) + "\n" for u in range(5)))
    result = _import(capsys, limited_svc, path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["stored"] == 5


def test_an_import_url_that_is_not_the_service_root_is_named_as_the_url(svc, tmp_path, capsys):
    """Review reviewtrial51 (left alone by session trial51): `--url $URL/admin` (the dashboard's address, where an operator
    found the service) reached no import route: the 404 was printed as "the service refused user 'dsu' (404) for
    --path FILE line 1: {raw JSON}", blaming the user and the row, with advice to run the same command again. The
    import route has no 404 of its own (a user it does not know is created), so a 404 or 405 is the URL: say so."""
    path = tmp_path / "dsu.jsonl"
    path.write_text(json.dumps(_row("dsu", 1)) + "\n")
    for suffix in ("/admin", "/v2"):
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", str(path), "--url", svc.url + suffix,
                             "--key", svc.keys["acme"])  # in-process, as tests/unit's CLI tests run it
        assert code == 2 and out == "", (code, out, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(f"pluralign: error: --url {svc.url}{suffix}: no pluralign import route there ("), line
        assert "refused user" not in line and "run again" not in line and svc.url in line.split("give ")[-1], line
