"""benchmarks/onboarding_latency.py runs end to end on a small store and prints its JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a benchmark script's contract, about 10 s: `make test-bench`
def test_onboarding_latency_reads_every_stored_user_and_times_each_step():
    done = subprocess.run([sys.executable, "-m", "benchmarks.onboarding_latency", "--users", "3", "--pairs", "4", "--history", "2",
                           "--repeats", "2", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["setting"] == {"users": 3, "pairs": 4, "history": 2, "repeats": 2, "dim": out["setting"]["dim"]}
    assert all(out[k]["median_ms"] > 0 for k in ("read", "choose", "bald"))
    bad = subprocess.run([sys.executable, "-m", "benchmarks.onboarding_latency", "--users", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--users must be >= 1" in bad.stderr
