"""Review rows43: the `pluralign` commands at their edges. A trainer's --out holding an artifact a later release
wrote is refused before any training, naming the option and both schemas (as loading one is: `other_schema`)."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli, write_jsonl

ROWS = [{"user_id": f"u{u}", "prompt": f"Tea {i}?", "chosen": "Green.", "rejected": "Black."} for u in range(3) for i in range(6)]


@pytest.mark.parametrize(("command", "what", "files"), [
    (["train", "pal", "--protocol", "file", "--epochs", "1"], "PAL checkpoint", ("model.safetensors", "user_weights.json", "metrics.json")),
    (["train", "em", "--protocol", "file", "--max-iter", "1"], "em-bt-mixture artifact", ("heads.safetensors", "users.jsonl", "metrics.json")),
])
def test_a_trainer_refuses_to_replace_a_later_releases_artifact_in_its_out(tmp_path, capsys, command, what, files):
    """Before: `pluralign train pal --out DIR` over a checkpoint of schema 2 (a later release's, which this one cannot
    load: `read_meta` says so) trained and replaced it with a schema 1 checkpoint, exit 0; the later release lost it."""
    out = tmp_path / "later"
    out.mkdir()
    kind = {"kind": "em-bt-mixture"} if command[1] == "em" else {"variant": "a"}  # (a PAL checkpoint's names no kind)
    (out / "meta.json").write_text(json.dumps({"schema_version": 2, **kind, "encoder_id": "x", "k": 2}))
    for name in files:
        (out / name).write_bytes(b"a later release's bytes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    code, stdout, err = cli(capsys, *command, "--data", data, "--k", "2", "--out", str(out))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert err.strip().startswith(f"pluralign: error: --out {out}: holds a {what} of schema 2, written by a later pluralign "
                                  "release (this one writes schema 1)"), err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("trainer", ["pal", "em"])
def test_the_file_protocols_threshold_in_help_is_the_one_the_command_applies(tmp_path, capsys, monkeypatch, trainer):
    """Before: `train pal|em --help` said "fewer than 5 strict comparisons" in a literal beside
    `pluralign.data.splits.MIN_FILE_PAIRS`; changed, the help kept saying 5. Both now read the constant: set to 7, the
    help says 7 and a user of 6 comparisons is left out (said before the refused --k, nothing trained)."""
    from pluralign.data import splits

    monkeypatch.setattr(splits, "MIN_FILE_PAIRS", 7)
    code, stdout, _ = cli(capsys, "train", trainer, "--help")
    assert code == 0 and "fewer than 7 strict comparisons" in " ".join(stdout.split()), stdout
    rows = [{**ROWS[0], "user_id": user, "prompt": f"Tea {i}?"} for user, n in (("six", 6), ("eight", 8)) for i in range(n)]
    code, _, err = cli(capsys, "train", trainer, "--protocol", "file", "--data", write_jsonl(tmp_path / "p.jsonl", rows),
                       "--k", "9", "--out", str(tmp_path / "out"))
    assert code == 2 and "1 user with fewer than 7 different strict comparisons left out (6 comparisons)" in err, err


def test_an_empty_out_is_refused_not_read_as_the_working_folder(tmp_path, capsys, monkeypatch):
    """Before: `--out ""` (`--out "$OUT"` with OUT unset) read as Path(""), the working folder: in an empty one the
    checkpoint's files were written there, exit 0; in a checkout, "--out: . holds files that are not ...", naming
    a folder the user never gave."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    code, stdout, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", data, "--k", "1", "--epochs", "1", "--out", "")
    assert code == 2 and stdout == "", err
    assert err.strip() == "pluralign: error: --out '': empty; give the folder to write the PAL checkpoint to", err
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("command", [["train", "pal", "--protocol", "file", "--data", "prefs.jsonl", "--out", "pal"],
                                     ["eval", "--model", "bt", "--protocol", "persona"]])
def test_a_thread_count_past_what_openmp_can_make_is_a_usage_error(capsys, command):
    """Before: `--threads 100000` reached torch.set_num_threads, and the first parallel step was a segmentation
    fault (exit 139, no message); 16,384 ended the process with libgomp's "Thread creation failed"."""
    code, stdout, err = cli(capsys, *command, "--threads", "100000")
    assert code == 2 and stdout == "", err
    assert "argument --threads: expected an integer <= 1024, got 100000" in err, err


@pytest.mark.parametrize("key", ["pk-ünïcode", "pk-abc\n", "pk- abc"])
def test_data_import_names_a_key_no_header_can_carry(tmp_path, capsys, monkeypatch, key):
    """Before: `pluralign data import ... --key pk-ünïcode` ended "'ascii' codec can't encode character '\\xfc' in position
    10", naming neither the option nor what is wrong (a key pasted with a newline, an illegal header value, alike)."""
    monkeypatch.delenv("PLURALIGN_KEY", raising=False)
    data = write_jsonl(tmp_path / "prefs.jsonl", ROWS[:1])
    code, stdout, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", data, "--url", "http://127.0.0.1:9", "--key", key)
    assert code == 2 and stdout == "", err
    assert err.startswith("pluralign: error: --key: not an API key (not shown)"), err
    assert key.strip() not in err
