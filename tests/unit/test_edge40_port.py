"""Session 40: `PORT` meant three things. `pluralign serve` refuses `PORT=''` (and junk) with one line
naming PORT (session 39), but `make serve` passed `--port ${PORT:-8000}`: an empty PORT served on 8000
and junk was argparse's `--port` error, naming an option the user never gave; the image's HEALTHCHECK
and the manifest's liveness probe read `int(PORT or 8000)`, so an empty PORT probed 8000. Now `make
serve` gives no `--port` (the command reads PORT itself, the one check) and the probes read PORT as set:
empty or junk fails everywhere, 8000 only when PORT is unset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from tests.service.tiny import ROOT

MANIFEST = ROOT / "deploy" / "k8s" / "pluralign.yaml"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PLURALIGN_") and k not in ("PORT", "MAKEFLAGS", "MFLAGS", "OMP_NUM_THREADS")}
    return {**env, **extra}


def installed(tmp_path, echo: bool) -> list[str]:
    """`make` variables standing in for the installed .venv: a `pluralign` that is the real CLI (this
    checkout's), or one that prints the PORT and the arguments it was started with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = ('#!/bin/sh\necho "PORT=${PORT-unset} $*"\n' if echo else
              f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m training.cli "$@"\n')
    (bin_dir / "pluralign").write_text(script)
    (bin_dir / "pluralign").chmod(0o755)
    (tmp_path / "stamp").touch()
    return [f"BIN={bin_dir}", f"STAMP={tmp_path / 'stamp'}"]


@pytest.mark.parametrize("port, args, expected", [
    (None, [], "PORT=unset serve --host 127.0.0.1"),       # the command's own default, 8000
    ("9000", [], "PORT=9000 serve --host 127.0.0.1"),
    ("", [], "PORT= serve --host 127.0.0.1"),             # was `--port 8000`
    (None, ["PORT=9001"], "PORT=9001 serve --host 127.0.0.1"),  # a make variable reaches the command too
])
def test_make_serve_leaves_the_port_to_pluralign_serve(tmp_path, port, args, expected):
    env = clean_env(**({"PORT": port} if port is not None else {}))
    done = subprocess.run(["make", "-s", "serve", *installed(tmp_path, echo=True), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected, done.stdout


@pytest.mark.parametrize("value", ["", "abc"])
def test_make_serve_refuses_a_port_as_pluralign_serve_does(tmp_path, value):
    """The real CLI through `make serve` and alone: the same one line naming PORT (before: `make serve`
    with PORT=abc said `argument --port: ... 'abc'`, with PORT='' it served on 8000)."""
    direct = subprocess.run([sys.executable, "-m", "training.cli", "serve"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=clean_env(PORT=value, PYTHONPATH=str(ROOT)))
    assert direct.returncode == 2 and direct.stderr.startswith(f"pluralign: error: PORT={value!r}: the port"), direct.stderr
    # its own process group, its data in tmp_path: where `make serve` starts a server after all (PORT='' did), it is ended
    make = subprocess.Popen(["make", "-s", "serve", *installed(tmp_path, echo=False)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=clean_env(PORT=value, PLURALIGN_DATA_DIR=str(tmp_path / "data")))
    try:
        _, stderr = make.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)
        _, stderr = make.communicate()
        pytest.fail(f"`PORT={value!r} make serve` went on to serve: {stderr[-2000:]}")
    assert make.returncode != 0 and direct.stderr.strip() in stderr, stderr


def probes() -> dict[str, list[str]]:
    """The commands that read PORT to probe the server: the image's HEALTHCHECK and the manifest's exec probes."""
    (healthcheck,) = re.findall(r"^HEALTHCHECK .*? CMD (\[.*\])$", (ROOT / "deploy" / "Dockerfile").read_text(), flags=re.M)
    found = {"HEALTHCHECK": json.loads(healthcheck)}
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        for c in (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for name, probe in c.items():
                if name.endswith("Probe") and "exec" in probe:
                    found[f"{c['name']}.{name}"] = probe["exec"]["command"]
    return found


@pytest.mark.parametrize("value", ["", "abc", "70000"])
def test_the_probes_fail_on_a_port_serve_refuses_and_say_so(value):
    """The probes read `int(os.environ.get('PORT') or 8000)`: an empty PORT probed 8000 (whatever listens
    there, another replica's server included, answered for this one). Now a PORT the server refuses fails
    the probe, its output naming PORT and the value."""
    found = probes()
    assert "HEALTHCHECK" in found and len(found) >= 2, found
    for name, command in found.items():
        assert command[0] == "python", (name, command)
        done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=30,
                              env=clean_env(PORT=value))
        assert done.returncode != 0 and f"PORT={value!r}" in done.stderr, (name, done.stderr)
