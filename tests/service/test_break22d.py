"""Session 22d: today's features (job retention, damaged adapters falling back, JSON 404/405s) driven
the way a careless or hostile operator or client would, each over HTTP against the real app."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.admin.retention import ORPHAN_GRACE_S, JobRetention
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import AskedFrom, fspo_service, start_service
from tests.stores import wait_for
from training.jobs.record import Job, job_encoder

RETENTION_S = 3.0
LONG_AGO = time.time() - 30 * 86400


def finished_job(jobs_folder: Path, kind: str, params: dict, created_at: float, state: str = "succeeded") -> str:
    """A finished job's record, as the runner writes it, in the jobs folder the service reads at start."""
    job = Job(id=uuid.uuid4().hex[:12], kind=kind, params=params, state=state, created_at=created_at,
              started_at=created_at + 1, finished_at=created_at + 60)
    jobs_folder.mkdir(parents=True, exist_ok=True)
    (jobs_folder / f"{job.id}.job.json").write_bytes(job_encoder.encode(job))
    return job.id


def adapter_jobs(admin, user: str) -> list[dict]:
    return [j for j in admin.get("/admin/jobs?kind=adapter").json()["jobs"] if j["params"].get("user") == user]


def test_retention_keeps_the_job_the_adapter_trigger_counts_from(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """The trigger counts a user's new comparisons from the most any of their adapter jobs that was
    not cancelled recorded; an operator's own retrain (`{"user": "lena"}`, `comparisons` 0) is newer.
    Before: the retention kept the newest job not cancelled (the retrain, 0), purged the trigger's,
    and the user's next check queued a job at once, counting every comparison they ever gave as new."""
    jobs_folder = tmp_path / "jobs"
    every = 6
    by_trigger = finished_job(jobs_folder, "adapter", {"tenant": "acme", "user": "lena", "comparisons": every}, LONG_AGO)
    by_hand = finished_job(jobs_folder, "adapter", {"tenant": "acme", "user": "lena"}, LONG_AGO + 3600)
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                adapter_every=every, job_retention_s=RETENTION_S)
    passes, pass_once = threading.Semaphore(0), JobRetention.run_once

    def counted(self, now=None):
        try:
            return pass_once(self, now)
        finally:
            passes.release()

    monkeypatch.setattr(JobRetention, "run_once", counted)
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        assert passes.acquire(timeout=60), "no retention pass ran at start"  # (a fixed 1.5 s before)
        give_comparisons(c, "lena", "tea", n=every)  # the count the trigger's job recorded: nothing new
        svc.runtime.wait_for_background()
        ids = {j["id"] for j in adapter_jobs(admin, "lena")}
        assert ids == {by_trigger, by_hand}, adapter_jobs(admin, "lena")


def wait_until_gone(*paths: Path, timeout: float = 60.0, also=lambda: True) -> None:
    """Until none of `paths` exists and `also()` holds (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (any(p.exists() for p in paths) or not also()):
        time.sleep(0.2)


def test_an_odd_file_in_the_jobs_data_folder_stops_neither_the_retention_nor_a_delete(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A `.jsonl` whose name ends in a dash and digits Python reads as digits but `int` does not
    (`notes-\u00b2.jsonl`, superscript two: `str.isdigit` is true). Before: every retention pass
    failed on it ("ValueError: invalid literal for int()"), so nothing was ever pruned again, and
    every DELETE of a user of that tenant answered 500 (it reads the same names)."""
    data = tmp_path / "jobs" / "data"
    (data / "acme").mkdir(parents=True)
    (data / "acme" / "notes-\u00b2.jsonl").write_text("{}\n")
    (data / "population").mkdir()
    old_orphan = data / "population" / f"comparisons-{int((LONG_AGO - ORPHAN_GRACE_S) * 1000)}.jsonl"
    old_orphan.write_text("{}\n")
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                job_retention_s=RETENTION_S)
    with server, svc.client("acme") as c:
        wait_until_gone(old_orphan)
        assert not old_orphan.exists(), "the retention pass stopped before the orphaned snapshot"
        give_comparisons(c, "lena", "tea", n=2)
        svc.runtime.wait_for_background()
        r = c.delete("/v1/users/lena")
        assert r.status_code in (200, 204), r.text


def test_leftovers_without_a_stamp_in_their_name_go_once_old(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """What a killed snapshot write leaves (`.<name>.jsonl.<random>`, atomic_writer's temp file) and a
    snapshot whose name carries no stamp (an operator's `data` file for a job since purged) have no
    time in their name. Before: the retention read a time from snapshot names only, so these stayed
    for good (a user's comparisons among them, outside what a DELETE looks for in a tenant's folder)."""
    data = tmp_path / "jobs" / "data"
    old = LONG_AGO - ORPHAN_GRACE_S
    files = {
        "tenant temp": data / "acme" / f".lena-{int(old * 1000)}.jsonl.k3x9q",
        "population temp": data / "population" / f".comparisons-{int(old * 1000)}.jsonl.a81zz",
        "no stamp": data / "acme" / "lena-by-hand.jsonl",
    }
    young = data / "acme" / "bo-by-hand.jsonl"  # written just now: a submit may be about to name it
    for path in (*files.values(), young):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"user_id": "lena"}\n')
    for path in files.values():
        os.utime(path, (old, old))
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                job_retention_s=RETENTION_S)
    with server:
        wait_until_gone(*files.values(), timeout=30)
        assert {name for name, path in files.items() if path.exists()} == set()
        assert young.is_file()


def test_a_delete_removes_the_temp_file_a_killed_snapshot_write_left_of_the_user(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """An adapter job's snapshot of a user's comparisons is written to a temp file beside it
    (`.lena-<ms>.jsonl.<random>`) and renamed; a kill between leaves the temp file. Before: a DELETE
    removed the user's snapshots by their names (`lena-<ms>.jsonl`) only, so the temp file, with
    every comparison of theirs, stayed in the jobs' data folder after the DELETE answered."""
    tenant = tmp_path / "jobs" / "data" / "acme"
    tenant.mkdir(parents=True)
    theirs = tenant / f".lena-{int(time.time() * 1000) - 1000}.jsonl.k3x9q"
    others = tenant / f".bo-{int(time.time() * 1000) - 1000}.jsonl.a81zz"
    for path in (theirs, others):
        path.write_text('{"user_id": "x", "prompt": "A drink for morning 0?"}\n')
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as c:
        give_comparisons(c, "lena", "tea", n=2)
        svc.runtime.wait_for_background()
        r = c.delete("/v1/users/lena")
        assert r.status_code in (200, 204), r.text
        assert not theirs.exists()
        assert others.is_file()



def test_the_retention_leaves_population_artifacts_alone_while_a_delete_rewrites_them(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A DELETE rewrites every PAL/EM job's artifact without the user's weights, under the runtime's
    population lock (held here as a long rewrite would). Before: the retention purged an old EM
    job's artifact folder meanwhile, without the lock: the rewrite then found files gone from under
    it (the DELETE's ForgetIncomplete, a 500) or renamed its rewrite into a folder being removed."""
    jobs_folder = tmp_path / "jobs"
    old = finished_job(jobs_folder, "em", {"k": 2}, LONG_AGO)
    finished_job(jobs_folder, "em", {"k": 2}, LONG_AGO + 3600)  # the newest em job: kept
    artifact = jobs_folder / "artifacts" / old
    artifact.mkdir(parents=True)
    (artifact / "users.jsonl").write_text('{"user": "acme/lena"}\n')
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                job_retention_s=RETENTION_S)
    lock = svc.runtime.population_lock = AskedFrom(svc.runtime.population_lock, "job-retention")
    lock.acquire()  # before the server starts: its first pass runs at start
    try:
        with server, svc.client("admin") as admin:
            # the pass has come to the old job's artifact: it asked for the lock (waiting for it), or removed the artifact
            # without (a sleep of two passes proved nothing: a busy machine's first pass may not have come this far)
            wait_for(lambda: lock.asked.is_set() or not artifact.is_dir(), timeout=60)
            assert artifact.is_dir(), "the retention removed a population artifact a DELETE was rewriting"
            lock.release()
            lock = None
            # the pass removes the artifact (under the lock), then purges the job's record: wait for both
            wait_until_gone(artifact, also=lambda: admin.get(f"/admin/jobs/{old}").status_code == 404)
            assert not artifact.exists() and admin.get(f"/admin/jobs/{old}").status_code == 404
    finally:
        if lock is not None:
            lock.release()


# -- a user's damaged adapter falls back ---------------------------------------------------------

def _folder_instead(name: str):
    def damage(folder: Path) -> None:
        path = folder / name
        path.unlink()
        path.mkdir()  # what a bad restore or a mount gone wrong leaves: reading it is an OSError
    return damage


UNREADABLE = {
    "description a folder": _folder_instead("pluralign.json"),
    "weights a folder": _folder_instead("adapter_model.safetensors"),
    "config a folder": _folder_instead("adapter_config.json"),
}


@pytest.fixture(scope="module")
def adapters_svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fspo_service(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm) as service:
        yield service


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("damage", UNREADABLE)
def test_an_adapter_file_that_cannot_be_read_falls_back_too(adapters_svc, tiny_generator_dir, damage, stream):
    """An adapter file the OS refuses to read (here a folder where the file should be: EISDIR; on
    a real disk an I/O error, or a permission the service's user lacks). Before: only the damage
    pluralign and peft name (AdapterError, ValueError) fell back; an OSError went through, and every
    chat of the user answered 500 `internal error` (a stream: an error event) for as long as it
    lasted."""
    from pluralign.policy.adapters import AdapterRegistry, adapter_name
    from tests.service.test_service_adapters import GREEDY, random_adapter

    svc = adapters_svc
    user = "r-" + "".join(c for c in damage if c.isalnum()) + ("-s" if stream else "")
    folder = AdapterRegistry(svc.data_dir / "adapters").folder("acme", user)
    random_adapter(tiny_generator_dir, folder, tiny_generator_dir.name, "user", 3)
    UNREADABLE[damage](folder)
    body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": user, "n": 2,
            "stream": stream, **GREEDY}
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert "internal error" not in r.text and '"error"' not in r.text, r.text[:400]
    assert adapter_name("acme", user) not in svc.runtime.generator.adapters  # nothing half loaded


@pytest.mark.slow  # ~19 s: kept out of the default suite for its time (make test-all runs it)
def test_a_new_generation_process_skips_an_adapter_damaged_since_it_was_loaded(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """The generation child (`generation_process`, the default) died (the OOM killer) after one
    user's adapter was damaged on disk while loaded. The new child loads the adapters the old one
    held again from their folders. Before: the damaged one's load raised out of the restart, the
    adapters after it were never loaded again, and the pool still took all of them for loaded: the
    damaged user and the next users answered 500 `internal error` (the child: 'not loaded') for good."""
    import signal

    import httpx

    from pluralign.policy.adapters import AdapterRegistry, adapter_name
    from pluralign.policy.process import ProcessGenerator
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings
    from tests.service.test_service_adapters import chat, random_adapter
    from tests.service.tiny import LiveServer

    settings = Settings(data_dir=str(tmp_path / "data"), generator=str(tiny_generator_dir), pal_dir=str(tiny_pal_dir), max_tokens=6)
    runtime = Runtime.build(settings, encoder=minilm)
    assert isinstance(runtime.generator, ProcessGenerator)
    registry = AdapterRegistry(settings.adapters_path)
    users = ["dana", "eli"]  # loaded in this order: the damaged one first
    for seed, user in enumerate(users):
        random_adapter(tiny_generator_dir, registry.folder("acme", user), runtime.generator.model_id, "user", seed)
    key = runtime.keys.issue("acme")
    try:
        with LiveServer(create_app(runtime=runtime, admin_handlers=())) as server:
            c = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            assert [chat(c, u).json()["pluralign"]["adapter"] for u in users] == [adapter_name("acme", u) for u in users]
            weights = registry.folder("acme", "dana") / "adapter_model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            os.kill(runtime.generator.pid, signal.SIGKILL)
            time.sleep(0.5)
            answers = {u: chat(c, u) for u in users}
            assert {u: r.status_code for u, r in answers.items()} == {"dana": 200, "eli": 200}, answers["dana"].text
            assert answers["eli"].json()["pluralign"]["adapter"] == adapter_name("acme", "eli")
            assert answers["dana"].json()["pluralign"]["adapter"] != adapter_name("acme", "dana")
            assert chat(c, "dana").status_code == 200 and chat(c, "eli").status_code == 200
    finally:
        runtime.generator.close()
