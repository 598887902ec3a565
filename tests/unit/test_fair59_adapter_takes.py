"""Session fair59: an adapter larger than its tenant's share of the adapter pool, chatted with again and again, takes
room from the other tenants' adapters at most as the users' histories cache lets a history (`pluralign.cache.Takes`):
once per `TAKE_AGAIN_S` for its tenant, `TAKES_IN_ALL` times for all. A load whose take is refused serves the adapter
beside the budget without keeping it: pushing out nobody's. Loads counted with a host that loads nothing (the pool
counts the adapter folder's safetensors bytes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pluralign.cache import TAKE_AGAIN_S
from pluralign.policy.adapters import AdapterMeta, AdapterPool, adapter_name

OTHERS = [(f"t{t}", "u") for t in range(5)]
NAMES, BIG = [adapter_name(*key) for key in OTHERS], adapter_name("acme", "big")


class Host:
    """Loads nothing; counts the loads of each adapter."""

    model = None

    def __init__(self):
        self.adapters: set[str] = set()
        self.loads: Counter[str] = Counter()

    def load_adapter(self, name, folder):
        self.adapters.add(name)
        self.loads[name] += 1

    def drop_adapter(self, name):
        self.adapters.discard(name)


class Registry:
    """Each user's adapter a folder of one safetensors file of `sizes[(tenant, user)]` bytes (1,000 unless told)."""

    def __init__(self, root: Path, sizes: dict):
        self.root, self.sizes = root, sizes
        self.meta_ = AdapterMeta(kind="user", base_model="test", shots=0, data_version="test", created_at=1.0)

    def folder(self, tenant, user):
        folder = self.root / tenant / user
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "adapter_model.safetensors").write_bytes(b"x" * self.sizes.get((tenant, user), 1000))
        return folder

    def meta(self, tenant, user):
        return self.meta_

    def require(self, tenant, user, base_model):
        return self.folder(tenant, user), self.meta_


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_big_adapter_chatted_with_again_and_again_pushes_out_the_others_adapters_once_a_window(tmp_path):
    """Five tenants hold one 1,000-byte adapter each; acme's is 6,000 bytes, the budget 8,000. Each cycle acme chats,
    then each other tenant: before, each of acme's loads pushed out three of theirs (its tenant held the most: their
    loads pushed it out in turn), 3 reloads of theirs a cycle; now its first load takes their room, the later ones within
    `TAKE_AGAIN_S` are served beside the budget, not kept, and the others load nothing again. Past the window, one
    take again."""
    clock = Clock()
    host = Host()
    pool = AdapterPool(host, Registry(tmp_path, {("acme", "big"): 6000}), "test", budget_bytes=8000, clock=clock)
    for key in OTHERS:
        pool.adapter_for(*key)

    def cycle() -> None:
        assert pool.adapter_for("acme", "big") in host.adapters  # the chat has its adapter
        for key in OTHERS:
            assert pool.adapter_for(*key) in host.adapters
        assert pool.bytes_used <= pool.budget_bytes

    cycle()
    first = sum(host.loads[n] for n in NAMES) - len(OTHERS)
    assert first > 0, "acme's first load took no room"
    before = Counter(host.loads)
    for _ in range(8):
        clock.now += 30
        cycle()
    others = sum(host.loads[n] - before[n] for n in NAMES)
    assert others == 0, f"acme's big adapter pushed out the others' again within TAKE_AGAIN_S: {others} reloads in 8 cycles"
    assert host.loads[BIG] - before[BIG] == 1, "served beside the budget, it was loaded again at each chat"
    clock.now += TAKE_AGAIN_S
    before = Counter(host.loads)
    cycle()
    cycle()
    again = sum(host.loads[n] - before[n] for n in NAMES)
    assert 0 < again <= first, f"past TAKE_AGAIN_S: {again} reloads of the others' (one take: {first})"


class Tracking(Host):
    """A host whose generations in flight use `adapters_in_use` (the service's generators)."""

    def __init__(self):
        super().__init__()
        self.adapters_in_use: set[str] = set()


def test_an_adapter_served_beside_the_budget_stays_while_a_chat_generates_with_it_and_goes_after(tmp_path):
    """acme's big adapter, its take refused, is served beside the budget: another tenant's load leaves it loaded while
    a chat generates with it, and unloads it at the next load once none does; it never counts in the table."""
    from tests.stores import wait_for

    clock, host = Clock(), Tracking()
    pool = AdapterPool(host, Registry(tmp_path, {("acme", "big"): 6000}), "test", budget_bytes=8000, clock=clock)
    for key in OTHERS:
        pool.adapter_for(*key)
    pool.adapter_for("acme", "big")  # its tenant's one take
    pool.adapter_for("t9", "new")  # pushes the big one out (acme holds the most)
    wait_for(lambda: BIG not in host.adapters and not pool.bytes_evicted_in_use)
    assert pool.adapter_for("acme", "big") == BIG and BIG in host.adapters  # served, take refused: beside the budget
    assert BIG not in pool.loaded and pool.bytes_evicted_in_use == 6000 and pool.bytes_used <= pool.budget_bytes
    host.adapters_in_use = {BIG}  # a chat generates with it
    pool.adapter_for("t9", "other")
    assert BIG in host.adapters, "unloaded while a chat generated with it"
    host.adapters_in_use = set()
    pool.adapter_for("t9", "third")
    wait_for(lambda: BIG not in host.adapters and not pool.bytes_evicted_in_use)
