"""A new user's trial of the command line (session newlib55)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

ENCODERS = "expected `minilm`, `minilm-onnx`, `minilm-onnx-int8` or `smollm2`"


@pytest.mark.parametrize("argv", [
    ["audit", "--source", "ukp_convarg1", "--path", str(REPO.parent / "shared" / "data" / "ukp_convarg1"), "--group-by", "worker_stance"],
    ["eval", "--model", "bt", "--protocol", "persona"],
    ["train", "pal", "--protocol", "persona", "--out", "pal"],
])
def test_a_mistyped_encoder_is_refused_naming_the_option_before_any_data_is_read(tmp_path, argv):
    """`pluralign audit ... --encoder minilm-onx` read all of UKPConvArg1 (84,000 rows, ~9 s on two busy cores) before
    it said "unknown encoder 'minilm-onx'", and eval and the trainers said so naming no option, where every other usage
    error of theirs names it (serve-embeddings': "--encoder minilm-onx: unknown encoder ..."). Now each refuses it at
    once, exit 2, naming --encoder, nothing heavy imported and nothing written."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", *argv, "--encoder", "minilm-onx"],
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    said = f"pluralign: error: --encoder minilm-onx: unknown encoder 'minilm-onx': {ENCODERS}"
    assert (result.returncode, lines) == (2, [said]), result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "lancedb", "pyarrow", "sklearn"}, sorted(imported & {"torch", "lancedb", "pyarrow", "sklearn"})
    assert sorted(p.name for p in tmp_path.iterdir()) == []
