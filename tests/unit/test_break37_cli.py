"""Session 37: the `pluralign` command line attacked as a new user would, each run in a subprocess.

Before: `--seed -1` trained (`train pal`, `eval`) or ended in a line naming nothing ("expected non-negative
integer", `audit`), and a seed past 2**63 in "Overflow when unpacking long long"; `audit --out` equal to
one of its inputs (`--data`, `--user-groups`, `--cache`) replaced that input with the report; a bad
`--group-weights` was a traceback (`0,0`: ZeroDivisionError) or a line naming no option, and with
`--data` it was silently not read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pluralign.embed.cache import EmbeddingCache
from tests.service.tiny import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def pluralign(*argv: str, cwd=None, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...` in a fresh process."""
    done = subprocess.run([sys.executable, "-m", "training.cli", *argv], capture_output=True, text=True,
                          env=ENV, cwd=cwd or ROOT, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...` run by `training.cli.main` in this process."""
    from training.cli import main

    try:
        code = main(list(argv))
    except SystemExit as stopped:
        code = stopped.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def usage_error(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `pluralign argv...` run by `training.cli.main` in this process: for a usage error,
    which argparse raises (SystemExit 2, its line on stderr) before the command does anything. A fresh process for each
    (`pluralign`) cost ~1 s of the default suite's time apiece, 32 of them here (suite48); the key-name test below
    still sees a usage error through a real `python -m training.cli`."""
    return in_process(capsys, *argv)


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1] if err.strip() else ""


SEEDED = (("train", "pal"), ("train", "em"), ("train", "maxmin"), ("train", "fspo"), ("train", "adapter"), ("eval",), ("audit",))


@pytest.mark.parametrize("command", SEEDED, ids=lambda c: " ".join(c))
@pytest.mark.parametrize("seed", ["-1", str(2**31), "99999999999999999999999"])
def test_a_seed_out_of_range_is_a_usage_error_naming_seed(command, seed, capsys):
    code, out, err = usage_error(capsys, *command, f"--seed={seed}")
    line = last_line(err)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert line.startswith("pluralign: error: argument --seed: expected an integer") and seed in line, line
    assert "0" in line and str(2**31) in line, line  # the bounds, those a job's `seed` param has


def rows() -> list[dict]:
    return [{"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.",
             "rejected": f"A much longer answer {i}.", "attributes": {"g": "ab"[u % 2]}} for u in range(4) for i in range(6)]


@pytest.fixture
def inputs(tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"u0": "x", "u1": "y"}))
    cache = tmp_path / "emb.sqlite"
    return data, groups, cache


@pytest.mark.parametrize("which", ["data", "user-groups", "cache", "data via another spelling"])
def test_audit_out_equal_to_an_input_is_refused_and_the_input_kept(inputs, tmp_path, which):
    data, groups, cache = inputs
    argv = ["audit", "--data", str(data), "--group-by", "g", "--cache", str(cache), "--json"]
    if which == "user-groups":
        argv += ["--user-groups", str(groups)]
    if which == "cache":  # an embedding cache there already (an earlier run's)
        EmbeddingCache(cache).close()
    target = {"data": data, "user-groups": groups, "cache": cache,
              "data via another spelling": tmp_path / ".." / tmp_path.name / "prefs.jsonl"}[which]
    option = {"data via another spelling": "data"}.get(which, which)
    before = target.read_bytes()
    code, out, err = pluralign(*argv, "--out", str(target))
    line = last_line(err)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert line.startswith(f"pluralign: error: --out {target}: ") and f"--{option}" in line, line
    assert target.read_bytes() == before


@pytest.mark.parametrize(("weights", "problem"), [
    ("a,b", "'a' is not a number"),
    ("0,0", "at least one must be above 0"),
    ("nan,1", "'nan' is not a finite number"),
    ("-1,2", "'-1' is below 0"),
    ("1,2,3", "3 weights for --groups 2"),
    ("", "expected comma-separated numbers"),
])
def test_audit_group_weights_bad_is_a_usage_error_naming_it(weights, problem, capsys):
    code, out, err = usage_error(capsys, "audit", "--source", "persona", "--groups", "2", f"--group-weights={weights}", "--group-by", "group", "--json")
    line = last_line(err)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert "--group-weights" in line and problem in line, line


def test_audit_group_weights_without_persona_is_an_error_not_ignored(inputs):
    data, _, cache = inputs
    code, out, err = pluralign("audit", "--data", str(data), "--group-by", "g", "--group-weights", "0.9,0.1", "--cache", str(cache))
    line = last_line(err)
    assert code == 2 and out == "", err
    assert line.startswith("pluralign: error: --group-weights 0.9,0.1: read only with --source persona"), line


def keys(capsys, folder, *argv: str) -> tuple[int, list[dict], str]:
    """`pluralign keys --data-dir folder argv...` in this process (`in_process`): a fresh process apiece (~0.6 CPU-s,
    torch-free) read and wrote the same key file as this one does."""
    code, out, err = in_process(capsys, "keys", "--data-dir", str(folder), *argv)
    return code, [json.loads(line) for line in out.splitlines()], err


def test_keys_revoke_by_a_name_two_keys_share_revokes_neither_and_names_their_ids(tmp_path, capsys):
    """The rotation docs/api.md gives (create a new key, move the client, revoke the old one) with the
    new key named as the old: `keys revoke web` revoked both, the new key the client had just moved to
    included, so the rotation ended in 401s. Now a name (or an id prefix) that matches several keys
    revokes none and lists their ids; one id then revokes one."""
    old = keys(capsys, tmp_path, "create", "--tenant", "acme", "--name", "web")[1][0]
    new = keys(capsys, tmp_path, "create", "--tenant", "acme", "--name", "web")[1][0]
    code, out, err = keys(capsys, tmp_path, "revoke", "web")
    line = last_line(err)
    assert code == 2 and out == [] and "Traceback" not in err, err
    assert line.startswith("pluralign: error: 'web' names 2 keys") and old["id"] in line and new["id"] in line, line
    assert keys(capsys, tmp_path, "list")[1][-1] == {"keys": 2}
    code, out, err = keys(capsys, tmp_path, "revoke", old["id"])
    assert code == 0 and [k["id"] for k in out[0]["revoked"]] == [old["id"]], err
    assert [k["id"] for k in keys(capsys, tmp_path, "list")[1][:-1]] == [new["id"]]
    code, out, err = keys(capsys, tmp_path, "revoke", "web")  # one key has that name now: revoked
    assert code == 0 and [k["id"] for k in out[0]["revoked"]] == [new["id"]], err


def test_keys_revoke_of_a_name_that_is_also_another_keys_id_revokes_neither(tmp_path, capsys):
    first = keys(capsys, tmp_path, "create", "--tenant", "acme")[1][0]
    second = keys(capsys, tmp_path, "create", "--tenant", "acme", "--name", first["id"])[1][0]  # a name that reads as an id
    code, out, err = keys(capsys, tmp_path, "revoke", first["id"])
    assert code == 2 and first["id"] in last_line(err) and second["id"] in last_line(err), err
    assert keys(capsys, tmp_path, "list")[1][-1] == {"keys": 2}


@pytest.mark.slow  # moto and an audit process (torch imported): ~15 s on two busy cores
def test_audit_store_uri_without_a_store_names_the_option_and_what_to_give(tmp_path):
    """Before: `pluralign audit --store s3://bucket/prefix` on a prefix holding no pluralign tables (a typo in
    the prefix) ended in Lance's words, "pluralign: error: Table 'preferences' was not found", naming neither
    --store nor the URI. Now the error names both, as a folder without a store is named (moto on loopback)."""
    from tests.s3 import S3Server

    with S3Server("pluralign-test") as s3:
        env = {"PLURALIGN_STORE_ENDPOINT": s3.endpoint, "PLURALIGN_STORE_ALLOW_HTTP": "true", "PLURALIGN_STORE_REGION": s3.region,
               "PLURALIGN_STORE_ACCESS_KEY_ID": s3.access_key, "PLURALIGN_STORE_SECRET_ACCESS_KEY": s3.secret_key}
        uri = "s3://pluralign-test/typo"
        done = subprocess.run([sys.executable, "-m", "training.cli", "audit", "--store", uri, "--group-by", "seg", "--json"],
                              capture_output=True, text=True, env={**ENV, **env}, cwd=ROOT, timeout=120)
    line = last_line(done.stderr)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    assert line.startswith(f"pluralign: error: --store {uri}: no pluralign store there (no `preferences` table)"), line
    assert "PLURALIGN_STORE_URI" in line, line


def stderr_lines(text: str) -> list[str]:
    """The worker's stderr as the job runner reads it (`training.jobs.runner`: `\\r` splits lines too)."""
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()]


@pytest.mark.slow  # the persona population embedded, then training cut: ~30 s on two busy cores
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_trainer_stopped_mid_training_ends_on_its_error_line_not_its_progress_bar(tmp_path, signal_name):
    """Before: the error line was written after the bar's last draw, on the bar's line, and the bar was drawn
    again below it as the process exited, so the last line was `pal-a K=2:   0%| ... epoch/s]`. A job's error
    is its worker's last line (`exit code 143: <last line>`): a PAL or EM job stopped or failed in training
    said only where its bar stood. Now the bars are closed first and the error is the last line, alone."""
    import signal
    import time

    out = tmp_path / "pal"
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "train", "pal", "--protocol", "persona", "--groups", "2", "--k", "2",
                             "--epochs", "200", "--out", str(out), "--cache", str(tmp_path / "emb.sqlite")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={k: v for k, v in ENV.items() if k != "TQDM_DISABLE"})  # bars drawn, as in a job's worker
    seen = b""
    deadline = time.monotonic() + 240
    while b"epoch" not in seen and time.monotonic() < deadline:  # training has begun: its bar is drawn
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        seen += chunk
    assert b"epoch" in seen, seen[-2000:]
    proc.send_signal(getattr(signal, signal_name))
    stdout, rest = proc.communicate(timeout=120)
    lines = stderr_lines((seen + rest).decode())
    words = {"SIGTERM": "stopped by SIGTERM", "SIGINT": "interrupted (SIGINT)"}[signal_name]
    assert proc.returncode == 128 + getattr(signal, signal_name) and stdout == b"", lines[-3:]
    assert lines[-1] == f"pluralign: error: {words}", (seen + rest)[-1500:]
    assert not out.exists() or not (out / "meta.json").exists()  # no loadable half checkpoint


@pytest.mark.parametrize("command", [("eval", "--model", "bt", "--protocol", "persona"), ("train", "pal", "--protocol", "persona"),
                                     ("train", "em", "--protocol", "persona"), ("train", "fspo", "--population", "persona"),
                                     ("audit", "--source", "persona", "--group-by", "group")], ids=lambda c: " ".join(c[:2]))
def test_a_persona_population_of_more_groups_than_a_job_may_ask_is_a_usage_error(command, capsys):
    """Before: `pluralign eval --protocol persona --groups 99999999` began building 2.5 billion synthetic users
    (still running, memory growing, when stopped after 120 s); a job's `groups` param is 2 to 64. Now the
    command line takes the same range, refused before anything loads."""
    code, out, err = usage_error(capsys, *command, "--groups", "99999999")
    line = last_line(err)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert line.startswith("pluralign: error: argument --groups: expected an integer < 65, got 99999999"), line


@pytest.mark.parametrize(("name", "problem"), [("a\nb", "U+000A at 2"), ("ok\u202eevil", "U+202E at 3"),
                                              ("x" * 129, "129 characters; at most 128")])
def test_a_key_name_with_control_characters_or_too_long_is_a_usage_error(tmp_path, name, problem, capsys):
    """Before (break37's note): `keys create --name` took newlines, bidi overrides and 100,000 characters,
    which `keys list` showed escaped and a terminal or a log reader would show otherwise. The first case runs a real
    `python -m training.cli` (its argv and its stdout through the OS); the others `training.cli.main` in this process."""
    run = pluralign if name == "a\nb" else lambda *argv: in_process(capsys, *argv)
    code, out, err = run("keys", "--data-dir", str(tmp_path), "create", "--tenant", "acme", "--name", name)
    assert code == 2 and out == "" and "argument --name:" in last_line(err) and problem in last_line(err), err
    assert not (tmp_path / "api_keys.json").exists()
    code, out, _ = run("keys", "--data-dir", str(tmp_path), "create", "--tenant", "acme", "--name", "acme web app é")
    assert code == 0 and json.loads(out)["name"] == "acme web app é"
