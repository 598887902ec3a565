"""One tenant's user's history read while another tenant reads four big users in turn: on a real Store (a temp folder,
384-d vectors, 2,000 rows a user, the history cache at 24 MiB: globex's user and two of acme's do not fit), how long
globex's read takes after each round of acme's and whether it was still cached. Before and after, side by side:

    OMP_NUM_THREADS=1 PYTHONPATH=<a checkout before tenant56> python benchmarks/history_cache_tenants.py before
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/history_cache_tenants.py after
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import numpy as np

from pluralign.store import Store, StoredPreference

DIM, ROWS = 384, 2000

def prefs(tenant, user, n):
    now = time.time()
    rows = [StoredPreference(tenant=tenant, user_id=user, pref_id=f"{user}-{i}", prompt=f"question {i} of {user} " * 4,
                             chosen=f"a good answer {i} " * 6, rejected=f"a bad answer {i} " * 6, kind="comparison",
                             created_at=now + i * 1e-3) for i in range(n)]
    v = np.random.default_rng(len(user)).standard_normal((n, DIM)).astype(np.float32)
    return rows, v, v, v



store = Store(tempfile.mkdtemp(), "enc", DIM, history_bytes=24 << 20)  # 24 MiB: bea and two of acme's users do not fit
store.add_preferences(*prefs("globex", "bea", ROWS))
for i in range(4):
    store.add_preferences(*prefs("acme", f"a{i}", ROWS))
size = store.history("globex", "bea").nbytes
hit, times = [], []
for _ in range(12):
    for i in range(4):
        store.history("acme", f"a{i}")
    misses = store.histories.misses
    t = time.perf_counter()
    store.history("globex", "bea")
    times.append((time.perf_counter() - t) * 1000)
    hit.append(store.histories.misses == misses)
print(f"{sys.argv[1] if len(sys.argv) > 1 else 'this checkout'}: history {size / 2**20:.1f} MiB; bea's read after acme's 4 reads: median {statistics.median(times):.2f} ms, "
      f"max {max(times):.2f} ms, cached {sum(hit)}/{len(hit)}")
