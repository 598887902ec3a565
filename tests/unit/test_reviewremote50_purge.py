"""A DELETE's purge of a user's adapter copies on a remote generation server (`RemoteGenerator.purge_adapter`, called by
`AdapterPool.forget` once the user's files are gone), when many users go at once: a tenant's removal deletes them 256 a
batch (`service.tenants.USERS_PER_LOOK`), each with its `forget`."""

from __future__ import annotations

import re
import threading
import time

import pytest

from pluralign.policy.adapters import AdapterPool, AdapterRegistry, adapter_name
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.service.test_remote49_generation_server import GenerationServer
from tests.service.test_remote50_replicas import WEIGHTS, peft_folder
from tests.vllm_like import BASE

USERS = 60


@pytest.fixture
def server(tmp_path):
    server = GenerationServer(tmp_path / "generation.log")
    yield server
    server.stop()


def test_a_batch_of_deletes_lists_the_servers_adapters_a_few_times_on_one_thread_and_unloads_every_copy(server, tmp_path):
    """Before (review remote50) each user's `forget` started a thread of its own listing the server's models: a batch of
    256 users' DELETEs was 256 threads and 256 listings at once (each up to `generator_timeout_s` x its tries against a
    slow server, beside the chats on the same client). Now one purge thread per generator takes the names waiting and
    lists the server's models once for them all; every copy of a deleted user's is still unloaded."""
    registry = AdapterRegistry(tmp_path / "adapters")
    other = RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0))  # another replica
    kept = registry.folder("acme", "keep")
    peft_folder(kept, 0.5)
    gone = registry.folder("acme", "u0")
    peft_folder(gone, 0.25)
    other.load_adapter(adapter_name("acme", "u0"), gone)
    other.load_adapter(adapter_name("acme", "keep"), kept)
    registry.delete("acme", "u0")
    pool = AdapterPool(RemoteGenerator(server.url, BASE, policy=RemotePolicy(timeout_s=10, max_retries=0)), registry, BASE, budget_bytes=WEIGHTS * 8)
    before = {t.ident for t in threading.enumerate()}
    most = 0
    for i in range(USERS):  # their files deleted (none held here): each forget asks for a purge
        pool.forget("acme", f"u{i}")
        most = max(most, sum(1 for t in threading.enumerate() if t.name == "adapter-purge" and t.ident not in before))
    deadline = time.monotonic() + 20
    while any(t.name == "adapter-purge" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.log.read_text().splitlines()
    listings = sum(1 for line in lines if line == "models 200")
    # before: 41 threads at once and 56 listings here; now one thread, and a listing per round of names waiting (1-3
    # here: how many depends on how fast the forgets come, so the bound is loose)
    assert most == 1 and listings <= USERS // 4, (most, listings)
    unloaded = [line for line in lines if re.match(r"unload ", line)]
    assert [(line.split()[1].split("-")[0], line.split()[2]) for line in unloaded] == [(adapter_name("acme", "u0"), "200")], unloaded
    listed = [m.id for m in other._client.models.list().data]
    assert not any(m.startswith(adapter_name("acme", "u0")) for m in listed), listed
    assert any(m.startswith(adapter_name("acme", "keep")) for m in listed), listed
