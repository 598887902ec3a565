"""Session 22a, crash-safety leftovers: a job whose finish fails, a damaged per-user adapter, saves
a kill or a second trainer could leave half done. Real worker processes, the real app over HTTP,
real files in temp dirs."""

from __future__ import annotations

import errno
import time

import pytest

from tests.e2e.job_kinds import TEST_KINDS
from tests.service.tiny import fspo_service
from training.jobs.record import decode_job
from training.jobs.runner import LocalJobRunner, RunnerConfig


def full_disk_for(monkeypatch, module: str, name: str, when):
    """Make `module.write_atomic` fail like a full disk for paths `when(path)` picks."""
    import importlib

    target = importlib.import_module(module)
    real = target.write_atomic

    def write_atomic(path, data):
        if when(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(target, name, write_atomic)


@pytest.fixture
def runner(tmp_path):
    r = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    r.start()
    yield r
    r.stop()


def on_disk(runner, job_id):
    return decode_job(runner.store.path(job_id).read_bytes())


def test_a_job_whose_result_cannot_be_written_fails_saying_why(runner, monkeypatch):
    """Before: the disk full while result.json was written, the dispatcher logged "job runner step
    failed" and the job stayed "running" with its dead worker's pid, in memory and on disk, forever;
    runner.wait timed out."""
    full_disk_for(monkeypatch, "training.jobs.runner", "write_atomic", lambda path: str(path).endswith("result.json"))
    job = runner.submit("work", {})
    failed = runner.wait(job.id, timeout=30)
    assert failed.state == "failed" and failed.pid is None, failed
    assert failed.error.startswith("finishing it failed: No space left on device") and "result.json" in failed.error
    assert on_disk(runner, job.id) == failed
    # nor is the worker's result it printed kept (auditfail42: an audit's report of users who may be deleted since)
    assert not runner.store.path(job.id, "out").exists() and failed.metrics == {} and failed.result_path is None
    monkeypatch.undo()
    assert runner.wait(runner.submit("work", {}).id, timeout=30).state == "succeeded"  # the runner carries on


def test_a_promotion_that_cannot_be_written_fails_the_job_and_promotes_nothing(runner, monkeypatch):
    """Before: promotions.json could not be written, the job stayed "running" forever, and the
    runner's memory said the artifact was served while the file did not."""
    full_disk_for(monkeypatch, "training.jobs.promotion", "write_atomic", lambda path: True)
    job = runner.submit("adapter", {"user": "ann", "accuracy": 0.7})
    failed = runner.wait(job.id, timeout=30)
    assert failed.state == "failed" and "No space left on device" in failed.error and "promotions.json" in failed.error
    assert runner.promotions.served("adapter/default/ann") is None
    monkeypatch.undo()
    again = runner.wait(runner.submit("adapter", {"user": "ann", "accuracy": 0.6}).id, timeout=30)
    assert again.state == "succeeded" and again.promoted is True, again


def test_a_job_record_a_full_disk_refuses_is_written_once_there_is_room(runner, monkeypatch):
    """Every write fails while the job finishes (result, then its record): the state is right in
    memory at once (failed, saying why) and on disk once the disk has room again; a restart meanwhile
    finds the job running with a dead worker and runs it again. Before: "running" with a dead pid,
    in memory and on disk, forever."""
    full = {"on": False}

    def result_json(path) -> bool:  # the disk fills up as the result is written, and stays full
        full["on"] = full["on"] or str(path).endswith("result.json")
        return full["on"]

    full_disk_for(monkeypatch, "training.jobs.runner", "write_atomic", result_json)
    full_disk_for(monkeypatch, "training.jobs.store", "write_atomic", lambda path: full["on"])
    job = runner.submit("work", {})
    deadline = time.monotonic() + 30
    while runner.get(job.id).state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = runner.get(job.id)
    assert failed.state == "failed" and "No space left on device" in failed.error, failed
    assert on_disk(runner, job.id).state == "running"  # the disk had no room for the failed record
    # a restart now (the disk still full) finds it running with a dead worker: queued to run again
    restarted = LocalJobRunner(RunnerConfig(folder=runner.config.folder, poll_seconds=0.05), TEST_KINDS)
    assert restarted.get(job.id).state == "queued" and restarted.get(job.id).pid is None
    full["on"] = False
    deadline = time.monotonic() + 10
    while on_disk(runner, job.id).state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert on_disk(runner, job.id) == runner.get(job.id)


# -- a damaged per-user adapter ------------------------------------------------------------------

def _cut_weights(folder):
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _break_config(folder):
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')


DAMAGE = {
    "weights cut short": _cut_weights,
    "config not JSON": _break_config,
    "config not LoRA's": lambda folder: (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": "eight", "lora_wings": 3}'),
    "weights missing": lambda folder: (folder / "adapter_model.safetensors").unlink(),
    "description cut short": lambda folder: (folder / "pluralign.json").write_text('{"schema_version": 1, "kind": "us'),
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fspo_service(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm) as service:
        yield service


def unusable_count(svc) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(svc.url + "/metrics").text)}
    family = families.get("pluralign_adapters_unusable")
    return family.samples[0].value if family else 0.0


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_user_adapter_falls_back_logged_once(svc, tiny_generator_dir, caplog, damage):
    """Before: every chat of the user answered 500 `internal error` (a traceback each time: peft's
    or safetensors' error, or 'adapter ... lacks adapter_model.safetensors'), as long as the folder
    stayed damaged. Now the FSPO adapter answers them, the response does not name their adapter,
    the failure is logged and counted once, and a repaired adapter is used at once."""
    import logging

    from pluralign.policy.adapters import AdapterRegistry, adapter_name
    from tests.service.test_service_adapters import chat, random_adapter

    user = "u-" + "".join(c for c in damage if c.isalnum())
    folder = AdapterRegistry(svc.data_dir / "adapters").folder("acme", user)
    random_adapter(tiny_generator_dir, folder, tiny_generator_dir.name, "user", 3)
    DAMAGE[damage](folder)
    before = unusable_count(svc)
    with svc.client() as c, caplog.at_level(logging.ERROR):
        answers = [chat(c, user) for _ in range(3)]
    assert [r.status_code for r in answers] == [200] * 3, answers[0].text
    assert {r.json()["pluralign"]["adapter"] for r in answers} == {"fallback"}  # never their adapter
    logged = [r for r in caplog.records if user in r.getMessage()]
    assert len(logged) == 1 and "served by the fallback" in logged[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert unusable_count(svc) == before + 1
    assert adapter_name("acme", user) not in svc.runtime.generator.adapters  # nothing half loaded
    random_adapter(tiny_generator_dir, folder, tiny_generator_dir.name, "user", 3)  # retrained: whole again
    with svc.client() as c:
        assert chat(c, user).json()["pluralign"]["adapter"] == adapter_name("acme", user)


def test_the_startup_check_names_an_fspo_adapter_whose_weights_are_cut_short(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """What `pluralign serve` runs before any model loads (`service.startup_files.check_startup_files`) on the FSPO adapter
    of the slow test below, in this process: its weights cut short are a ValueError naming the setting and the folder
    (the served process, its one line and exit 2: `make test-crash`; `pluralign serve`'s one line on a damaged file
    read at startup: tests/service/test_break21b.py)."""
    from service.settings import Settings
    from service.startup_files import check_startup_files
    from tests.service.test_service_adapters import random_adapter

    fspo = random_adapter(tiny_generator_dir, tmp_path / "fspo", tiny_generator_dir.name, "fspo", 1)
    settings = Settings(data_dir=str(tmp_path / "data"), generator=str(tiny_generator_dir), pal_dir=str(tiny_pal_dir),
                        fspo_adapter=str(fspo))
    check_startup_files(settings)  # whole: nothing to say
    _cut_weights(fspo)
    with pytest.raises(ValueError) as refused:
        check_startup_files(settings)
    assert str(refused.value).startswith(f"PLURALIGN_FSPO_ADAPTER (setting fspo_adapter): {fspo}"), refused.value
    assert "adapter_model.safetensors" in str(refused.value), refused.value


# a served process refusing to start (~8 CPU-s: its imports, the adapter made in this process): slow (`make test-crash`); the
# default suite keeps the check it runs (the test above) and `pluralign serve`'s one line (tests/service/test_break21b.py)
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["weights cut short"])  # a config peft cannot apply: the per-user test above
def test_serve_with_a_damaged_fspo_adapter_is_one_line_naming_it(tmp_path, tiny_generator_dir, tiny_pal_dir, monkeypatch, damage):
    """The FSPO adapter (setting fspo_adapter) is the service's own: damaged, the service does not
    start, and says which file. Before: a traceback ending in the generation process's
    'GeneratorProcessError: SafetensorError: Error while deserializing header: ...' or peft's
    "TypeError: '<=' not supported between instances of 'str' and 'int'" (exit 1), naming no file."""
    from tests.service.test_break21b import serve_error
    from tests.service.test_service_adapters import random_adapter

    fspo = random_adapter(tiny_generator_dir, tmp_path / "fspo", tiny_generator_dir.name, "fspo", 1)
    DAMAGE[damage](fspo)
    monkeypatch.setenv("PLURALIGN_FSPO_ADAPTER", str(fspo))
    error = serve_error(tmp_path / "data", tiny_generator_dir, tiny_pal_dir)
    assert error.startswith(f"pluralign: error: PLURALIGN_FSPO_ADAPTER (setting fspo_adapter): {fspo}"), error
    assert not (tmp_path / "data" / "api_keys.json").exists()  # and no key issued for a service that never ran


def test_registering_an_adapter_cut_short_leaves_the_users_adapter_as_it_was(svc, tiny_generator_dir, tmp_path, monkeypatch):
    """register_adapter removed the user's adapter folder, then copied the new one in: a copy cut
    short (disk full, a kill) left the user with a partial folder (before: its files differed from
    the earlier adapter's; after a kill between the two, none at all). A damaged source was copied
    in and only found at the user's next chat."""
    import shutil

    from pluralign.policy.adapters import AdapterError, AdapterRegistry, adapter_name
    from service.users.services import register_adapter
    from tests.service.test_service_adapters import chat, random_adapter

    folder = AdapterRegistry(svc.data_dir / "adapters").folder("acme", "rita")
    register_adapter(svc.runtime, "acme", "rita", random_adapter(tiny_generator_dir, tmp_path / "first", tiny_generator_dir.name, "user", 4))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    second = random_adapter(tiny_generator_dir, tmp_path / "second", tiny_generator_dir.name, "user", 5)
    real, copied = shutil.copyfile, []

    def copyfile(src, dst, *args, **kwargs):
        if copied:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        copied.append(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    with pytest.raises(OSError, match="No space left"):
        register_adapter(svc.runtime, "acme", "rita", second)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".rita.")) == []  # nothing left beside it
    with svc.client() as c:
        assert chat(c, "rita").json()["pluralign"]["adapter"] == adapter_name("acme", "rita")
    (second / "adapter_model.safetensors").write_bytes(b"cut")
    with pytest.raises(AdapterError, match="not a whole safetensors file"):
        register_adapter(svc.runtime, "acme", "rita", second)


def test_stopping_the_runner_on_a_full_disk_stops_every_worker(tmp_path, monkeypatch):
    """stop() recorded each stopped job as queued again as it went: on a full disk the first record
    raised OSError out of stop(), and the other workers were never stopped (orphans training on).
    Now every worker is stopped; the records on disk still say running, so a restart queues them."""
    import psutil

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=2), TEST_KINDS)
    runner.start()
    jobs = [runner.submit("work", {"seconds": 60}) for _ in range(2)]
    deadline = time.monotonic() + 30
    while any(runner.get(j.id).state != "running" for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [runner.get(j.id).pid for j in jobs]
    full_disk_for(monkeypatch, "training.jobs.store", "write_atomic", lambda path: True)
    alive: list[int] = []
    try:
        try:
            runner.stop()
        finally:
            alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    finally:
        for pid in pids:  # never leave a worker behind, whatever the code under test did
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
    assert alive == []
    assert [runner.get(j.id).state for j in jobs] == ["queued", "queued"]
    monkeypatch.undo()
    restarted = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs"), TEST_KINDS)
    assert [restarted.get(j.id).state for j in jobs] == ["queued", "queued"]
