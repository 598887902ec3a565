"""A new user's mistakes at the `pluralign` command line (break session 18): each is a one-line error
naming the option or file and the problem, a non-zero exit, no traceback, and nothing half-written.

Most tests call the CLI's `main` with real files in a temp dir (a process per case would cost seconds
of imports each); one runs the real process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from training.cli import main


def rows(n_users: int = 2, per_user: int = 6) -> list[dict]:
    return [
        {"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
         "attributes": {"segment": f"s{u % 2}"}}
        for u in range(n_users) for i in range(per_user)
    ]


def write_jsonl(path, items) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return str(path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...`; a usage error's SystemExit counts as its code."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- paths the command cannot read or write -------------------------------------------------------


def test_a_folder_given_as_the_preference_file_is_an_error_naming_it(tmp_path, capsys):
    folder = tmp_path / "prefs"
    folder.mkdir()
    code, _, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(folder))
    assert code == 2 and "Traceback" not in err
    assert err.startswith("pluralign: error:") and str(folder) in err and "directory" in err.lower()


def test_export_onto_a_folder_or_under_a_file_is_an_error_naming_the_path(tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", data, "--out", str(folder))
    assert code == 2 and "Traceback" not in err and str(folder) in err and "folder" in err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "p.jsonl"]  # no temp file left
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", data, "--out", f"{data}/x.jsonl")
    assert code == 2 and "Traceback" not in err and data in err


def test_audit_out_onto_a_folder_is_an_error_not_a_traceback(tmp_path, capsys, minilm_cache):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    folder = tmp_path / "report"
    folder.mkdir()
    code, _, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--out", str(folder), "--json", "--cache", minilm_cache)
    assert code == 2 and "Traceback" not in err and str(folder) in err


def test_the_real_process_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.cli", "data", "stats", "--source", "jsonl", "--path", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"pluralign: error: Is a directory: {tmp_path}"]


@pytest.fixture
def minilm_cache(tmp_path_factory) -> str:
    """The suite's shared embedding cache file (MiniLM vectors), so audits embed little."""
    return str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")
