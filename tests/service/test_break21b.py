"""A hostile pass on crash safety (break session 21b): what a full disk, a damaged artifact or a
killed process leaves behind, driven with real processes and real files in temp dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import msgspec
import pytest

from pluralign.store.feedback_log import FeedbackLog
from tests.service.tiny import ROOT, free_port, start_service

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
    error = serve_error(tmp_path / "data", tiny_generator_dir, pal)
    assert error.startswith(f"pluralign: error: {pal / 'meta.json'}: not a PAL checkpoint description"), error


def serve_error(data, generator_dir, pal) -> str:
    """The one error line of `pluralign serve` (a real process) on the data folder `data`, which must
    refuse to start: exit code 2, no traceback, no model loaded first, nor the store's (lancedb) and the
    app's modules imported (`-X importtime` lists what the process imported)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLURALIGN_DATA_DIR": str(data), "PLURALIGN_PAL_DIR": str(pal),
           "PLURALIGN_GENERATOR": str(generator_dir), "PLURALIGN_ENCODER": "minilm", "OMP_NUM_THREADS": "1"}
    serve = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", "serve", "--port", str(free_port())], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    imported = {line.rpartition("|")[2].strip() for line in serve.stderr.splitlines() if line.startswith("import time:")}
    stderr = "".join(line for line in serve.stderr.splitlines(keepends=True) if not line.startswith("import time:"))
    assert serve.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    # at once: before, the encoder and generator loaded first (20 s to a minute on two cores); until session 45 a damaged
    # checkpoint description or FSPO adapter was found only once lancedb and the app had been imported (~2.5 s of CPU
    # on the shared machine, ~15 s of its wall time at load 12)
    assert "loading the encoder" not in stderr, stderr[-3000:]
    assert not imported & {"lancedb", "service.app"}, sorted(imported & {"lancedb", "service.app"})
    (error,) = [line for line in stderr.splitlines() if line.startswith("pluralign: error:")]
    return error


def test_serve_with_a_damaged_promotions_file_is_one_line_naming_it(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """jobs/promotions.json (which artifact is served per key, and its held-out accuracy) damaged:
    the admin area read it at startup, inside uvicorn's lifespan, so `pluralign serve` printed a
    traceback ending in `msgspec.ValidationError: Expected `str`, got `int` - at `$[...].artifact``,
    'Application startup failed' and exit 3, naming no file. It is read before serving now."""
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / "promotions.json").write_text('{"pal": {"artifact": 3, "heldout_accuracy": 0.9, "job_id": "j", "promoted_at": 0}}')
    error = serve_error(data, tiny_generator_dir, tiny_pal_dir)
    assert error.startswith(f"pluralign: error: {data / 'jobs' / 'promotions.json'}: not a promotions file"), error


def test_what_a_killed_adapter_swap_left_goes_with_the_user(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """An adapter is replaced by renames beside it (`swap_folder`): `train adapter --store` writes
    `.<user>.tmp` first, a promotion copies the job's adapter to `.<user>.<job id>`, and the old one
    is moved to `.<user>.retired` for an instant. A process killed there leaves those folders, the
    user's LoRA weights and `pluralign.json` naming them; a DELETE removed only `<user>/`, so they
    outlived the user. Now they go too (counted in adapter_files), and a user whose id extends the
    first one's (`<user>.b`) keeps their adapter."""
    from tests.service.test_break20_delete import GONE, files_holding, give_comparisons
    from tests.service.test_service_adapters import random_adapter

    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    registry = svc.runtime.adapters.registry
    neighbour = f"{GONE}.b"
    with server, svc.client("acme") as acme:
        for user in (GONE, neighbour):
            give_comparisons(acme, user, "tea")
            random_adapter(tiny_generator_dir, registry.folder("acme", user), tiny_generator_dir.name, "user", 1)
            meta = registry.meta("acme", user)
            (registry.folder("acme", user) / "pluralign.json").write_bytes(  # as registry.save writes it: naming the user
                msgspec.json.encode(msgspec.structs.replace(meta, tenant="acme", user=user)))
        folder = registry.folder("acme", GONE)
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        for suffix in ("tmp", "retired", "18c2f3a4b5d-1a2b3c4d"):  # save_adapter's, swap_folder's, a promotion's
            shutil.copytree(folder, folder.with_name(f".{folder.name}.{suffix}"))
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        left = files_holding(registry.root, f'"user":"{GONE}"')
        assert left == [], left
        assert r.json()["deleted"]["adapter_files"] == 4 * files
        assert registry.meta("acme", neighbour) is not None  # the other user's adapter stays
        assert acme.delete(f"/v1/users/{neighbour}").status_code == 200
        assert [p.name for p in registry.folder("acme", GONE).parent.iterdir()] == []


# The embedding cache losing a deleted user's texts (a test here until speed60a, with a PAL job of its own) is checked by
# tests/service/test_break20_delete.py::test_nothing_of_a_deleted_user_is_left_after_population_jobs, whose jobs embed the
# same users' comparisons.
