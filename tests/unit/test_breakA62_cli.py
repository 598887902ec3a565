"""Session 62 (breakA62): a newcomer's careless command lines. Every error is one line starting
`pluralign: error: ` that names the option and the problem, and leaves the user's files as they were."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli, write_jsonl


@pytest.mark.parametrize("out_name", ["prefs.jsonl", "./prefs.jsonl"])
def test_data_export_onto_its_own_source_is_refused_and_leaves_it_as_it_was(capsys, tmp_path, monkeypatch, out_name):
    """Before: `data export --path prefs.jsonl --out prefs.jsonl --skip-bad` answered 0 and replaced the
    source with the export: its bad row was gone for good (and every row rewritten in pluralign's form),
    where `audit --data prefs.jsonl --out prefs.jsonl` refuses the same mistake."""
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
    assert line.startswith(f"pluralign: error: --out {out_name}: is the file --path reads"), line


def test_data_export_into_the_dataset_folder_it_reads_is_refused(capsys, tmp_path):
    """A `datasets` save_to_disk folder given as --path, and --out a file inside it: refused as audit refuses it,
    nothing written there."""
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}]
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    listed = sorted(p.name for p in folder.iterdir())
    code, out, err = cli(capsys, "data", "export", "--source", "file", "--path", str(folder), "--user", "u",
                         "--out", str(folder / "export.jsonl"))
    assert code == 2 and out == "", (code, out, err)
    assert sorted(p.name for p in folder.iterdir()) == listed
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: --out {folder / 'export.jsonl'}: is inside the folder --path reads"), line


def test_data_export_to_another_file_still_writes_it(capsys, tmp_path):
    """The check refuses only the source itself: an export beside it is written as before."""
    source = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    code, out, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", source, "--user", "u",
                         "--out", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    assert json.loads(out)["records"] == 1
    assert json.loads((tmp_path / "out.jsonl").read_text())["user_id"] == "u"
