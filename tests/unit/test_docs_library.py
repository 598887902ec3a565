"""docs/library.md, the guide to pluralign from Python, run as a researcher runs it: every ```python
block in order, in one fresh interpreter started from the repository root, on the guide's own tiny
settings. Any error fails the test, and so does anything the guide's run prints to stderr (a
progress bar or a warning is noise in a notebook). The fast variant checks in-process, in well under
a second, what renames rot first: every block compiles, every name it imports from pluralign
exists, and it needs neither the service nor the command line."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

GUIDE = REPO / "docs" / "library.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def guide_blocks() -> list[tuple[int, str]]:
    """(first line, code) of each ```python block of docs/library.md, in order."""
    text = GUIDE.read_text()
    return [(text[: m.start()].count("\n") + 2, m[1]) for m in _BLOCK.finditer(text)]


def test_the_guide_is_linked_from_the_readme_and_its_blocks_import_what_exists():
    assert "(docs/library.md)" in (REPO / "README.md").read_text()
    blocks = guide_blocks()
    assert len(blocks) >= 8
    for first, code in blocks:
        tree = ast.parse(code, filename=f"docs/library.md:{first}")  # a SyntaxError names the block's line
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for module in modules:
                    assert not module.startswith(("service", "training")), f"docs/library.md:{first + node.lineno - 1}: {module}"
                if isinstance(node, ast.ImportFrom) and node.module.startswith("pluralign"):
                    module = __import__(node.module, fromlist=["_"])
                    for alias in node.names:
                        assert hasattr(module, alias.name), f"docs/library.md:{first + node.lineno - 1}: {node.module}.{alias.name}"


@pytest.mark.slow
def test_every_python_block_of_the_guide_runs_in_order_in_a_fresh_interpreter(shared_data):
    script = "\n".join(code for _, code in guide_blocks()).replace('"../shared/data"', repr(str(SHARED_DATA)))
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # a researcher's shell: progress bars on
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]  # before: transformers' "Loading weights" progress bar
    assert "seen users: accuracy" in done.stdout and "stored;" in done.stdout, done.stdout
