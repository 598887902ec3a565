"""A user's DELETE leaves nothing of them in the data folder, even after population jobs trained on
their comparisons: not in the population snapshots, not in a PAL or EM artifact's per-user weights
(in the jobs folder or swapped into the service), while every other user's rows, in their tenant and
in another, stay."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import httpx
import msgspec
import pytest

from pluralign.reward.em import EMMixture
from pluralign.reward.pal_checkpoint import load_pal, read_meta
from service.admin.controllers import ADMIN_HANDLERS
from service.rewards import UserRewards
from service.runtime import PROMOTED_PAL
from tests.files import files_holding  # noqa: F401 (tests import it from here too)
from tests.service.test_admin import wait_job
from tests.service.tiny import start_service

GONE = "zed-q7x"  # acme's user who is deleted: the id and the marker appear nowhere else
MARKER = "Quokka-marmalade-41x9"
KEPT = "Wombat-chutney-88k2"  # globex's texts: they must survive acme's DELETE


def stopped_after_reading(data, job: dict) -> int:
    """Wait until the job's worker read its snapshot (its access time moves past its write time), then
    SIGSTOP it there, before it embeds (its encoder loads at the first text missing from the cache)."""
    snapshot = data / job["params"]["data"]
    deadline = time.monotonic() + 120
    while (stat := snapshot.stat()).st_atime_ns <= stat.st_mtime_ns:
        assert time.monotonic() < deadline, f"the job's worker never read {snapshot} (a noatime file system?)"
        time.sleep(0.002)
    pid = msgspec.json.decode((data / "jobs" / f"{job['id']}.job.json").read_bytes())["pid"]
    # wherever it is then: inside a read or write of the embedding cache, or creating it, it holds the cache's
    # lock, as a worker stopped, paused or hung there in real life does (until session 45 this let it on until no
    # transaction of it was open; that look missed it creating the cache, and the DELETE waited on it)
    os.kill(pid, signal.SIGSTOP)
    return pid


def give_comparisons(client, user: str, likes: str, marker: str = "", n: int = 8) -> None:
    other = "coffee" if likes == "tea" else "tea"
    for i in range(n):
        body = {"type": "comparison", "user": user, "prompt": f"A drink for morning {i}? {marker}".strip(),
                "chosen": f"Some {likes}, number {i}. {marker}".strip(), "rejected": f"Some {other}, number {i}.",
                "attributes": {"segment": "s1" if i % 2 else "s2"}}
        r = client.post("/v1/feedback", json=body)
        assert r.status_code == 201, r.text


def run_job(admin, kind: str, params: dict) -> dict:
    r = admin.post("/admin/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 201, r.text
    job = wait_job(admin, r.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job
    return job


@pytest.mark.slow  # make test-deletion (~20 CPU-s: PAL, EM and audit jobs' workers); kept by test_delete61_population.py
# (snapshots, a PAL artifact), test_break21_deletions.py (an EM job's artifact), test_privacy40_shared_cache.py (the cache)
def test_nothing_of_a_deleted_user_is_left_after_population_jobs(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """Also the embedding cache the jobs' CLI shares (PLURALIGN_CACHE_DIR: `pluralign serve` makes it the data folder's
    `cache/` when unset; here, as in a deployment that names one, a folder outside the data folder, which
    `files_holding` never reads): the vectors of a deleted user's texts, keyed by each text's SHA-256, stayed there after
    the DELETE (session break21b). Those checks were a test of their own in test_break21b.py, with a PAL job of its own on the same
    comparisons (speed60a: ~9 CPU-s)."""
    from pluralign.embed.cache import text_key

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))  # the jobs' workers inherit it
    cache = tmp_path / "cache" / "embeddings.sqlite"

    def cached(text: str) -> int:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM embedding WHERE key = ?", [text_key(text)]).fetchone()[0]

    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        give_comparisons(globex, "bea", "tea", KEPT)
        give_comparisons(globex, "cal", "coffee")
        chat = acme.post("/v1/chat/completions", json={"model": "pluralign", "user": GONE, "max_tokens": 3,
                                                        "messages": [{"role": "user", "content": f"Morning drink? {MARKER}"}]})
        assert chat.status_code == 200, chat.text
        pal = run_job(admin, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})
        em = run_job(admin, "em", {"k": 2, "restarts": 1})
        run_job(admin, "audit", {"group_by": "segment", "min_comparisons": 0})
        assert pal["promoted"] and em["promoted"] is True  # the EM mixture is the one served now
        assert files_holding(data, MARKER, GONE)  # the jobs did hold the user's texts and id
        theirs, kept = f"Some tea, number 0. {MARKER}", "Some tea, number 0."  # their chosen answer, ann's rejected one
        assert cached(theirs) == 1 and cached(kept) == 1  # the jobs did embed both users' texts into the cache
        served_version = rt.rewards.version

        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert cached(theirs) == 0 and cached(f"A drink for morning 3? {MARKER}") == 0
        assert cached(kept) == 1  # ann's own texts stay (one both wrote, "Some coffee, number 0.", goes: embedded again when needed)
        assert MARKER.encode() not in cache.read_bytes()  # the cache never held the text itself
        deleted = r.json()["deleted"]
        assert deleted["preferences"] == 8 and deleted["users"] == 1
        assert files_holding(data, MARKER, GONE) == []
        # rewritten without them: two population snapshots, the PAL and the EM job's artifact, the served copy
        assert deleted["population_files"] == 5 and deleted["job_files"] == 0
        assert acme.get(f"/v1/users/{GONE}/export").status_code == 404
        assert acme.get(f"/v1/users/{GONE}").status_code == 404

        # everyone else's rows stay: the other acme user and the other tenant's, in snapshots and artifacts
        snapshots = sorted((data / "jobs" / "data" / "population").glob("comparisons-*.jsonl"))
        assert len(snapshots) == 2
        for path in snapshots:
            users = {msgspec.json.decode(line)["user_id"] for line in path.read_bytes().splitlines() if line.strip()}
            assert users == {"acme/ann", "globex/bea", "globex/cal"}
            assert KEPT.encode() in path.read_bytes()
        _, weights, meta = load_pal(data / "jobs" / "artifacts" / pal["id"])
        assert sorted(weights.users()) == ["acme/ann", "globex/bea", "globex/cal"] and meta.users == 3
        mixture = EMMixture.load(data / "jobs" / "artifacts" / em["id"], minilm.encoder_id)
        assert sorted(mixture.users) == ["acme/ann", "globex/bea", "globex/cal"]
        assert mixture.fit_result.responsibilities.shape == (3, 2)
        # the served copy too; it still loads, and its version (what users' fits are checked against) is kept
        served = UserRewards.load(data / PROMOTED_PAL, minilm.encoder_id)
        assert sorted(served.model.users) == ["acme/ann", "globex/bea", "globex/cal"]
        assert served.version == served_version == rt.rewards.version
        assert sorted(rt.rewards.model.users) == ["acme/ann", "globex/bea", "globex/cal"]  # and the one in memory
        assert read_meta(data / "jobs" / "artifacts" / pal["id"]).users == 3

        # the service goes on serving the others
        for client, user in ((acme, "ann"), (globex, "bea")):
            out = client.post("/v1/rewards/score", json={"user": user, "prompt": "A drink for the morning?",
                                                          "responses": ["Some tea, please.", "Some coffee, please."]})
            assert out.status_code == 200, out.text
        assert globex.get("/v1/users/bea").status_code == 200


@pytest.mark.slow  # make test-deletion (~9 CPU-s: a PAL job's worker); test_delete61_population.py keeps its snapshot and artifact checks
def test_a_delete_leaves_the_same_user_id_of_another_tenant_in_a_population_model(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        give_comparisons(acme, "zed", "tea", MARKER)
        give_comparisons(globex, "zed", "coffee", KEPT)
        give_comparisons(globex, "ann", "tea")
        pal = run_job(admin, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})
        assert acme.delete("/v1/users/zed").status_code == 200
        assert files_holding(data, MARKER) == []
        _, weights, _ = load_pal(data / "jobs" / "artifacts" / pal["id"])
        assert sorted(weights.users()) == ["globex/ann", "globex/zed"]
        (snapshot,) = (data / "jobs" / "data" / "population").glob("comparisons-*.jsonl")
        rows = [msgspec.json.decode(line) for line in snapshot.read_bytes().splitlines() if line.strip()]
        assert sorted({r["user_id"] for r in rows}) == ["globex/ann", "globex/zed"] and len(rows) == 16
        assert globex.get("/v1/users/zed").status_code == 200
        assert globex.get("/v1/users/zed/preferences").json()["total"] == 8


@pytest.mark.slow  # make test-deletion (~8 CPU-s: a PAL job's worker); test_delete61_population.py keeps its check without a job
def test_a_user_deleted_while_a_population_job_trains_is_not_in_its_artifact(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                             monkeypatch):
    """The job read its snapshot before the DELETE (its worker is stopped right after reading it: that stop, not
    a long training, keeps the job running meanwhile, so 2 epochs do), so its artifact is written with the
    user's weights: they are removed when it ends, before promotion."""
    # the jobs' cache where `pluralign serve` puts it and `stopped_after_reading` looks: until session 45 it was
    # the one under HOME, which that look never saw, so the worker could be stopped inside it
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give_comparisons(acme, GONE, "tea", MARKER)
        give_comparisons(acme, "ann", "coffee")
        give_comparisons(acme, "bob", "tea")
        r = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        pid = stopped_after_reading(data, r.json())
        try:
            assert not (data / "jobs" / "artifacts" / job_id / "meta.json").exists()  # still training
            r = acme.delete(f"/v1/users/{GONE}")
            assert r.status_code == 200 and r.json()["deleted"]["population_files"] == 1, r.text  # its snapshot
        finally:
            os.kill(pid, signal.SIGCONT)
        job = wait_job(admin, job_id, timeout=300)
        assert job["state"] == "succeeded" and job["promoted"] is True, job
        _, weights, meta = load_pal(data / "jobs" / "artifacts" / job_id)
        assert sorted(weights.users()) == ["acme/ann", "acme/bob"] and meta.users == 2
        assert files_holding(data, MARKER, GONE) == []


def owed_now(svc) -> tuple[float, int]:
    """The purges of vectors owed, as an operator reads them: /metrics' `pluralign_vectors_owed` (prometheus_client's
    parser) and /health's `vectors_owed`."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(svc.url + "/metrics").text)}
    (sample,) = families["pluralign_vectors_owed"].samples
    return sample.value, httpx.get(svc.url + "/health").json()["vectors_owed"]


def test_a_delete_waits_not_on_an_embedding_cache_a_stopped_worker_holds_and_its_vectors_go_at_the_next_pass(serve, monkeypatch):
    """A job's worker stopped, paused or hung inside a write of the jobs' embedding cache holds its lock. Until
    session 45 the DELETE waited 60 s on it (twice, with the admin area: the client gave up at 120 s) and then left
    the user's vectors there for good (a warning in its 200). Now it answers without that wait, the purge is owed,
    and once the lock is free the next pass of the unfinished DELETEs removes them, and only them. Until owed45 every
    later DELETE waited on the held cache again, and what was owed showed only in a debug line: now a DELETE while
    purges are owed does not wait, and /metrics and /health count them until the pass."""
    import numpy as np

    import service.users.vectors as vectors
    from pluralign.embed.cache import EmbeddingCache, default_cache_path, text_key
    from service.users.services import UnfinishedDeletes

    data, server, svc = serve()
    svc.runtime.owed_vectors.wait_s = 0.2  # the test's own service: how long a DELETE waits on the held lock
    gone = [f"A drink for morning {i}? {MARKER}" for i in range(2)] + [f"Some tea, number {i}. {MARKER}" for i in range(2)]
    kept = [f"Some coffee, number {i}. {KEPT}" for i in range(2)]
    later = [f"A drink for morning 0? {MARKER}-cy", "Some tea, number 0. " + f"{MARKER}-cy"]  # the second DELETE's

    class NoLongWait(EmbeddingCache):
        def __init__(self, path, wait_s):  # SQLite's busy wait is C code no timeout cuts: fail, not hang an hour
            assert wait_s < 60, f"a DELETE waits {wait_s:g} s on the cache a stopped worker holds"
            super().__init__(path, wait_s)

    monkeypatch.setattr(vectors, "EmbeddingCache", NoLongWait)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        assert owed_now(svc) == (0, 0)
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "cy", "tea", f"{MARKER}-cy", n=1)
        give_comparisons(globex, "bea", "coffee", KEPT, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2  # moved into the table
        # cy's too: the second DELETE forgets the texts of rows stored in the table (`Store.texts_of`); one still in the
        # feedback log when it ran (a loaded machine) was dropped from the log with nothing owed, and the count below read 1
        assert acme.get("/v1/users/cy/preferences").json()["total"] == 1
        cache = EmbeddingCache(default_cache_path())  # as a PAL job embeds a snapshot of both tenants' rows
        keys = [text_key(t) for t in gone + kept + later]
        cache.put("a-job's-encoder", keys, np.full((len(keys), 8), 0.25, np.float32))
        worker = sqlite3.connect(cache.path, isolation_level=None)  # the stopped worker, inside a write
        worker.execute("BEGIN IMMEDIATE")
        worker.execute("INSERT OR REPLACE INTO embedding VALUES ('a-job''s-encoder', ?, ?)", (b"w" * 32, b"\0" * 32))
        try:
            r = acme.delete(f"/v1/users/{GONE}")
            assert r.status_code == 200 and r.json()["deleted"]["preferences"] == 2, r.text
            assert r.json()["warnings"] == [], r.json()  # owed, not left for good
            assert len(cache.get("a-job's-encoder", keys)) == len(keys)  # the lock is held: nothing could go yet
            assert owed_now(svc) == (1, 1)
            svc.runtime.owed_vectors.wait_s = 3600.0  # the worker stays stopped: a DELETE that waited would not answer
            r = acme.delete("/v1/users/cy")
            assert r.status_code == 200 and r.json()["warnings"] == [], r.text  # owed at once
            assert owed_now(svc) == (2, 2)
            svc.runtime.owed_vectors.wait_s = 0.2
            assert UnfinishedDeletes(svc.runtime, 3600).run_once() == 0  # a pass while it is still held: still owed
            assert len(cache.get("a-job's-encoder", keys)) == len(keys)
            assert owed_now(svc) == (2, 2)
        finally:
            worker.rollback()  # the worker goes on (or ends)
            worker.close()
        UnfinishedDeletes(svc.runtime, 3600).run_once()  # the next pass (every `deletion_sweep_s`, and at start)
        assert sorted(cache.get("a-job's-encoder", keys)) == sorted(text_key(t) for t in kept)
        assert owed_now(svc) == (0, 0)
        cache.close()
        assert globex.get("/v1/users/bea/preferences").json()["total"] == 2
