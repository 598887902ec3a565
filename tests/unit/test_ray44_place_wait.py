"""ray44: `ray_place_wait_s` took any positive finite number: at 1e-9 s every job sent to Ray was given back at the first
poll after its send (no actor answers in a nanosecond), at each send, and never ran. Now the setting and the runner take
1 to 3600 seconds, and refuse anything else naming the setting."""

from __future__ import annotations

import pytest

from service.settings import Settings
from training.jobs.ray_runner import MAX_PLACE_WAIT_S, MIN_PLACE_WAIT_S, RayJobRunner
from training.jobs.runner import RunnerConfig

BAD = [1e-9, 0.5, 0.0, -1.0, float("nan"), float("inf"), 3601.0]


@pytest.mark.parametrize("wait_s", BAD)
def test_the_setting_refuses_a_place_wait_no_actor_starts_in_or_past_an_hour(wait_s):
    with pytest.raises(ValueError, match=r"`ray_place_wait_s` must be 1 to 3600 seconds .*got"):
        Settings(ray_place_wait_s=wait_s)


@pytest.mark.parametrize("wait_s", BAD)
def test_the_runner_refuses_it_too_before_it_joins_ray(wait_s, tmp_path):
    with pytest.raises(ValueError, match="`place_wait_s` must be 1 to 3600 seconds"):
        RayJobRunner(RunnerConfig(folder=tmp_path / "jobs"), place_wait_s=wait_s)


def test_the_bounds_are_the_settings_and_take_their_ends():
    assert (MIN_PLACE_WAIT_S, MAX_PLACE_WAIT_S) == (1.0, 3600.0)  # service.settings names them as numbers
    assert Settings(ray_place_wait_s=1).ray_place_wait_s == 1 and Settings(ray_place_wait_s=3600).ray_place_wait_s == 3600
    assert Settings().ray_place_wait_s == 10.0
