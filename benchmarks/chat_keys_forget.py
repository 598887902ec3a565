"""What another replica's deletion records cost the chats sent with `Idempotency-Key` (`service.chat.keys.ChatKeys`):
`forget_where` matches every user holding a key (1,000 keys a tenant at most, here each its own user) against records
that name users by hash, so each is hashed (`Forget.user`); a chat's `begin` takes the same lock.

    python -m benchmarks.chat_keys_forget                # 1, 4, 8 and 16 tenants of 1,000 keys, 5 repeats

Prints per tenant count: forget_where's median time, the longest single hold of the lock, and what a chat's `begin`
from another thread waited while forget_where ran (median and max of 5).
"""

from __future__ import annotations

import statistics
import threading
import time

from pluralign.store.deletions import Forget, new_deletion
from service.chat.keys import ChatKeys


class _TimedLock:
    def __init__(self, lock, held: list[float]):
        self.lock, self.held = lock, held

    def __enter__(self):
        self.lock.acquire()
        self.began = time.perf_counter()

    def __exit__(self, *exc):
        self.held.append(time.perf_counter() - self.began)
        self.lock.release()


def measure(tenants: int, repeats: int = 5) -> dict:
    keys = ChatKeys()
    for t in range(tenants):
        for i in range(1000):
            keys.begin(f"t{t}", f"user{i}", f"k{i}", "d")
            keys.answered(f"t{t}", f"user{i}", f"k{i}", "answer", 100)
    forget = Forget.of([new_deletion("t0", "user5", time.time(), 1)])  # another replica's record: a hash
    lock, held, total, waits = keys._lock, [], [], []

    def again() -> None:  # the forgotten user's key back, for the next repeat
        keys.begin("t0", "user5", "k5", "d")
        keys.answered("t0", "user5", "k5", "answer", 100)

    for _ in range(repeats):
        keys._lock = _TimedLock(lock, held)
        began = time.perf_counter()
        keys.forget_where(forget.user)
        total.append(time.perf_counter() - began)
        keys._lock = lock
        again()
    for r in range(repeats):
        matching = threading.Thread(target=keys.forget_where, args=(forget.user,))
        matching.start()
        time.sleep(0.002)
        began = time.perf_counter()
        keys.begin("t1", "new", f"n{r}", "d")
        waits.append(time.perf_counter() - began)
        keys.failed("t1", "new", f"n{r}")
        matching.join()
        again()
    return {"tenants": tenants, "keys": tenants * 1000, "forget_where_ms": statistics.median(total) * 1000,
            "longest_hold_ms": max(held) * 1000, "begin_wait_median_ms": statistics.median(waits) * 1000,
            "begin_wait_max_ms": max(waits) * 1000}


def main() -> None:
    for tenants in (1, 4, 8, 16):
        m = measure(tenants)
        print(f"tenants={m['tenants']:2d} keys={m['keys']:5d}: forget_where {m['forget_where_ms']:6.1f} ms, longest lock hold "
              f"{m['longest_hold_ms']:5.1f} ms; a chat's begin during it {m['begin_wait_median_ms']:5.1f} ms median, "
              f"{m['begin_wait_max_ms']:5.1f} ms max")


if __name__ == "__main__":
    main()
