"""Two `pluralign serve` replicas on loopback sharing one store (a LanceDB folder here; the same
settings take an object store), each with its own data folder for its feedback log and job records.

Routing is meant to keep a user on one replica (deploy/README.md); these tests send a user's
requests to both on purpose, to check what holds when it does not: a feedback acknowledged by one
replica is used by the other within the stated delay, `kill -9` of a replica loses no acknowledged
feedback once it restarts on its folder, and an adapter job is queued once, by the user's owner."""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from service.replicas import owner
from tests.e2e.test_conn37_connections import sample
from tests.e2e.test_e2e_serve import ServeProcess

pytestmark = pytest.mark.slow  # three server starts and a kill: ~2 min on two busy cores (`make test-scaleout`)

SYNC_MS = 500
STATED_DELAY_S = SYNC_MS / 1000 + 2.0  # the sync interval + the writing replica's move of an idle log, with room for a busy CI


class Pair:
    def __init__(self, root: Path, generator: Path, pal: Path, **extra: str):
        self.root, self.generator, self.pal = root, generator, pal
        self.common = {
            "PLURALIGN_STORE_URI": str(root / "store"), "PLURALIGN_REPLICAS": "2", "PLURALIGN_STORE_SYNC_MS": str(SYNC_MS),
            "PLURALIGN_ADAPTERS_DIR": str(root / "adapters"), "PLURALIGN_JOB_WORKERS": "0", **extra,
        }
        self.procs = [self.start(0)]
        self.key = self.procs[0].dev_key()
        (root / "r1").mkdir()
        shutil.copy(root / "r0" / "api_keys.json", root / "r1" / "api_keys.json")  # one key file, mounted in both
        self.procs.append(self.start(1))

    def start(self, index: int) -> ServeProcess:
        return ServeProcess(self.root / f"r{index}", self.generator, self.pal, PLURALIGN_REPLICA_INDEX=str(index), **self.common)

    def client(self, index: int) -> httpx.Client:
        return httpx.Client(base_url=self.procs[index].url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_generator_dir, tiny_pal_dir):
    pair = Pair(tmp_path_factory.mktemp("replicas"), tiny_generator_dir, tiny_pal_dir, PLURALIGN_ADAPTER_EVERY="6")
    yield pair
    pair.stop()


def comparison(user: str, i: int) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Question {i} for {user}?", "chosen": f"Good {i}", "rejected": f"Bad {i}"}


def test_feedback_through_one_replica_is_used_by_the_others_next_chat(pair):
    delays = []
    with pair.client(0) as a, pair.client(1) as b:
        for i in range(6):
            user = f"cross{i}"
            assert b.get(f"/v1/users/{user}/preferences").status_code == 404  # b has looked (and cached nothing yet)
            stored = a.post("/v1/feedback", json=comparison(user, i)).json()["stored"]
            began = time.monotonic()
            while [p["pref_id"] for p in b.get(f"/v1/users/{user}/preferences").json().get("data", [])] != stored:
                assert time.monotonic() - began < STATED_DELAY_S, f"replica 1 did not see {user}'s feedback"
                time.sleep(0.02)
            delays.append(time.monotonic() - began)
            chat = b.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 4,
                                                       "messages": [{"role": "user", "content": f"Question {i} for {user}?"}]})
            assert chat.status_code == 200 and chat.json()["pluralign"]["history"] == stored
            assert chat.json()["pluralign"]["prior"] is False  # b refitted the user's weights from a's comparison
    print(f"cross-replica delay: p50 {np.percentile(delays, 50):.3f} s, max {max(delays):.3f} s")


def test_an_adapter_job_is_queued_once_across_replicas(pair):
    user = "twice"
    with pair.client(0) as a, pair.client(1) as b:
        for i in range(6):  # 12 comparisons, 6 through each replica: each sees `adapter_every` of its own
            assert a.post("/v1/feedback", json=comparison(user, i)).status_code == 201
            assert b.post("/v1/feedback", json=comparison(user, 100 + i)).status_code == 201

    def adapter_jobs(index: int) -> list[dict]:
        found = []
        for path in (pair.root / f"r{index}" / "jobs").glob("*.job.json"):
            job = msgspec.json.decode(path.read_bytes())
            if job["kind"] == "adapter" and job["params"].get("user") == user:
                found.append(job)
        return found

    began = time.monotonic()
    while not (adapter_jobs(0) or adapter_jobs(1)):
        assert time.monotonic() - began < 30, "no adapter job was queued"
        time.sleep(0.1)
    for index in range(2):  # each replica's hooks of the user's rows (where a second job would be queued) have run
        moved_past_them(pair, index)
    jobs = [adapter_jobs(0), adapter_jobs(1)]
    assert [len(j) for j in jobs] == [1 if i == owner("default", user, 2) else 0 for i in range(2)]


def moved(pair: Pair, index: int) -> tuple[float, float]:
    """Replica `index`'s /metrics: (feedback rows still in its log, rows its worker moved since its start)."""
    text = httpx.get(pair.procs[index].url + "/metrics", timeout=60).text
    return tuple(sample(text, name) for name in ("pluralign_feedback_pending_rows", "pluralign_feedback_moved_rows_total"))


def moved_past_them(pair: Pair, index: int, timeout: float = 60.0) -> None:
    """Return once replica `index`'s feedback worker has run the hooks of every row acknowledged before the call (the
    adapter trigger's count among them): its log emptied, then a marker row sent after moved. The worker runs a batch's
    hooks before it commits the next (`Ingestor`), so the marker's move comes after them (a fixed sleep proved nothing
    on a busy machine). Nothing else may be sent to that replica meanwhile."""
    deadline = time.monotonic() + timeout
    while (state := moved(pair, index))[0]:
        assert time.monotonic() < deadline, f"replica {index} kept {state[0]:g} rows in its log"
        time.sleep(0.05)
    with pair.client(index) as c:
        assert c.post("/v1/feedback", json=comparison(f"marker{index}-{time.time_ns()}", 0)).status_code == 201
    while (after := moved(pair, index))[1] < state[1] + 1:
        assert time.monotonic() < deadline, f"replica {index} did not move the marker row: {after}"
        time.sleep(0.05)


def test_kill9_of_a_replica_loses_no_acknowledged_feedback(pair):
    """8 writers, 4 on each replica, for a few users each; replica 0 is killed mid-stream and
    restarted on its folder; every acknowledged row ends up in the shared tables."""
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(index: int, w: int) -> None:
        rng = random.Random(w)
        with pair.client(index) as c:
            i = 0
            while not stop.is_set() and i < 200:
                user = f"writer{rng.randrange(8)}"
                try:
                    r = c.post("/v1/feedback", json=comparison(user, 1000 * w + i))
                except httpx.TransportError:
                    return  # its replica is gone: nothing more is acknowledged by it
                if r.status_code == 201:
                    with lock:
                        acked.extend((user, pref) for pref in r.json()["stored"])
                i += 1

    threads = [threading.Thread(target=writer, args=(w % 2, w)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    pair.procs[0].kill9()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(acked) > 20
    pair.procs[0] = pair.start(0)  # back on its folder: its log is replayed and moved
    wanted: dict[str, set[str]] = {}
    for user, pref in acked:
        wanted.setdefault(user, set()).add(pref)
    began = time.monotonic()
    with pair.client(1) as b:
        for user, prefs in wanted.items():
            while True:
                page = b.get(f"/v1/users/{user}/preferences", params={"limit": 500}).json()
                missing = prefs - {p["pref_id"] for p in page.get("data", [])}  # 404 until b sees a row of theirs
                if not missing:
                    break
                assert time.monotonic() - began < 60, f"{len(missing)} acknowledged rows of {user} missing"
                time.sleep(0.2)
