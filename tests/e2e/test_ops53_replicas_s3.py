"""Two `pluralign serve` replicas on one store in an S3 bucket (moto on loopback), as deploy/README.md sets them up:
`PLURALIGN_STORE_URI=s3://...` with the endpoint, `PLURALIGN_STORE_ALLOW_HTTP` and the keys, each replica its own
data folder. Until session ops53 this was run by hand only (operator47; deploy/README.md said so): tests/e2e/test_replicas.py
runs the same checks on a shared folder. Here: a feedback acknowledged by one replica is seen by the other within the
stated delay, `kill -9` of a replica in the middle of 6 writers loses no acknowledged row once it restarts on its folder,
and a rolling restart (SIGTERM of one replica while the other serves) exits 0 with the other answering throughout."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.test_replicas import STATED_DELAY_S, Pair, comparison
from tests.e2e.test_replicas import test_kill9_of_a_replica_loses_no_acknowledged_feedback as kill9_loses_nothing
from tests.s3 import S3Server

pytestmark = pytest.mark.slow  # three server starts and a kill on moto: ~2 min on two busy cores (`make test-scaleout`)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_generator_dir, tiny_pal_dir):
    with S3Server("pluralign-ops53") as s3:
        # the generator in each server's own process, as tests/e2e/test_e2e_serve.py's S3 run (its child's start: ~5 s)
        pair = Pair(tmp_path_factory.mktemp("s3-replicas"), tiny_generator_dir, tiny_pal_dir, **s3.env("replicas"),
                    PLURALIGN_GENERATION_PROCESS="false")
        try:
            yield pair
        finally:
            pair.stop()


def test_feedback_through_one_replica_on_s3_is_seen_by_the_other(pair):
    with pair.client(0) as a, pair.client(1) as b:
        assert b.get("/v1/users/s3cross/preferences").status_code == 404
        stored = a.post("/v1/feedback", json=comparison("s3cross", 1)).json()["stored"]
        began = time.monotonic()
        while [p["pref_id"] for p in b.get("/v1/users/s3cross/preferences").json().get("data", [])] != stored:
            assert time.monotonic() - began < STATED_DELAY_S + 2.0, "replica 1 did not see the feedback on S3"  # + moto's GETs
            time.sleep(0.05)


def test_kill9_of_a_replica_on_s3_loses_no_acknowledged_feedback(pair):
    kill9_loses_nothing(pair)


def test_a_rolling_restart_on_s3_stops_one_replica_cleanly_while_the_other_serves(pair):
    statuses = []
    with pair.client(0) as a:
        stopping = pair.procs[1].proc
        stopping.terminate()
        while stopping.poll() is None:
            statuses.append(a.get("/v1/users/s3cross").status_code)
            time.sleep(0.1)
        assert stopping.returncode == 0, pair.procs[1].log.read_text()[-3000:]
        pair.procs[1] = pair.start(1)  # back on its folder, beside a replica that never stopped
        statuses.append(a.get("/v1/users/s3cross").status_code)
    assert statuses and set(statuses) == {200}, statuses
    with pair.client(1) as b:
        assert b.get("/v1/users/s3cross").status_code == 200
        assert httpx.get(pair.procs[1].url + "/health", timeout=10).json()["replicas"] is None  # no disagreement
