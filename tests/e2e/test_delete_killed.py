"""kill -9 of a single `pluralign serve` (no replicas: no lease) in the middle of a DELETE, after the
user's rows were deleted from the tables and before the purge that removes the files still holding
them. Restarted on the same data folder, no file may keep the user's text, and the DELETE sent again
(a 404: no row of theirs is left) must leave none either. Before, nothing remembered the purge left to
do: the text stayed in old table versions for good. Slow (two service starts, about 40 s).

And the same kill after the store's purge, before the DELETE's later steps (the adapter folder, the
population files), with the DELETE never sent again: the restarted service finishes it from its journal
(`service.users.journal`)."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import msgspec
import pytest

from tests.e2e.test_e2e_serve import ServeProcess
from tests.files import files_holding

MARKER = "Axolotl-pemmican-25a"
# the served process, with its store's purge stopped where a kill would find it: the rows deleted, the purge not begun
STOP_BEFORE_PURGE = """
import os, sys, time
from pathlib import Path
from pluralign.store.tables import Store

def stopped(self, names):
    Path(os.environ["STOPPED_AT"]).write_text(",".join(names))
    time.sleep(3600)

Store._purge_tables = stopped
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


# the served process, stopped once the store has deleted and purged the user's rows: the DELETE's later steps never run
STOP_AFTER_THE_ROWS = """
import os, sys, time
from pathlib import Path
from pluralign.store.tables import Store

delete_user = Store.delete_user

def stopped(self, tenant, user_id):
    counts = delete_user(self, tenant, user_id)
    Path(os.environ["STOPPED_AT"]).write_text(repr(counts))
    time.sleep(3600)

Store.delete_user = stopped
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def send_delete(url: str, headers: dict) -> None:
    with contextlib.suppress(httpx.TransportError):  # its server is killed before it answers
        httpx.delete(url, headers=headers, timeout=60)


def kill_when_stopped(proc: ServeProcess, headers: dict, stopped_at) -> None:
    """Send zed's DELETE and SIGKILL the server once its hook wrote `stopped_at` (the DELETE stopped there)."""
    threading.Thread(target=send_delete, args=(f"{proc.url}/v1/users/zed", headers), daemon=True).start()
    deadline = time.monotonic() + 60
    while not stopped_at.exists():
        assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log.read_text()
        time.sleep(0.02)
    proc.kill9()


@pytest.mark.slow
def test_a_delete_killed_before_its_purge_leaves_nothing_after_a_restart(tmp_path, tiny_generator_dir, tiny_pal_dir):
    data, stopped_at = tmp_path / "data", tmp_path / "stopped-at"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "STOPPED_AT": str(stopped_at)}
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=STOP_BEFORE_PURGE, **env)
    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}
        with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as client:
            for i, user in enumerate(["zed", "zed", "zed", "ann", "ann"]):
                marker = MARKER if user == "zed" else "kept"
                r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tea or coffee? {i} {marker}",
                                                      "chosen": f"Tea {i}. {marker}", "rejected": f"Coffee {i}."})
                assert r.status_code == 201, r.text
            for user, n in (("zed", 3), ("ann", 2)):  # her read moves her pending rows into the table
                assert client.get(f"/v1/users/{user}/preferences").json()["total"] == n
        assert files_holding(data / "lancedb", MARKER)
        kill_when_stopped(proc, headers, stopped_at)  # her rows are deleted; the purge would begin now
        assert "preferences" in stopped_at.read_text()
        assert files_holding(data, MARKER)  # what the kill left: her text in the old versions' files
    finally:
        proc.stop()

    again = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:
        after_restart = files_holding(data, MARKER)  # the restart finished the purge
        with httpx.Client(base_url=again.url, headers=headers, timeout=30) as client:
            r = client.delete("/v1/users/zed")  # the DELETE sent again: no row of hers is left
            assert (r.status_code, after_restart, files_holding(data, MARKER)) == (404, [], []), r.text
            assert client.get("/v1/users/ann/preferences").json()["total"] == 2
    finally:
        again.stop()


@pytest.mark.slow
def test_a_delete_killed_after_the_rows_is_finished_by_the_restart_without_being_sent_again(tmp_path, tiny_generator_dir, tiny_pal_dir):
    """Slow (two service starts: 100 s here on two shared cores). Before: the restarted service left
    `adapters/default/zed/pluralign.json` and the population snapshot holding the user for good."""
    from pluralign.data.io import write_jsonl
    from pluralign.data.record import Preference
    from pluralign.policy.adapters import AdapterRegistry
    from tests.service.test_service_adapters import random_adapter

    data, stopped_at = tmp_path / "data", tmp_path / "stopped-at"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "STOPPED_AT": str(stopped_at)}
    proc = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, code=STOP_AFTER_THE_ROWS, **env)
    try:
        headers = {"Authorization": f"Bearer {proc.dev_key()}"}
        with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as client:
            for i, user in enumerate(["zed", "zed", "ann"]):
                marker = MARKER if user == "zed" else "kept"
                r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tea or coffee? {i} {marker}",
                                                      "chosen": f"Tea {i}. {marker}", "rejected": f"Coffee {i}."})
                assert r.status_code == 201, r.text
            for user, n in (("zed", 2), ("ann", 1)):
                assert client.get(f"/v1/users/{user}/preferences").json()["total"] == n
        # what a promoted adapter job and a population job leave: her adapter folder, a snapshot naming her
        registry = AdapterRegistry(data / "adapters")
        random_adapter(tiny_generator_dir, registry.folder("default", "zed"), tiny_generator_dir.name, "user", 1)
        meta = msgspec.structs.replace(registry.meta("default", "zed"), tenant="default", user="zed")
        (registry.folder("default", "zed") / "pluralign.json").write_bytes(msgspec.json.encode(meta))
        write_jsonl([Preference(user_id=f"default/{user}", prompt=f"Tea? {marker}", chosen="Tea.", rejected="Coffee.", created_at=time.time())
                     for user, marker in (("zed", MARKER), ("ann", "kept"))],
                    data / "jobs" / "data" / "population" / f"comparisons-{int(time.time() * 1000)}.jsonl")
        kill_when_stopped(proc, headers, stopped_at)  # her rows are deleted and purged; the adapter and population steps would run now
        assert "'preferences': 2" in stopped_at.read_text()
        left = files_holding(data, MARKER, '"zed"')
        assert any(f.startswith("adapters") for f in left) and any(f.startswith("jobs") for f in left), left
    finally:
        proc.stop()

    again = ServeProcess(data, tiny_generator_dir, tiny_pal_dir, PLURALIGN_CACHE_DIR=str(tmp_path / "cache"))
    try:  # the DELETE is never sent again
        deadline = time.monotonic() + 30
        while (left := files_holding(data, MARKER, "default/zed", '"zed"')) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [] and not registry.folder("default", "zed").exists(), left
        assert list((data / "deletes-in-progress").iterdir()) == []
        with httpx.Client(base_url=again.url, headers=headers, timeout=30) as client:
            assert client.get("/v1/users/ann/preferences").json()["total"] == 1
            assert client.delete("/v1/users/zed").status_code == 404
    finally:
        again.stop()
