"""A hostile pass on crash safety (break session 21b): what a full disk, a damaged artifact or a
killed process leaves behind, driven with real processes and real files in temp dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from pluralign.store.feedback_log import FeedbackLog
from tests.service.tiny import ROOT, free_port

# A service process whose disk fills up in the middle of a feedback's record (RLIMIT_FSIZE: the
# write stops part way, then fails with EFBIG, as ENOSPC does), then has room again, acknowledges
# one more feedback and dies without closing anything (os._exit, as kill -9). It prints the
# pref_ids it acknowledged.
FULL_DISK_CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys
    from pluralign.store.feedback_log import FeedbackLog
    from tests.service.test_feedback_log import feedback

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails instead of killing
    log = FeedbackLog(sys.argv[1])
    acked = [log.append(feedback("ann", 0)).rows[0].pref_id]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(log._path(log._current)) + 20, hard))
    try:
        acked.append(log.append(feedback("ann", 1)).rows[0].pref_id)
    except OSError as exc:  # refused: the client got a 500, never an acknowledgement
        print("refused:", exc, file=sys.stderr)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    acked.append(log.append(feedback("ann", 2)).rows[0].pref_id)
    print(json.dumps(acked), flush=True)
    os._exit(0)
""")


def test_feedback_acknowledged_after_a_failed_write_survives_a_crash(tmp_path):
    """A write that failed part way (disk full) left a torn record in the middle of the segment,
    and the next feedback, acknowledged once on disk, was appended after it; replay stops at the
    first torn record, so after a crash that acknowledged feedback was gone: it replayed
    ['t-ann-0-0'] of the acknowledged ['t-ann-0-0', 't-ann-2-0']."""
    folder = tmp_path / "feedback-log"
    child = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert "refused" in child.stderr  # the full disk really cut a write short
    acked = json.loads(child.stdout)
    assert acked == ["t-ann-0-0", "t-ann-2-0"]
    replayed = FeedbackLog(folder)
    try:
        assert [e.rows[0].pref_id for e in replayed.pending.values()] == acked
    finally:
        replayed.close()


DAMAGED_META = {"cut short": lambda text: text[: len(text) // 2], "not an object": lambda text: "[1, 2]"}


@pytest.mark.parametrize("damage", DAMAGED_META)
def test_serve_with_a_damaged_checkpoint_description_is_one_line_naming_it(tmp_path, tiny_generator_dir, tiny_pal_dir, damage):
    """`pluralign serve` over a PAL checkpoint whose meta.json was damaged said `pluralign: error:
    Input data was truncated` (no file named), or printed a traceback ending in AttributeError:
    'list' object has no attribute 'get' (exit 1): the service peeked at meta.json for an EM
    mixture's `kind` before the checkpoint's own checks."""
    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    (pal / "meta.json").write_text(DAMAGED_META[damage]((pal / "meta.json").read_text()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLURALIGN_DATA_DIR": str(tmp_path / "data"), "PLURALIGN_PAL_DIR": str(pal),
           "PLURALIGN_GENERATOR": str(tiny_generator_dir), "PLURALIGN_ENCODER": "minilm", "OMP_NUM_THREADS": "1"}
    serve = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert serve.returncode == 2 and "Traceback" not in serve.stderr, serve.stderr[-3000:]
    (error,) = [line for line in serve.stderr.splitlines() if line.startswith("pluralign: error:")]
    assert error.startswith(f"pluralign: error: {pal / 'meta.json'}: not a PAL checkpoint description"), error
