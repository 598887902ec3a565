"""`pluralign serve` as a locked-down container runs it: an arbitrary uid (65534 here) that owns nothing
but the data folder, no HOME (Python falls back to the passwd entry, /nonexistent), the code and the
virtual environment read-only to it. Needs root (to switch uid, and for the /tmp case a mount
namespace); skipped with the reason where that is not possible.

Fast: a start whose model cache or temporary folder cannot be written is one line naming the variable
and the folder, before anything loads. Slow (a real start, PAL bootstrapped): the service starts, answers
and stops cleanly writing only in the data folder, also when that folder is an fsGroup volume's root
(another owner, setgid), whose group then reads what it writes."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import wait_healthy
from tests.service.tiny import SHARED_DATA, free_port

ROOT = Path(__file__).resolve().parents[2]
UID = 65534
FS_GROUP = 2000  # a supplementary group the volume belongs to, as Kubernetes' fsGroup


def as_uid(*groups: int) -> list[str]:
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}", f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]


@pytest.fixture(scope="module")
def unprivileged() -> list[str]:
    """The argv prefix that runs a command as uid 65534 (setpriv), once it is known to work here."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run pluralign serve as another uid (setpriv)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    probe = subprocess.run([*as_uid(), sys.executable, "-c", "import training.cli"], cwd=ROOT, capture_output=True, text=True,
                           env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
    if probe.returncode != 0:
        pytest.skip(f"uid {UID} cannot run {sys.executable} with this checkout: {probe.stderr.strip()[-300:]}")
    if subprocess.run([*as_uid(), "test", "-w", str(ROOT)]).returncode == 0:
        pytest.skip(f"{ROOT} is writable by uid {UID}: not a read-only tree")
    return as_uid()


def bare_env(**extra: str) -> dict[str, str]:
    """What a container sets: no HOME, no caches named, offline, one thread."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def owned_folder(path: Path, uid: int = UID, gid: int = UID, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def readable_copy(source: Path, target: Path) -> Path:
    """A copy any account can read (pytest's own tmp folders are root's 0700)."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def outside_tmp(tmp_path: Path) -> Path:
    """A scratch folder the uid can reach: pytest's basetemp is 0700 root's."""
    base = Path("/tmp") / f"pluralign-container30-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    return base


@pytest.fixture
def scratch(tmp_path):
    base = outside_tmp(tmp_path)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_model_cache_it_cannot_write_is_one_line_naming_the_variable(unprivileged, scratch):
    """HOME unset and PLURALIGN_MODEL_CACHE unset: the default cache (~/.cache/pluralign/models) is
    under /nonexistent. Before: `pluralign: error: Permission denied: /nonexistent`, seconds in."""
    data = owned_folder(scratch / "data")
    home = pwd.getpwuid(UID).pw_dir
    run = subprocess.run([*unprivileged, sys.executable, "-m", "training.cli", "serve", "--port", str(free_port())],
                         cwd=ROOT, env=bare_env(PLURALIGN_DATA_DIR=str(data)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pluralign: error: PLURALIGN_MODEL_CACHE (unset: ~/.cache/pluralign/models): "
                                                  f"{home}/.cache/pluralign/models cannot be written"), run.stderr
    assert "smollm2-135m-instruct-fp32" in lines[0] and "all-minilm-l6-v2-onnx" in lines[0]
    assert list(data.iterdir()) == []  # nothing made in the data folder either


def test_serve_embeddings_names_the_model_cache_too(unprivileged, scratch):
    run = subprocess.run([*unprivileged, sys.executable, "-m", "training.cli", "serve-embeddings", "--encoder", "minilm-onnx-int8",
                          "--port", str(free_port())], cwd=ROOT, env=bare_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pluralign: error: PLURALIGN_MODEL_CACHE (unset: ~/.cache/pluralign/models): "), run.stderr


def test_no_writable_temporary_folder_is_one_line_naming_tmpdir(unprivileged, scratch):
    """A read-only root file system with nothing mounted at /tmp (a mount namespace: /tmp and /var/tmp
    read-only). Before: `[Errno 2] No usable temporary directory found in [...]` from torch's import."""
    if any(str(Path(p).resolve()).startswith(("/tmp/", "/var/tmp/")) for p in (sys.executable, ROOT)):
        pytest.skip("the interpreter or the checkout lives under /tmp, which this test mounts over")
    data = owned_folder(scratch / "data")
    mount = "mount --bind \"$0\" /mnt && mount -t tmpfs -o ro tmpfs /tmp && mount -t tmpfs -o ro tmpfs /var/tmp && exec \"$@\""
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount, str(data), "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here (unshare -m): {probe.stderr.strip()[-200:]}")
    run = subprocess.run(["unshare", "-m", "sh", "-c", mount, str(data), *unprivileged, sys.executable, "-m", "training.cli", "serve",
                          "--data-dir", "/mnt", "--port", str(free_port())],
                         cwd=ROOT, env=bare_env(PLURALIGN_MODEL_CACHE="/mnt/models"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pluralign: error: TMPDIR (unset): no writable temporary folder (/tmp, /var/tmp"), run.stderr
    assert "emptyDir" in lines[0]
    assert list(data.iterdir()) == []


def test_a_cli_command_without_a_writable_home_names_the_embedding_cache_variable(unprivileged, scratch):
    """`pluralign eval` (as a Kubernetes Job would run it): the default embedding cache is under HOME.
    Before: the line named the path and the error, not what to set."""
    run = subprocess.run([*unprivileged, sys.executable, "-m", "training.cli", "eval", "--model", "bt", "--protocol", "persona",
                          "--groups", "2", "--data-dir", str(SHARED_DATA)],
                         cwd=ROOT, env=bare_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    home = pwd.getpwuid(UID).pw_dir
    assert run.stderr.strip().splitlines() == [
        f"pluralign: error: the embedding cache (PLURALIGN_CACHE_DIR) {home}/.cache/pluralign/embeddings.sqlite: Permission denied: "
        f"{home}; set PLURALIGN_CACHE_DIR (or --cache) to a folder this account can write"], run.stderr


NO_PASSWD_UID = 1000680000  # OpenShift's kind of uid: assigned per namespace, no entry in the image's passwd file


def test_an_account_without_home_or_passwd_entry_gets_one_line_naming_the_variable_in_process(tmp_path, capsys, monkeypatch):
    """The slow test below (processes of an arbitrary uid: `make test-crash`) in this process, as any account: HOME unset
    and no passwd entry for the uid (`pwd.getpwuid` finds none, as for OpenShift's uids), `pluralign serve` and a CLI
    command stop on one line naming the variable to set, before anything is written."""
    from tests.unit.clitools import cli

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "PLURALIGN_MODEL_CACHE", "PLURALIGN_CACHE_DIR", "PLURALIGN_ENCODER", "PLURALIGN_GENERATOR", "PLURALIGN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    data = tmp_path / "data"
    data.mkdir()
    code, _, err = cli(capsys, "serve", "--port", "0", "--data-dir", str(data))
    assert code == 2, err
    assert err.strip().splitlines() == [
        "pluralign: error: PLURALIGN_MODEL_CACHE (unset: ~/.cache/pluralign/models): this account has no home folder "
        f"(HOME is unset and uid {os.getuid()} has no passwd entry), and all-minilm-l6-v2-onnx, smollm2-135m-instruct-fp32 "
        "must be made in the model cache once; set PLURALIGN_MODEL_CACHE to a writable folder, or make the models there "
        "beforehand as deploy/Dockerfile does"], err
    assert list(data.iterdir()) == []
    code, _, err = cli(capsys, "eval", "--model", "bt", "--protocol", "persona", "--groups", "2", "--data-dir", str(SHARED_DATA))
    assert code == 2, err
    assert err.strip().splitlines() == [
        "pluralign: error: PLURALIGN_CACHE_DIR (unset: ~/.cache/pluralign): this account has no home folder "
        f"(HOME is unset and uid {os.getuid()} has no passwd entry); set PLURALIGN_CACHE_DIR (or --cache) to a folder "
        "this account can write"], err


# processes of an arbitrary uid (~2.7 CPU-s): slow (`make test-crash`); the test above keeps its two lines in the default suite
@pytest.mark.slow
def test_an_arbitrary_uid_without_home_or_passwd_entry_is_one_line_naming_the_variable(unprivileged, scratch):
    """OpenShift's arbitrary uid with group 0 and no HOME set: Python cannot tell a home folder at all.
    Before: a traceback (`RuntimeError: Could not determine home directory.`) from serve's model-cache check,
    and from the CLI's default embedding cache."""
    try:
        pwd.getpwuid(NO_PASSWD_UID)
        pytest.skip(f"uid {NO_PASSWD_UID} has a passwd entry here")
    except KeyError:
        pass
    data = owned_folder(scratch / "data", uid=NO_PASSWD_UID, gid=0, mode=0o770)
    nobody = ["setpriv", f"--reuid={NO_PASSWD_UID}", "--regid=0", "--clear-groups"]
    run = subprocess.run([*nobody, sys.executable, "-m", "training.cli", "serve", "--port", str(free_port())],
                         cwd=ROOT, env=bare_env(PLURALIGN_DATA_DIR=str(data)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        "pluralign: error: PLURALIGN_MODEL_CACHE (unset: ~/.cache/pluralign/models): this account has no home folder "
        f"(HOME is unset and uid {NO_PASSWD_UID} has no passwd entry), and all-minilm-l6-v2-onnx, smollm2-135m-instruct-fp32 "
        "must be made in the model cache once; set PLURALIGN_MODEL_CACHE to a writable folder, or make the models there "
        "beforehand as deploy/Dockerfile does"], run.stderr
    assert list(data.iterdir()) == []
    run = subprocess.run([*nobody, sys.executable, "-m", "training.cli", "eval", "--model", "bt", "--protocol", "persona",
                          "--groups", "2", "--data-dir", str(SHARED_DATA)],
                         cwd=ROOT, env=bare_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        "pluralign: error: PLURALIGN_CACHE_DIR (unset: ~/.cache/pluralign): this account has no home folder "
        f"(HOME is unset and uid {NO_PASSWD_UID} has no passwd entry); set PLURALIGN_CACHE_DIR (or --cache) to a folder "
        "this account can write"], run.stderr


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if not p.is_symlink()}


@contextlib.contextmanager
def serving_as_group_member(data: Path, scratch: Path, tiny_generator_dir: Path) -> Iterator[tuple[str, Path]]:
    """`pluralign serve` on `data` as a uid in FS_GROUP with a bare environment: (its URL, its log) once
    /health answers; stopped by SIGTERM at the end, which must exit 0."""
    generator = readable_copy(tiny_generator_dir, scratch / "generator")
    port = free_port()
    env = bare_env(PLURALIGN_DATA_DIR=str(data), PLURALIGN_GENERATOR=str(generator), PLURALIGN_ENCODER="minilm",
                   PLURALIGN_GENERATION_PROCESS="false", PLURALIGN_MAX_TOKENS="8", PLURALIGN_SHARED_DATA=str(SHARED_DATA))
    log = scratch / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*as_uid(FS_GROUP), sys.executable, "-m", "training.cli", "serve", "--port", str(port), "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, timeout=240)
        yield url, log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_serve_as_an_arbitrary_uid_writes_only_its_data_folder(unprivileged, scratch, tiny_generator_dir):
    """The data folder is an fsGroup volume's root: owned by root, group 2000, setgid, the uid a member.
    Before: the start failed at `chmod` of that folder (only its owner may), and with that out of the way,
    at the PAL bootstrap's embedding cache in ~/.cache (`Read-only file system: /nonexistent`)."""
    data = owned_folder(scratch / "data", uid=0, gid=FS_GROUP, mode=0o2775)
    with serving_as_group_member(data, scratch, tiny_generator_dir) as (url, log):
        key = next(line.split(": ")[-1] for line in log.read_text().splitlines() if "development API key" in line)
        headers = {"Authorization": f"Bearer {key}"}
        chat = {"model": "pluralign", "user": "ann", "messages": [{"role": "user", "content": "Hi"}]}
        assert httpx.post(url + "/v1/chat/completions", json=chat, headers=headers, timeout=60).status_code == 200
        feedback = {"type": "comparison", "user": "ann", "prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}
        assert httpx.post(url + "/v1/feedback", json=feedback, headers=headers, timeout=60).status_code == 201
    assert (data / "cache" / "embeddings.sqlite").is_file()  # the bootstrap's embedding cache: the data folder's own
    assert "Traceback" not in log.read_text() and "telemetry" not in log.read_text(), log.read_text()
    found = modes(data)
    assert found and not [p for p, m in found.items() if m & 0o007], found  # nothing for other accounts
    shared = {p: m for p, m in found.items() if p.startswith(("pal", "api_keys.json"))}
    assert shared and all(m & 0o040 for m in shared.values()), shared  # the group's (vLLM, a backup) to read


@pytest.mark.slow
def test_a_data_folder_made_inside_an_fsgroup_volume_is_its_group_s_to_read(unprivileged, scratch, tiny_generator_dir):
    """PLURALIGN_DATA_DIR a folder not made yet inside an fsGroup volume (`/var/lib/pluralign/data`). Before: the
    start decided the files' modes by the data folder, which did not exist yet, so it made it 2700 and its files
    0600 (the group could read nothing), though every later start wrote 0640 files into it."""
    volume = owned_folder(scratch / "volume", uid=0, gid=FS_GROUP, mode=0o2775)
    data = volume / "data"
    with serving_as_group_member(data, scratch, tiny_generator_dir):
        pass  # started (healthy) and stopped cleanly
    assert stat.S_IMODE(data.stat().st_mode) == 0o2750, oct(data.stat().st_mode)
    found = modes(data)
    shared = {p: m for p, m in found.items() if p.startswith(("pal", "api_keys.json"))}
    assert shared and all(m & 0o040 for m in shared.values()), shared
    assert not [p for p, m in found.items() if m & 0o007], found
