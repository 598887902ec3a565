"""A service SIGKILLed at each step of a promotion's swap serves, at its next start, the model it served
before (killed before the new one was in place) or the new one (killed after), with the same version
as that model had, and nothing of the swap left beside it.

The swap is the real one (`Runtime.swap_rewards`: copy into `.pal-promoted.staged`, rename the served
folder aside, rename the staged one in, remove the old) in a real service process, killed by SIGKILL
right after the step named; the restart is a real start on the same data folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

CHILD = r"""
import os, pathlib, shutil, signal, sys
from pluralign.embed.encoders import SentenceEncoder
from tests.service.tiny import start_service

data, gen, pal, source, step = sys.argv[1:6]
server, svc = start_service(pathlib.Path(data), pathlib.Path(gen), pathlib.Path(pal), SentenceEncoder())
rename, copy2 = pathlib.Path.rename, shutil.copy2

def killed_after(name):
    print("killed after", name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

def renamed(self, target):
    out = rename(self, target)
    if step == "aside" and pathlib.Path(target).name.startswith(".pal-promoted.retired"):
        killed_after("the served folder was renamed aside")
    if step == "placed" and pathlib.Path(target).name == "pal-promoted":
        killed_after("the new folder was renamed in")
    return out

def copied(src, dst, **kw):
    out = copy2(src, dst, **kw)
    if step == "copy" and ".pal-promoted.staged" in str(dst):
        killed_after("one file copied into the staged folder")
    return out

pathlib.Path.rename, shutil.copy2 = renamed, copied
svc.runtime.swap_rewards(pathlib.Path(source))
print("swap finished: not killed", flush=True)
"""


def variant(src, dst, val_acc: float):
    """A copy of the PAL checkpoint `src` with another version (a field of meta.json the version hashes)."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "meta.json").read_text())
    (dst / "meta.json").write_text(json.dumps({**meta, "metrics": {"val_acc": val_acc}}))
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("step, served", [("copy", "old"), ("aside", "old"), ("placed", "new")])
def test_a_service_killed_at_each_step_of_a_swap_serves_a_whole_model_at_its_next_start(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, step, served):
    from service.rewards import checkpoint_version
    from tests.service.tiny import start_service

    data = tmp_path / "data"
    old = variant(tiny_pal_dir, data / "pal-promoted", 0.51)
    new = variant(tiny_pal_dir, tmp_path / "candidate", 0.52)
    versions = {"old": checkpoint_version(old), "new": checkpoint_version(new)}
    assert len(set(versions.values())) == 2
    run = subprocess.run([sys.executable, "-c", CHILD, str(data), str(tiny_generator_dir), str(tiny_pal_dir), str(new), step],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == -9 and "killed after" in run.stdout, (run.returncode, run.stdout, run.stderr[-2000:])
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    assert svc.runtime.rewards.version == versions[served]
    assert sorted(p.name for p in data.iterdir() if "pal-promoted" in p.name) == ["pal-promoted"]
    assert checkpoint_version(data / "pal-promoted") == versions[served]
    with server, svc.client("acme") as c:
        chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ann", "max_tokens": 3,
                                                     "messages": [{"role": "user", "content": "Morning drink?"}]})
        assert chat.status_code == 200, chat.text
