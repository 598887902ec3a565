"""A server stopped while torch imports (startup41 made a SIGTERM during `serve`'s or `serve-embeddings`' start
end it as other commands end, 143 with one error line): the error line was not the last line. torch's import,
cut short, had not set its loggers' level yet (WARNING, once imported whole), so its exit hook's INFO lines
(`FakeTensor cache stats: ...`) came below the error at the root logger's INFO (reviewt41). Slow (a process
importing torch, ~3 s): `make test-all`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.service.tiny import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# SIGTERM as soon as torch's import has run a module that registers an exit hook which logs (at INFO)
STOPPED_IN_TORCH = """
import importlib.abc, importlib.util, os, signal, sys

class StopThere(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torch._subclasses.fake_tensor":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def run_then_stop(module):
            run(module)
            os.kill(os.getpid(), signal.SIGTERM)

        spec.loader.exec_module = run_then_stop
        return spec

sys.meta_path.insert(0, StopThere())
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_serve_embeddings_stopped_while_torch_imports_ends_with_its_error_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "PLURALIGN_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", STOPPED_IN_TORCH, "serve-embeddings", "--host", "127.0.0.1", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "pluralign: error: stopped by SIGTERM", done.stderr[-2000:]
