"""Operations per second of the three tenant-fair caches with 100 and 3,000 tenants holding entries (session cache57:
one eviction policy, `pluralign.cache.FairLRU`, for all three). Each cache is full: every miss evicts.

- histories (`pluralign.store.history.HistoryCache`): a hit (a tenant's cached user read again) and a miss (a new
  user of a tenant loaded, kept, one history evicted); in-memory histories of 10 rows, 8-d, no store; and the
  milliseconds of one miss right after a read of every tenant's (the worst of three, the garbage collector off: a
  policy that ranks again, at an eviction, the tenants read since the last one, ranks them all there);
- a big user (`--big-cycles`, session fair58): 20 other tenants hold four 10-row histories each and acme four, the
  bound leaves room for half of acme's big user (6,000 rows); each cycle acme reads its big user, then its four small
  ones (which push the big one out: acme holds the most), then every other tenant reads its four users again: how many
  of the others' 80 histories the first cycle and each later one had pushed out (each read again from the store), and
  the milliseconds of acme's load of its big user (the median over the cycles, the load itself not counted);
- a big user chatting (`--big-chats`, review fair58): 20 other tenants hold four 10-row histories each, 768-d, the
  bound leaves room for half of acme's big user (600 rows); every 30 s (a stand-in clock) acme's big user chats: a read,
  a feedback row written, two reads; the others hold still (`idle`) or read their four users again after each chat
  (`active`): how many of the big user's reads went to the store, and how many of the others' histories were pushed out
  (idle: at the end; active: summed over the cycles, each read again from the store);
- many big users (`--big-tenants N`, session fair59): 20 other tenants hold four 10-row histories each, 8-d, the bound
  leaves room for half of one big user (3,000 rows); each of N tenants with one big user reads it in turn within one
  `TAKE_AGAIN_S`, the others reading their users again after each, for `--windows` windows (a stand-in clock): how
  many of the others' histories those loads pushed out (each read again from the store) and how many loads took room,
  with each tenant's own allowance only (`takes_in_all` unbounded: before) and with `TAKES_IN_ALL` (after), side by side;
- vectors (`pluralign.embed.cache.ScopedVectors`): an `encode` of 10 texts under a tenant, all cached (hits) or all
  fresh (misses: ten vectors kept, ten evicted); a stand-in encoder returning ones;
- adapters (`pluralign.policy.adapters.AdapterPool`): `adapter_for` of a loaded user (a hit) and of a user not loaded
  (a load, one adapter evicted); a registry of one shared adapter folder and a host that loads nothing, so the figure
  is the pool's own work (a real load is seconds).

    OMP_NUM_THREADS=1 PYTHONPATH=<a checkout before cache57> python -m benchmarks.fair_caches   # before
    OMP_NUM_THREADS=1 PYTHONPATH=. python -m benchmarks.fair_caches                           # after
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def per_second(run, seconds: float = 0.5) -> float:
    """Calls of `run()` a second, the best of three windows of `seconds`."""
    best = 0.0
    for _ in range(3):
        n, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            run()
            n += 1
        best = max(best, n / elapsed)
    return best


def histories(tenants: int) -> dict[str, float]:
    from pluralign.store.history import History, HistoryCache

    vectors = np.zeros((10, 8), np.float32)
    meta = pa.Table.from_arrays([pa.array([False] * 10), pa.array(["no"] * 10)], names=["tie", "rejected"])
    one = History(meta, vectors, vectors, vectors, np.zeros(10, bool))
    cache = HistoryCache(1 << 40)
    for t in range(tenants):
        for u in range(3):
            cache.get((f"t{t}", f"u{u}"), lambda: one)
    cache.budget_bytes = cache.nbytes
    state = {"i": 0}

    def hit():
        state["i"] += 1
        cache.get((f"t{state['i'] % tenants}", "u2"), lambda: one)

    def miss():
        state["i"] += 1
        cache.get((f"t{state['i'] % tenants}", f"new{state['i']}"), lambda: one)

    found = {"hit": per_second(hit), "miss": per_second(miss), "miss after reads ms": 0.0}
    for _ in range(3):
        for t in range(tenants):
            cache.get((f"t{t}", "u2"), lambda: one)
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            miss()
            found["miss after reads ms"] = max(found["miss after reads ms"], (time.perf_counter() - started) * 1e3)
        finally:
            gc.enable()
    return found


def history(rows: int, dim: int = 8):
    """An in-memory history of `rows` rows of `dim`-d vectors (zeros), no store."""
    from pluralign.store.history import History

    vectors = np.zeros((rows, dim), np.float32)
    meta = pa.Table.from_arrays([pa.array([False] * rows), pa.array(["no"] * rows)], names=["tie", "rejected"])
    return History(meta, vectors, vectors, vectors, np.zeros(rows, bool))


def big_user(cycles: int) -> dict[str, float]:
    from pluralign.store.history import HistoryCache

    small, big = history(10), history(6000)
    others = [(f"t{t}", f"u{u}") for t in range(20) for u in range(4)]
    acme = [("acme", f"s{u}") for u in range(4)]
    cache = HistoryCache(1 << 40)
    for key in others + acme:
        cache.get(key, lambda: small)
    cache.budget_bytes = cache.nbytes + big.nbytes // 2
    pushed, loads = [], []
    for _ in range(cycles):
        started = time.perf_counter()
        cache.get(("acme", "big"), lambda: big)
        loads.append((time.perf_counter() - started) * 1e3)
        for key in acme:
            cache.get(key, lambda: small)
        pushed.append(sum(cache.peek(key) is None for key in others))
        for key in others:
            cache.get(key, lambda: small)
    later = pushed[1:]
    return {"first": pushed[0], "later per cycle": sum(later) / len(later), "later max": max(later),
            "in all": sum(pushed), "big load ms": sorted(loads)[len(loads) // 2]}


def big_chats(cycles: int) -> dict[str, float]:
    from pluralign.store.history import HistoryCache

    small, row = history(10, 768), history(1, 768)
    others = [(f"t{t}", f"u{u}") for t in range(20) for u in range(4)]

    def run(active: bool) -> tuple[int, int]:
        now, big = [0.0], [history(600, 768)]
        cache = HistoryCache(1 << 40, clock=lambda: now[0])
        for key in others:
            cache.get(key, lambda: small)
        cache.budget_bytes = cache.nbytes + big[0].nbytes // 2
        from_store, pushed = 0, 0
        for _ in range(cycles):
            now[0] += 30
            for read in range(3):
                from_store += cache.peek(("acme", "big")) is None
                cache.get(("acme", "big"), lambda: big[0])
                if read == 0:
                    big[0] = big[0].extended(row)
                    cache.extend(("acme", "big"), lambda: row)
            if active:
                pushed += sum(cache.peek(key) is None for key in others)
                for key in others:
                    cache.get(key, lambda: small)
        return from_store, pushed if active else sum(cache.peek(key) is None for key in others)

    found: dict[str, float] = {}
    for active in (False, True):
        name = "active" if active else "idle"
        found[f"{name}: big user's reads from the store"], found[f"{name}: others' pushed out"] = run(active)
    return found


def big_tenants(tenants: int, windows: int) -> dict[str, float]:
    from pluralign.store.history import TAKE_AGAIN_S, TAKES_IN_ALL, HistoryCache

    small, big = history(10), history(3000)
    others = [(f"t{t}", f"u{u}") for t in range(20) for u in range(4)]

    def run(takes_in_all: int) -> tuple[int, int]:
        now = [0.0]
        cache = HistoryCache(1 << 40, clock=lambda: now[0], takes_in_all=takes_in_all)
        for key in others:
            cache.get(key, lambda: small)
        cache.budget_bytes = cache.nbytes + big.nbytes // 2
        pushed = takes = 0
        for _ in range(windows):
            for t in range(tenants):
                cache.get((f"big{t}", "big"), lambda: big)
                gone = sum(cache.peek(key) is None for key in others)
                pushed, takes = pushed + gone, takes + (gone > 0)
                for key in others:
                    cache.get(key, lambda: small)
            now[0] += TAKE_AGAIN_S
        return pushed, takes

    found: dict[str, float] = {}
    for name, bound in (("before", 1 << 30), ("after", TAKES_IN_ALL)):
        found[f"others' pushed out {name}"], found[f"loads that took {name}"] = run(bound)
    return found


class Ones:
    encoder_id, dim = "bench/ones", 8

    def encode(self, texts):
        return np.ones((len(texts), self.dim), np.float32)


def vectors(tenants: int) -> dict[str, float]:
    from pluralign.embed.cache import ScopedVectors

    probe = ScopedVectors(max_bytes=1 << 40)
    probe.encode(Ones(), "probe", ["one"])
    per_scope = probe.scope_bytes("probe") * 10 + 2048
    cache, encoder = ScopedVectors(max_bytes=tenants * per_scope), Ones()
    for t in range(tenants):
        cache.encode(encoder, f"t{t}", [f"pool {i}" for i in range(10)])
    state = {"i": 0}

    def hit():
        state["i"] += 1
        cache.encode(encoder, f"t{state['i'] % tenants}", [f"pool {i}" for i in range(10)])

    def miss():
        state["i"] += 1
        cache.encode(encoder, f"t{state['i'] % tenants}", [f"fresh {state['i']} {i}" for i in range(10)])

    return {"hit": per_second(hit), "miss": per_second(miss)}


class Host:
    """Loads nothing: the pool counts the adapter folder's safetensors file."""

    model = None

    def __init__(self):
        self.adapters: set[str] = set()

    def load_adapter(self, name, folder):
        self.adapters.add(name)

    def drop_adapter(self, name):
        self.adapters.discard(name)


class Registry:
    """Every user's adapter is the one folder's."""

    def __init__(self, folder: Path):
        from pluralign.policy.adapters import AdapterMeta

        self.one = folder
        self.meta_ = AdapterMeta(kind="user", base_model="bench", shots=0, data_version="bench", created_at=1.0)

    def folder(self, tenant, user):
        return self.one

    def meta(self, tenant, user):
        return self.meta_

    def require(self, tenant, user, base_model):
        return self.one, self.meta_


def adapters(tenants: int) -> dict[str, float]:
    from pluralign.policy.adapters import AdapterPool

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "adapter_model.safetensors").write_bytes(b"x" * 1000)
        pool = AdapterPool(Host(), Registry(folder), "bench", budget_bytes=1000 * 2 * tenants)
        for t in range(tenants):
            for u in range(2):
                pool.adapter_for(f"t{t}", f"u{u}")
        state = {"i": 0}

        def hit():
            state["i"] += 1
            pool.adapter_for(f"t{state['i'] % tenants}", "u1")

        def miss():
            state["i"] += 1
            pool.adapter_for(f"t{state['i'] % tenants}", f"new{state['i']}")

        return {"hit": per_second(hit), "miss": per_second(miss)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[100, 3000])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--big-cycles", type=int, default=0, help="run only the big user's cycles, this many")
    parser.add_argument("--big-chats", type=int, default=0, help="run only the big user's chats, this many")
    parser.add_argument("--big-tenants", type=int, default=0, help="run only the many tenants' big users, this many tenants")
    parser.add_argument("--windows", type=int, default=3, help="with --big-tenants: TAKE_AGAIN_S windows, this many")
    args = parser.parse_args(argv)
    if args.big_tenants:
        found = big_tenants(args.big_tenants, args.windows)
        if args.json:
            print(json.dumps(found))
            return
        print(f"{args.big_tenants} tenants' big users, {args.windows} windows  {'before':>8} {'after':>8}")
        for what in ("others' pushed out", "loads that took"):
            print(f"{what:<40} {found[what + ' before']:>8g} {found[what + ' after']:>8g}")
        return
    if args.big_cycles or args.big_chats:
        found = big_user(args.big_cycles) if args.big_cycles else big_chats(args.big_chats)
        print(json.dumps(found) if args.json else ", ".join(f"{k}: {v:g}" for k, v in found.items()))
        return
    found = {f"{name} {tenants}": run(tenants) for name, run in (("histories", histories), ("vectors", vectors),
                                                                  ("adapters", adapters)) for tenants in args.tenants}
    if args.json:
        print(json.dumps(found))
        return
    print(f"{'cache, tenants':<18} {'hit/s':>10} {'miss/s':>10} {'miss after reads, ms':>21}")
    for name, rates in found.items():
        after = f"{rates['miss after reads ms']:.2f}" if "miss after reads ms" in rates else "-"
        print(f"{name:<18} {rates['hit']:>10.0f} {rates['miss']:>10.0f} {after:>21}")


if __name__ == "__main__":
    main()
