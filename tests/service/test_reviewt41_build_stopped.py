"""A start stopped while `Runtime.build` loads (or bootstraps, a minute at a first start) the population model:
the feedback worker and the feedback log's writer it had started kept running (startup41 stopped them only for a
stop once `build` returned, `Runtime.close`) while `pluralign serve` removed the folders they work in (reviewt41)."""

from __future__ import annotations

import threading
import types

import pytest

from service.rewards import UserRewards
from service.runtime import Runtime
from service.settings import Settings


def test_a_stop_while_the_population_model_loads_ends_the_feedback_worker(tmp_path, tiny_pal_dir, minilm, monkeypatch):
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C; a SIGTERM is the CLI's Stopped, a BaseException too

    monkeypatch.setattr(UserRewards, "load_or_bootstrap", stopped)
    before = set(threading.enumerate())
    settings = Settings(data_dir=str(tmp_path / "data"), pal_dir=str(tiny_pal_dir))
    with pytest.raises(KeyboardInterrupt):
        Runtime.build(settings, generator=types.SimpleNamespace(model_id="tiny"), encoder=minilm)
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not [name for name in left if name in ("ingest", "feedback-log")], left
