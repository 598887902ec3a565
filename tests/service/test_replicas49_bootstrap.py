"""Two replicas first started together on one empty PLURALIGN_PAL_DIR: one trains the bootstrap checkpoint, the other
waits for it (`pluralign.files.folder_lock`) and loads it. Before session 49 both trained, each saving over the other
(or failing its start when the other's save was under way: ArtifactBusy), and each served its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.rewards import checkpoint_version
from tests.service.tiny import SHARED_DATA

pytestmark = pytest.mark.slow  # two processes load MiniLM, one bootstraps: ~1 min on two busy cores (`make test-scaleout`)

REPO = Path(__file__).resolve().parents[2]
START = """
import json, sys, time
from pathlib import Path
from pluralign.embed.encoders import SentenceEncoder
from service.rewards import UserRewards
encoder = SentenceEncoder()
Path(sys.argv[3]).touch()
while not Path(sys.argv[4]).exists():
    time.sleep(0.01)
rewards = UserRewards.load_or_bootstrap(sys.argv[1], encoder, sys.argv[2])
print(json.dumps({"version": rewards.version, "note": rewards.note}))
"""


def test_two_starts_on_one_empty_pal_dir_train_once_and_serve_the_same_model(tmp_path):
    if not (SHARED_DATA / "anthropic_persona").is_dir():
        pytest.skip(f"persona data not found under {SHARED_DATA}")
    pal, go = tmp_path / "shared" / "pal", tmp_path / "go"
    env = {**os.environ, "PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", START, str(pal), str(SHARED_DATA), str(tmp_path / f"ready{i}"), str(go)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        go.touch()  # both look at the empty folder at once
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    served = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted("bootstrapped" in s["note"] for s in served) == [False, True], served  # before: both trained
    assert served[0]["version"] == served[1]["version"] == checkpoint_version(pal)
