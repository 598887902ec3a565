"""`PLURALIGN_RAY_ADDRESS` naming no Ray cluster (a typo, the head node down): the Ray runner says so at once (ops42)."""

from __future__ import annotations

import socket

import pytest

from training.jobs.runner import RunnerConfig


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_ray_address_where_nothing_answers_is_an_error_naming_the_setting(tmp_path, scheme):
    """Before: `ray.init` on a GCS address retried for minutes (over 200 s measured, never returning) with only Ray's
    own warnings, and `pluralign serve`'s start hung there; on a ray:// one without Ray's client installed it said
    only to pip install it. Now: an error naming PLURALIGN_RAY_ADDRESS and the address, before `ray.init` (a ray://
    address without the client: a ValueError naming `ray[client]`; with it, as the other: nothing answers)."""
    pytest.importorskip("ray")
    from training.jobs.ray_runner import RayJobRunner

    address = f"{scheme}127.0.0.1:{_closed_port()}"
    with pytest.raises((ConnectionError, ValueError), match="PLURALIGN_RAY_ADDRESS") as refused:
        RayJobRunner(RunnerConfig(folder=tmp_path / "jobs"), address=address)
    assert address in str(refused.value)
    expected = "ray[client]" if isinstance(refused.value, ValueError) else "no Ray cluster answers there"
    assert expected in str(refused.value)
    if not scheme:
        assert isinstance(refused.value, ConnectionError)


def test_serve_on_a_ray_address_where_nothing_answers_stops_at_once_with_one_line(tmp_path):
    """Before: the start loaded the models, printed a development key, then failed in the admin area's start with a
    60-line traceback (exit 3); with Ray's retries on such an address it hung there for minutes. Now: one line naming
    the setting, exit 2, before any model loads, and no data folder left."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PLURALIGN_JOB_RUNNER": "ray", "PLURALIGN_RAY_ADDRESS": f"127.0.0.1:{_closed_port()}",
           "PLURALIGN_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve"], cwd=Path(__file__).resolve().parents[2],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pluralign: error: PLURALIGN_RAY_ADDRESS (setting ray_address)"), done.stderr
    assert "no Ray cluster answers there" in lines[0] and "development API key" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_manifests_ray_client_address_has_rays_client_installed():
    """deploy/k8s sets PLURALIGN_RAY_ADDRESS=ray://ray-head:10001; `ray.init` on a ray:// address needs `ray[client]`
    (grpcio). Before, requirements.txt (what the image installs) pinned plain `ray`: every replica's start failed with
    "Ray Client requires pip package `ray[client]`" (measured with this venv's ray 2.60.0)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    config = next(d for d in yaml.safe_load_all((root / "deploy" / "k8s" / "pluralign.yaml").read_text())
                  if d and d.get("kind") == "ConfigMap" and "PLURALIGN_RAY_ADDRESS" in d.get("data", {}))
    assert config["data"]["PLURALIGN_RAY_ADDRESS"].startswith("ray://")
    [ray] = [line.split("#")[0].strip() for line in (root / "requirements.txt").read_text().splitlines()
             if line.startswith("ray")]
    assert ray.startswith("ray[client]=="), ray
