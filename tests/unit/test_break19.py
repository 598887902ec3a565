"""A fifth hostile pass on the `pluralign` command line (break session 19): a bad preference file
given to `data stats|export|import` (or a trainer's `--data`) was an error naming its line but not
the file; `audit --store` ignored `--user-groups` (and the other inputs it does not read) without a
word; `data import` to a service it could not reach printed a traceback.

The tests call the CLI's `main` with real files in a temp dir, as tests/unit/test_break18_cli.py does."""

from __future__ import annotations

import json

import pytest

from training.cli import main


def rows(n_users: int = 2, per_user: int = 4) -> list[dict]:
    return [
        {"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
         "attributes": {"segment": f"s{u % 2}"}}
        for u in range(n_users) for i in range(per_user)
    ]


def write_lines(path, lines: list[str | dict]) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...`; a usage error's SystemExit counts as its code."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


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
