"""Session 22a, crash-safety leftovers at the command line: bad timestamps in imported files,
`pluralign serve` with a data folder it cannot use, trainers' saves that a kill or a second
trainer could leave half done."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.service.tiny import tiny_generator_dir  # noqa: F401, F811 (a fixture)
from tests.unit.clitools import cli, write_jsonl

ROW = {"user_id": "ann", "prompt": "Colour?", "chosen": "Red.", "rejected": "Blue."}


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_a_parquet_created_at_that_is_no_time_is_an_error_naming_the_row_and_field(tmp_path, capsys, when):
    """Before: `data export` of a Parquet file whose created_at is NaN exited 0 and wrote
    `"created_at":null` (inf: `"created_at":null` too), as if the row had no time."""
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist([{**ROW, "created_at": 1.7e9}, {**ROW, "created_at": when}]), path)
    code, out, err = cli(capsys, "data", "export", "--source", "parquet", "--path", str(path), "--out", str(tmp_path / "out.jsonl"))
    assert code == 2, (out, err)
    assert err.strip() == (f"pluralign: error: --path {path}: row 2, field `created_at`: must be a Unix time in seconds "
                           "(as the service's export writes it), a number from 0 (1970-01-01) to 253402300799 "
                           f"(9999-12-31 UTC), got {when} (--skip-bad skips bad rows)")
    assert not (tmp_path / "out.jsonl").exists()



def serve(tmp_path, data) -> subprocess.CompletedProcess:
    env = dict(os.environ, PLURALIGN_DATA_DIR=str(data), PLURALIGN_SHARED_DATA=str(tmp_path / "no-shared-data"))
    return subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_serve_on_a_file_as_data_folder_is_one_line_naming_the_setting(tmp_path):
    """Before: `pluralign: error: File exists: <path>`, which named neither PLURALIGN_DATA_DIR nor
    what was wrong with the path."""
    data = tmp_path / "data"
    data.write_text("not a folder")
    result = serve(tmp_path, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"pluralign: error: PLURALIGN_DATA_DIR (setting data_dir) {data}: {data} is a file, not a folder"
    assert "development API key" not in result.stderr


def test_serve_on_a_damaged_data_folder_prints_no_key_and_issues_none(tmp_path):
    """A first start (no key yet) over a data folder whose jobs/promotions.json is damaged. Before:
    the development key was issued into api_keys.json and printed, then the models loaded (~30 s),
    then `pluralign: error: .../promotions.json: not a promotions file`: the service never ran, and
    the next start, once the file was mended, printed no key (one was stored)."""
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / "promotions.json").write_text("{")
    result = serve(tmp_path, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "development API key" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("pluralign: error:")]
    assert error.startswith(f"pluralign: error: {data / 'jobs' / 'promotions.json'}: not a promotions file")
    assert not (data / "api_keys.json").exists()


# -- trainers' saves: a kill mid-save, two saves to one --out at once ------------------------------

def _disk_fills_mid_write(monkeypatch, module):
    """`module.safe_save_file` (what peft and transformers write weights with) writes half the file,
    then fails as a full disk does: what a kill or ENOSPC mid-save leaves."""
    import errno
    import importlib

    target = importlib.import_module(module)
    real = target.safe_save_file

    def half(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(target, "safe_save_file", half)


def _pairs(tmp_path):
    rows = [{"user_id": f"u{i}", "prompt": f"Pick {i}?", "chosen": "yes", "rejected": f"no {i}"} for i in range(4)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_maxmin_save_cut_short_leaves_the_earlier_policy_whole(tmp_path, tiny_generator_dir, capsys, monkeypatch):  # noqa: F811
    """Before: `train maxmin --out DIR` over an earlier policy wrote DIR/adapter in place: a save cut
    short (disk full, a kill) left the earlier meta.json beside a truncated adapter_model.safetensors,
    and load_policy failed on it ('Error while deserializing header')."""
    from transformers import AutoModelForCausalLM

    from pluralign.policy.maxmin import load_policy

    out = tmp_path / "policy"
    argv = ["train", "maxmin", "--pairs", _pairs(tmp_path), "--base", str(tiny_generator_dir), "--steps", "1",
            "--batch-size", "2", "--lora-r", "2", "--quiet", "--out", str(out)]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    earlier = _files(out)
    _disk_fills_mid_write(monkeypatch, "peft.peft_model")
    code, _, err = cli(capsys, *argv[:-3], "--seed", "1", "--quiet", "--out", str(out))
    assert code == 2 and err.startswith("pluralign: error: No space left on device"), err
    assert _files(out) == earlier
    load_policy(out, AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)), expected_base=str(tiny_generator_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "policy"]  # nothing half-written beside it


def test_an_fspo_full_save_cut_short_leaves_the_earlier_model_whole(tmp_path, tiny_generator_dir, capsys, monkeypatch):  # noqa: F811
    """Before: `train fspo --full --out DIR` wrote transformers' files into DIR in place: cut short,
    DIR held the earlier pluralign.json and config beside a truncated model.safetensors."""
    rows = [{"user_id": f"u{u}", "prompt": f"Pick {i}?", "chosen": ["yes", "no"][u % 2], "rejected": ["no", "yes"][u % 2] + "!"}
            for u in range(6) for i in range(3)]
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    out = tmp_path / "full"
    argv = ["train", "fspo", "--population", "file", "--data", data, "--base", str(tiny_generator_dir), "--shots", "1", "--steps", "1",
            "--batch-size", "1", "--episodes", "1", "--eval-per-user", "1", "--full", "--out", str(out)]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    earlier = _files(out)
    _disk_fills_mid_write(monkeypatch, "transformers.modeling_utils")
    code, _, err = cli(capsys, *argv[:-2], "--seed", "1", "--out", str(out))
    assert code == 2 and "No space left on device" in err, err
    assert _files(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "prefs.jsonl"]


class _SlowPolicy:
    """Stands in for a peft model whose save takes a while: writes its `tag` as the weights, then
    waits for `wait` (the other save to have finished) before the save carries on."""

    def __init__(self, tag, wait=None, started=None):
        import types

        self.tag, self.wait, self.started = tag, wait, started
        self.peft_config = {"default": types.SimpleNamespace(base_model_name_or_path=None)}

    def save_pretrained(self, path, **kwargs):
        os.makedirs(path, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            with open(os.path.join(path, name), "w") as f:
                f.write(self.tag)
        if self.started is not None:
            self.started.set()
        if self.wait is not None:
            assert self.wait.wait(30)


@pytest.mark.parametrize("artifact", ["maxmin policy", "adapter"])
def test_two_saves_to_one_out_at_once_leave_one_whole_artifact(tmp_path, artifact):
    """Two trainers saving to one --out at once, the first slower: the first wrote its weights,
    the second saved whole, then the first wrote its description. Before: the MaxMin policy at
    --out had the second run's weights under the first run's meta.json; the adapter's first save
    failed ('No such file or directory: .../.out.tmp/pluralign.json': the second had removed and
    then renamed the shared temp folder). Now each save writes its own temp folder and the last
    to finish is the artifact, whole."""
    import threading

    from pluralign.policy.adapters import AdapterMeta, read_meta, save_adapter
    from pluralign.policy.maxmin import PolicyMeta, save_policy

    out = tmp_path / "out"

    def save(policy):
        if artifact == "adapter":
            save_adapter(policy, out, AdapterMeta(kind="user", base_model="tiny", shots=0, data_version=policy.tag))
        else:
            save_policy(policy, out, PolicyMeta(schema_version=1, kind="maxmin-lora", base_model="tiny", objective=policy.tag,
                                                heads=1, steps=1, beta=0.1, lora_r=2))

    second_done, first_wrote = threading.Event(), threading.Event()
    errors = []
    first = threading.Thread(target=lambda: _catch(errors, save, _SlowPolicy("first", wait=second_done, started=first_wrote)))
    first.start()
    assert first_wrote.wait(30)
    save(_SlowPolicy("second"))
    second_done.set()
    first.join(30)
    assert errors == []
    if artifact == "adapter":
        weights, described = (out / "adapter_model.safetensors").read_text(), read_meta(out).data_version
    else:
        import msgspec

        weights, described = (out / "adapter" / "adapter_model.safetensors").read_text(), msgspec.json.decode((out / "meta.json").read_bytes())["objective"]
    assert weights == described == "first"  # the last save to finish, whole
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 (reported by the test)
        errors.append(repr(exc))


def test_a_pal_save_into_a_folder_another_save_is_writing_is_refused(tmp_path):
    """PAL checkpoints (and EM mixtures) are written in place, meta.json last, so two saves into one
    folder at once interleaved: the first wrote its weights, the second its whole checkpoint, then
    the first its meta.json over the second's: a checkpoint of one run's weights under the other's
    description, which loads (same K). Now the second save, while the first holds the folder, is an
    error naming it before it touches anything (`pluralign train pal` and `train em` say --out)."""
    import threading

    import torch

    from pluralign.reward import pal_checkpoint
    from pluralign.reward.pal import load_pal, save_pal
    from tests.unit.test_pal_artifacts import table, tiny_model

    folder = tmp_path / "ckpt"
    wrote_weights, second_done = threading.Event(), threading.Event()
    real = pal_checkpoint.write_atomic

    def slow(path, data):
        real(path, data)
        if path.name == pal_checkpoint.MODEL_FILE and threading.current_thread().name == "first":
            wrote_weights.set()
            assert second_done.wait(30)

    first_model, errors = tiny_model(), []
    pal_checkpoint.write_atomic = slow
    try:
        first = threading.Thread(name="first", target=lambda: save_pal(folder, first_model, table(), "enc", {"run": 1.0}))
        first.start()
        assert wrote_weights.wait(30)
        torch.manual_seed(1)
        try:
            save_pal(folder, tiny_model(), table(), "enc", {"run": 2.0})
        except ValueError as exc:  # pluralign.files.ArtifactBusy
            errors.append(str(exc))
        second_done.set()
        first.join(30)
    finally:
        pal_checkpoint.write_atomic = real
    assert errors == [f"{folder}: another process is saving a PAL checkpoint there now: wait for it to finish, or give another folder"]
    model, _, meta = load_pal(folder)
    assert meta.metrics == {"run": 1.0}
    # load_pal places the model on the default device (CUDA where there is one); the saved one stayed where it was made
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(model.state_dict().values(), first_model.state_dict().values(), strict=True))
