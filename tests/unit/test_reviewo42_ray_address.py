"""Ray's own RAY_ADDRESS: with PLURALIGN_RAY_ADDRESS unset, `ray.init(address=None)` joins the cluster it names (a KubeRay
pod sets it) instead of starting a local Ray, so it is checked as PLURALIGN_RAY_ADDRESS is (ops42, reviewed)."""

from __future__ import annotations

import pytest

from tests.unit.test_ops42_ray_address import _closed_port
from training.jobs.runner import RunnerConfig


@pytest.mark.timeout(60)
def test_a_runner_without_an_address_checks_rays_own_variable(tmp_path, monkeypatch):
    """Before: ray.init(address=None) went to RAY_ADDRESS, where nothing answered, and retried for minutes."""
    ray = pytest.importorskip("ray")
    from training.jobs.ray_runner import RayJobRunner

    if ray.is_initialized():  # another test's: this one starts none
        ray.shutdown()
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ConnectionError, match=rf"^RAY_ADDRESS \(Ray's own variable; PLURALIGN_RAY_ADDRESS unset\) = {address}: "
                                              "no Ray cluster answers there"):
        RayJobRunner(RunnerConfig(folder=tmp_path / "jobs"), address=None)


def test_serves_start_check_names_rays_own_address_where_nothing_answers(tmp_path, monkeypatch):
    """`pluralign serve`'s check before the models (`check_runs_here`; the one line, exit 2, no data folder left:
    `test_serve_on_a_ray_address_where_nothing_answers_stops_at_once_with_one_line`). Before: it checked only
    PLURALIGN_RAY_ADDRESS, so the start loaded the models and hung in ray.init (over 60 s measured, `pluralign serve`)."""
    from service.settings import Settings
    from training.commands.serve import check_runs_here

    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    settings = Settings.load(environ={}, data_dir=str(tmp_path / "data"), job_runner="ray")
    with pytest.raises(ValueError, match=rf"^RAY_ADDRESS \(Ray's own variable; PLURALIGN_RAY_ADDRESS unset\) = {address}: "
                                         "no Ray cluster answers there"):
        check_runs_here(settings)
