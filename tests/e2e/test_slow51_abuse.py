"""benchmarks/abuse.py's input case against `pluralign serve` (tiny generator, tiny PAL): each row that wants
a 400 naming a field reads the field from the service's error body, `{"error": {"param": ...}}` (docs/api.md).
Slow-marked (one serve start, ~30-60 s on two shared cores): `make test-bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.service.tiny import ROOT, free_port


@pytest.mark.slow
def test_the_input_case_finds_each_refused_field_named(tiny_generator_dir, tiny_pal_dir):
    done = subprocess.run([sys.executable, "benchmarks/abuse.py", "--cases", "input", "--generator", str(tiny_generator_dir),
                           "--pal-dir", str(tiny_pal_dir), "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["case"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])["rows"]}
    naming = {case: r["got"] for case, r in rows.items() if r["want"].startswith("400 naming ")}
    # the audit's group_by and since (x3), chat's seed, temperature, messages[0].content and n (x4), the job's params.out
    assert len(naming) == 8, naming
    assert rows["chat `temperature` bad"]["got"] == "400 temperature", rows["chat `temperature` bad"]
    assert [case for case, r in rows.items() if not r["ok"]] == [], naming
