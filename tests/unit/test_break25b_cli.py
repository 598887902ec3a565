"""Session 25b: a new user's pass over the `pluralign` command line with wrong arguments and bad
files. Every error is one line starting `pluralign: error: ` that names the option (and the file
and line where there is one); nothing is half written."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("argv, said", [
    (["eval", "--model", "bt", "--protocol", "persona", "--active-target", "group"], "--active-target group chooses how --shots active picks"),
    (["eval", "--model", "bt", "--protocol", "ukp", "--query-size", "30"], "--query-size 30: persona only"),
    (["eval", "--model", "bt", "--protocol", "persona", "--shots", "active"], "--shots active needs a user model with a posterior"),
])
def test_eval_usage_errors_have_the_clis_prefix(capsys, argv, said):
    """Before: `error: --query-size 30: persona only ...`, where every other command's error is
    `pluralign: error: ...` (the prefix scripts and tests look for)."""
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: {said}"), line


@pytest.mark.parametrize("argv, said, command", [
    (["serve", "--port", "99999"], "argument --port: expected an integer < 65536, got 99999", "serve"),
    (["data", "stats", "--source", "jsonl"], "the following arguments are required: --path", "data stats"),
    (["train", "pal", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0", "train pal"),
    (["nosuch"], "argument command: invalid choice: 'nosuch'", ""),
])
def test_usage_errors_have_the_same_prefix_and_name_the_command(capsys, argv, said, command):
    """Before: argparse's own `pluralign serve: error: argument --port: ...` beside the commands'
    `pluralign: error: ...`: two prefixes for one program."""
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pluralign: error: {said}"), last
    assert last.endswith(f"(see `pluralign {command}{' ' if command else ''}--help`)"), last
    assert err.startswith("usage: pluralign"), err


@pytest.fixture
def inputs(tmp_path):
    """A folder, a missing file, a binary file and a file where a folder is expected."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "notes.txt").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize("argv, option, name, said", [
    (["data", "stats", "--source", "jsonl", "--path"], "--path", "folder", "is a directory, not a file"),
    (["data", "stats", "--source", "jsonl", "--path"], "--path", "missing.jsonl", "no such file"),
    (["data", "export", "--source", "jsonl", "--out", "{tmp}/o.jsonl", "--path"], "--path", "folder", "is a directory, not a file"),
    (["audit", "--group-by", "segment", "--data"], "--data", "folder", "is a directory, not a file"),
    (["train", "maxmin", "--out", "{tmp}/mm", "--pairs"], "--pairs", "folder", "is a directory, not a file"),
    (["train", "pal", "--protocol", "file", "--out", "{tmp}/pal", "--data"], "--data", "binary.jsonl", "line 1: malformed JSON"),
    (["train", "em", "--protocol", "file", "--out", "{tmp}/em", "--data"], "--data", "folder", "is a directory, not a file"),
    (["train", "pal", "--protocol", "file", "--out", "{tmp}/pal", "--data"], "--data", "missing.jsonl", "no such file"),
    (["data", "stats", "--source", "ukp_convarg1", "--path"], "--path", "notes.txt", "no UKPConvArg1 XML files"),
    (["keys", "list", "--data-dir"], "--data-dir", "notes.txt", "a file, not a folder"),
    (["eval", "--model", "bt", "--protocol", "persona", "--data-dir"], "--data-dir", "folder", "no persona trait file"),
    (["train", "em", "--protocol", "ukp", "--out", "{tmp}/em", "--data-dir"], "--data-dir", "folder", "no UKPConvArg1 XML files"),
])
def test_an_input_that_cannot_be_read_is_named_by_its_option(capsys, inputs, argv, option, name, said):
    """Before: `Is a directory: /x/folder` (no option), `no preference file at /x/missing.jsonl`,
    `train pal`'s `/x/binary.jsonl: line 1: ...` where every other command says `--data /x/binary.jsonl: ...`,
    `Not a directory: /x/notes.txt/api_keys.json` for `keys --data-dir` given a file."""
    argv = [a.replace("{tmp}", str(inputs)) for a in argv]
    code, out, err = cli(capsys, *argv, str(inputs / name))
    assert code == 2 and out == "" and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: {option} {inputs / name}: ") and said in line, line
    assert sorted(p.name for p in inputs.iterdir()) == ["binary.jsonl", "folder", "notes.txt"]  # nothing written


@pytest.mark.parametrize("argv, needs", [
    (["train", "pal", "--protocol", "persona"], "--protocol file"),
    (["train", "em", "--protocol", "ukp"], "--protocol file"),
    (["train", "fspo", "--population", "persona"], "--population file"),
])
def test_data_given_without_protocol_file_is_refused(capsys, tmp_path, argv, needs):
    """`--data` is read only by `--protocol file` (`--population file`); with another it was ignored
    without a word, and `train pal` (`train fspo`: minutes, a model loaded) trained on persona instead."""
    code, out, err = cli(capsys, *argv, "--data", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "out"))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --data {tmp_path / 'p.jsonl'}: read only with {needs}"), line


def test_a_binary_file_is_not_called_utf16(capsys, inputs):
    """Before: a binary file (bytes 0..255) was "malformed JSON ...; it looks UTF-16 encoded (NUL bytes
    between characters): save the file as UTF-8", because its first byte was NUL."""
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(inputs / "binary.jsonl"))
    assert code == 2 and "UTF-16" not in err and "it holds NUL bytes: a binary file, not JSON lines" in err, err
    utf16 = inputs / "utf16.jsonl"
    utf16.write_bytes('{"user_id": "u", "prompt": "Q", "chosen": "a", "rejected": "b"}\n'.encode("utf-16-le"))
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(utf16))
    assert code == 2 and "it looks UTF-16 encoded" in err, err


def test_skip_bad_reports_the_skipped_rows_in_one_readable_line(capsys, tmp_path):
    """Before: `skipped 1 bad rows; first: ['line 2: malformed JSON ...']`: a Python list, "1 rows", no file."""
    path = tmp_path / "p.jsonl"
    good = '{"user_id": "u", "prompt": "Q%d", "chosen": "a", "rejected": "b"}'
    path.write_text("\n".join([good % 1, "{not json", good % 2, '{"user_id": "u"}', good % 3]) + "\n")
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(path), "--skip-bad", "--json")
    assert code == 0 and '"judgments":3' in out, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"--path {path}: skipped 2 bad rows (--skip-bad); first: line 2: malformed JSON"), line
    assert "; line 4, field `chosen`: missing required field" in line and "['" not in line, line


def test_a_ukp_pair_the_service_refuses_is_named_by_its_pair_id(capsys, tmp_path):
    """`data import --source ukp_convarg1`: rows come from XML, not lines; the service's `line 2.source`
    (the second row it was sent) is said as the pair's id. A stub service refuses the second row."""
    from tests.unit.clitools import import_stand_in
    from tests.unit.test_break19 import UKP_PAIR

    def answer(path, headers, body):
        return 400, {"error": {"message": "`line 2.source`: too long", "param": "line 2.source"}}

    arg2 = "<arg2><text>B</text><stance>t</stance></arg2>"
    pairs = [UKP_PAIR.format(arg2=arg2).replace("<id>p1</id>", f"<id>{pair}</id>") for pair in ("p1", "p2", "p3")]
    (tmp_path / "topic.xml").write_text(f'<?xml version="1.0"?><list>{"".join(pairs)}</list>')
    with import_stand_in(answer) as url:
        code, out, err = cli(capsys, "data", "import", "--source", "ukp_convarg1", "--path", str(tmp_path),
                             "--url", url, "--key", "pk-test")
    assert code == 2 and out == "", err
    assert err.strip().startswith(f"pluralign: error: --path {tmp_path}: pair p2, field `source`: too long (user 'w1'"), err


@pytest.mark.parametrize("extra, option, name, said", [
    (["--out"], "--out", "folder", "is a directory; give a file name for the report"),
    (["--personalized", "pal", "--pal"], "--pal", "folder", "is not a PAL checkpoint: no meta.json"),
    (["--group-by", "em_cluster", "--em"], "--em", "notes.txt", "not an EM mixture artifact"),
    (["--user-groups"], "--user-groups", "folder", "is a directory, not a file"),
    (["--user-groups"], "--user-groups", "empty.json", "is empty: expected a JSON object user_id -> group"),
])
def test_audit_checks_its_other_inputs_before_loading_the_encoder(capsys, inputs, extra, option, name, said):
    """Before: `--out folder` ran the whole audit, then `a folder, not a file, is at this path: /x/folder`;
    `--pal`/`--em` loaded the encoder, then `/x/folder is not a PAL checkpoint` (no option);
    `--user-groups folder`: `Is a directory: /x/folder`; an empty one: `line 1, column 1: malformed JSON (Expecting value)`."""
    (inputs / "empty.json").write_text("")
    data = inputs / "p.jsonl"
    data.write_text('{"user_id": "u", "prompt": "Q", "chosen": "a", "rejected": "b", "attributes": {"segment": "s"}}\n')
    argv = ["audit", "--data", str(data), "--group-by", "segment", *extra, str(inputs / name)]
    if "--group-by" in extra:
        argv = argv[:4] + argv[6:]  # the last --group-by wins anyway; keep one
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()  # no model-loading progress bar before it
    assert line.startswith(f"pluralign: error: {option} {inputs / name}: ") and said in line, line


def test_data_export_onto_a_folder_named_like_a_file_is_refused_before_reading(capsys, inputs):
    """Before: `data export --out out.jsonl` where out.jsonl is a folder read the whole source, then
    `a folder, not a file, is at this path: /x/out.jsonl` (no option)."""
    (inputs / "out.jsonl").mkdir()
    data = inputs / "p.jsonl"
    data.write_text('{"user_id": "u", "prompt": "Q", "chosen": "a", "rejected": "b"}\n')
    code, out, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(data), "--out", str(inputs / "out.jsonl"))
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line == f"pluralign: error: --out {inputs / 'out.jsonl'}: is a directory; give a file name for the exported file", line


def test_an_encoder_folder_that_holds_no_model_is_named_by_its_option(capsys, tmp_path):
    """Before: `pluralign: error: Unrecognized model in /x/folder. Should have a model_type key in its config.json.`
    (transformers' words; neither --encoder nor what was expected)."""
    (tmp_path / "folder").mkdir()
    code, out, err = cli(capsys, "serve-embeddings", "--port", "0", "--encoder", str(tmp_path / "folder"))
    assert code == 2 and out == "", err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pluralign: error: --encoder {tmp_path / 'folder'}: {tmp_path / 'folder'}: not a sentence-transformers model folder"), last


@pytest.mark.parametrize("option", [["--user", "ann"], ["--skip-bad"]])
def test_data_options_ukp_would_ignore_are_refused(capsys, tmp_path, option):
    """Before: `data stats --source ukp_convarg1 --user ann` (or --skip-bad) read the folder as if neither was given."""
    code, out, err = cli(capsys, "data", "stats", "--source", "ukp_convarg1", "--path", str(tmp_path), *option)
    assert code == 2 and out == "", err
    assert err.strip().startswith(f"pluralign: error: {option[0]}: read only for a preference file"), err
