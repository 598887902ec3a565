"""Session 28: the trainers on a disk that fills up while they save (RLIMIT_FSIZE: a write past the
limit fails with EFBIG, as a full disk fails one with ENOSPC; CPython ignores SIGXFSZ). Before, the
one error line named no file (`pluralign: error: [Errno 27] File too large`), or `train adapter`
ended in safetensors' traceback; a job's error, which is the worker's last line, said as little."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.files import file_size_limit
from tests.processes import AS_FROM_A_TERMINAL
from tests.service.tiny import ROOT, save_tiny_generator
from tests.unit.clitools import cli, write_jsonl


def rows(n_users: int = 2, per_user: int = 10) -> list[dict]:
    return [{"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}."}
            for u in range(n_users) for i in range(per_user)]


def test_train_pal_on_a_full_disk_names_the_file_it_could_not_write(tmp_path, capsys, one_torch_thread):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    out = tmp_path / "pal"
    cache = ["--cache", str(tmp_path / "emb.sqlite")]
    with file_size_limit(200_000):  # the embedding cache fits; model.safetensors (~850 kB) does not
        code, stdout, err = cli(capsys, "train", "pal", "--protocol", "file", "--data", data, "--k", "1", "--epochs", "1", "--out", str(out), *cache)
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line == f"pluralign: error: File too large: {out / 'model.safetensors'}", line
    assert not (out / "meta.json").exists() and [p.name for p in out.iterdir()] == []  # no checkpoint, no temp file


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_tiny_generator(tmp_path_factory.mktemp("tiny-base"))


def test_train_adapter_on_a_full_disk_is_one_line_naming_the_adapter(tmp_path, capsys, tiny_base, one_torch_thread):
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    registry = tmp_path / "adapters"
    argv = ("train", "adapter", "--user", "u0", "--data", data, "--base", str(tiny_base), "--registry", str(registry), "--steps", "1")
    with file_size_limit(20_000):  # the adapter's config fits, its weights (~36 kB) do not
        code, stdout, err = cli(capsys, *argv)
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line == f"pluralign: error: File too large: {registry / 'default' / 'u0' / 'adapter_model.safetensors'}", line
    assert list((registry / "default").iterdir()) == []  # nothing half-written left beside it
    with file_size_limit(2_000):  # the first file peft writes (its README) fails: named too
        code, stdout, err = cli(capsys, *argv)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith(f"pluralign: error: File too large: {registry / 'default' / 'u0'}"), err
    assert list((registry / "default").iterdir()) == []
    code, stdout, err = cli(capsys, *argv)  # room again
    assert code == 0 and (registry / "default" / "u0" / "pluralign.json").is_file(), err


def test_train_maxmin_on_a_full_disk_is_one_line_naming_out(tmp_path, capsys, tiny_base, one_torch_thread):
    """Every artifact written whole beside its target (`staged_folder`: MaxMin policies, `train fspo
    --full`) says so. Before: safetensors' traceback."""
    data = write_jsonl(tmp_path / "p.jsonl", rows())
    out = tmp_path / "mm"
    with file_size_limit(20_000):
        code, stdout, err = cli(capsys, "train", "maxmin", "--pairs", data, "--base", str(tiny_base), "--steps", "1",
                                "--batch-size", "2", "--quiet", "--out", str(out))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"pluralign: error: File too large: {out}", err
    assert list(tmp_path.iterdir()) == [tmp_path / "p.jsonl"]  # nothing half-written beside it


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted (SIGINT)"), (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_a_command_stopped_by_ctrl_c_or_sigterm_says_so_in_one_line(tmp_path, sig, code, said):
    """Before: Ctrl-C printed a KeyboardInterrupt traceback; SIGTERM (`kill`, a job's cancel) ended the
    process there and then, saying nothing, and no `finally` ran (a trainer's hidden folder or temp
    file stayed beside its --out). The command reads a FIFO: it is running once the FIFO is open."""
    fifo = tmp_path / "prefs.jsonl"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *AS_FROM_A_TERMINAL, "-m", "training.cli", "data", "stats", "--source", "jsonl",
                             "--path", str(fifo)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(fifo, "wb"):  # returns once the command opened it to read
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and out == b"", (proc.returncode, err)
    assert err.decode().strip().splitlines() == [f"pluralign: error: {said}"], err
