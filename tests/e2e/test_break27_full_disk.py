"""Session 27: a real `pluralign serve` whose disk fills up while it serves (RLIMIT_FSIZE set on the
running process with prlimit: every write past the limit fails with EFBIG, as a full disk fails one
with ENOSPC; CPython ignores SIGXFSZ), then has room again, then is killed and started again. The fast
variants with one failure at a time are tests/service/test_break27_storage.py."""

from __future__ import annotations

import resource

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess


def comparison(user: str, i: int) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Tea or coffee {i}?", "chosen": f"Tea {i}.", "rejected": f"Coffee {i}."}


def chat(client: httpx.Client, user: str) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 3,
                                                      "messages": [{"role": "user", "content": "Hello?"}]})


@pytest.mark.slow  # two service starts: 16 s here, longer on busy cores
def test_a_disk_that_fills_up_while_serving_loses_nothing_acknowledged(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """Before: each request that met the full disk was a bare 500 "internal error"."""
    data = tmp_path / "data"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "PLURALIGN_GENERATION_PROCESS": "false"}
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, **env)
    headers = {"Authorization": f"Bearer {proc.dev_key()}"}
    acknowledged = []
    try:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=60) as client:
            for i in range(2):
                r = client.post("/v1/feedback", json=comparison("ann", i))
                assert r.status_code == 201, r.text
                acknowledged += r.json()["stored"]
            assert chat(client, "ann").status_code == 200  # her rows are in the table, her history cached
            largest = max(p.stat().st_size for p in (data / "feedback-log").glob("*.log"))
            soft, hard = resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (largest + 16, hard))  # a record no longer fits
            try:
                r = client.post("/v1/feedback", json=comparison("ann", 2))
                assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
                assert r.json()["error"]["message"].startswith("the feedback log cannot be written: no space left"), r.text
                r = chat(client, "ann")  # generated, but its answer cannot be kept
                assert r.status_code == 507 and "table `interactions` cannot be written" in r.text, r.text
                assert client.get("/v1/users/ann/preferences").json()["total"] == 2  # reads go on
                health = client.get("/health").json()
                assert health["status"] == "degraded", health
                assert {p["what"] for p in health["storage"]} == {"the feedback log", "table `interactions`"}, health
            finally:
                resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))  # room again
            r = client.post("/v1/feedback", json=comparison("ann", 3))
            assert r.status_code == 201, r.text
            acknowledged += r.json()["stored"]
            assert chat(client, "ann").status_code == 200
            assert client.get("/health").json()["status"] == "ok"  # by itself, no restart
        proc.kill9()
    finally:
        proc.stop()

    again = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, **env)  # what the full disk left does not stop a start
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=60) as client:
            page = client.get("/v1/users/ann/preferences").json()
            assert sorted(p["pref_id"] for p in page["data"]) == sorted(acknowledged), page  # all acknowledged, nothing else
            assert chat(client, "ann").status_code == 200
    finally:
        again.stop()
