"""Session 28: the service's training jobs (real worker processes, tiny models) when putting a promoted
artifact into service meets a full disk (RLIMIT_FSIZE on the service's process, set once the worker
exists: the worker writes freely, the service's copy fails with EFBIG as a full disk fails it with
ENOSPC), or meets what a promotion killed part way left. The runner's side, fast, with workers of a
few lines of Python: tests/e2e/test_break28_jobs.py."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from pluralign.policy.adapters import adapter_name, read_meta
from service.admin.controllers import ADMIN_HANDLERS
from tests.files import file_size_limit
from tests.service.test_admin import wait_job
from tests.service.test_delete_journal import wait_until


def give(c, user: str, n: int = 6) -> None:
    for i in range(n):
        body = {"type": "comparison", "user": user, "prompt": f"Question {i}?", "chosen": f"Helpful answer {i}.", "rejected": f"Rude answer {i}."}
        assert c.post("/v1/feedback", json=body).status_code == 201


@contextmanager
def full_disk_once_running(admin, job_id: str, limit: int):
    """Files this process writes may grow to `limit` bytes from when job `job_id` is recorded running
    (its worker was started before: it keeps the limit it had) until the block ends."""
    assert wait_until(lambda: admin.get(f"/admin/jobs/{job_id}").json()["state"] != "queued", timeout=60)
    with file_size_limit(limit):
        yield


def served_job(data, key: str) -> str | None:
    served = msgspec.json.decode((data / "jobs" / "promotions.json").read_bytes())
    return served[key]["job_id"] if key in served else None


def adapter_job(admin) -> str:
    r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "fred", "steps": 2}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.slow  # four adapter jobs: ~25 s on two busy cores
def test_an_adapter_promotion_left_half_done_or_on_a_full_disk_serves_the_earlier_one(serve):
    """Before: (1) what a promotion killed part way left (`adapters/acme/.fred.<job id>`) made the job's
    next run fail to install it (`[Errno 17] File exists`) while the job said promoted; (2) a copy that
    met a full disk left a half-copied folder beside the served one, and the job said `promoted: true`
    with promotions.json naming an adapter that was never served; (3) an adapter written by a later
    version (schema 2, a field this one does not know) was installed over the served one, which the
    user's chats then could not load: they fell back to the base model."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    served = data / "adapters" / "acme" / "fred"
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give(c, "fred")
        first = adapter_job(admin)
        left = served.with_name(f".fred.{first}")  # what a promotion of this job killed mid-copy left
        left.mkdir(parents=True)
        (left / "adapter_model.safetensors").write_bytes(b"half")
        done = wait_job(admin, first, timeout=300)
        assert done["state"] == "succeeded" and done["promoted"] is True, done
        assert read_meta(served).user == "fred" and not left.exists()
        assert served_job(data, "adapter/acme/fred") == first
        installed = (served / "adapter_model.safetensors").read_bytes()

        second = adapter_job(admin)
        with full_disk_once_running(admin, second, 20_000):  # the adapter's weights (~36 kB) do not fit
            failed = wait_job(admin, second, timeout=300)
        assert failed["state"] == "succeeded" and failed["promoted"] is False, failed
        note = failed["promotion_note"]
        # the admin routes name paths relative to the data folder (2b81cc9), the job record on disk keeps them whole
        assert note.startswith("kept, not served: putting it into service failed: File too large: "
                               f"{served.relative_to(data)}/adapter_model.safetensors"), note
        assert note.endswith(f"job {first} still served"), note
        assert sorted(p.name for p in served.parent.iterdir()) == ["fred"]  # nothing half-copied beside it
        assert (served / "adapter_model.safetensors").read_bytes() == installed and served_job(data, "adapter/acme/fred") == first
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "fred", "max_tokens": 3,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200 and r.json()["pluralign"]["adapter"] == adapter_name("acme", "fred"), r.text

        third = wait_job(admin, adapter_job(admin), timeout=300)  # room again
        assert third["promoted"] is True and served_job(data, "adapter/acme/fred") == third["id"], third
        installed = (served / "adapter_model.safetensors").read_bytes()

        # a worker of a later pluralign (a Ray worker on a newer image) writes an adapter this one cannot read
        runner = server.server.config.app.state.admin.runner
        checked = runner.on_succeed

        def later_version(job):
            meta = msgspec.json.decode((Path(job.artifact) / "pluralign.json").read_bytes())
            (Path(job.artifact) / "pluralign.json").write_bytes(msgspec.json.encode({**meta, "schema_version": 2, "calibration": 1.0}))
            checked(job)

        runner.on_succeed = later_version
        fourth = wait_job(admin, adapter_job(admin), timeout=300)
        runner.on_succeed = checked
        assert fourth["state"] == "succeeded" and fourth["promoted"] is False, fourth
        assert fourth["promotion_note"].startswith(
            f"kept, not served: putting it into service failed: {Path(fourth['artifact'])}: adapter schema 2, written by a later pluralign release"), fourth
        assert (served / "adapter_model.safetensors").read_bytes() == installed and read_meta(served).schema_version == 1
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "fred", "max_tokens": 3,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200 and r.json()["pluralign"]["adapter"] == adapter_name("acme", "fred"), r.text


@pytest.mark.slow  # a PAL job: ~15 s on two busy cores
def test_a_pal_promotion_on_a_full_disk_keeps_serving_the_earlier_model(serve):
    """Before: the job said `promoted: true` and promotions.json named its checkpoint while the service
    served the earlier model (and would again after a restart); a half-copied `.pal-promoted.staged`
    stayed in the data folder."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    before = svc.runtime.rewards.version
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        for user in ("ann", "ben", "cy"):
            give(c, user)
        r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 2, "epochs": 2}})
        assert r.status_code == 201, r.text
        with full_disk_once_running(admin, r.json()["id"], 200_000):  # its model.safetensors (~850 kB) does not fit
            job = wait_job(admin, r.json()["id"], timeout=300)
        assert job["state"] == "succeeded" and job["promoted"] is False, job
        note = job["promotion_note"]
        assert note.startswith("kept, not served: putting it into service failed: File too large: "
                               "pal-promoted/model.safetensors; nothing is served for it yet"), note  # relative to the data folder
        assert served_job(data, "pal") is None
        assert not [p.name for p in data.iterdir() if "pal-promoted" in p.name]  # no half copy, nothing in place
        assert svc.runtime.rewards.version == before
        assert c.get("/health").json()["status"] == "ok"
        assert c.post("/v1/rewards/score", json={"user": "ann", "prompt": "Question 1?", "responses": ["a", "b"]}).status_code == 200
