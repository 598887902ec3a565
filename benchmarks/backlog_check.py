"""What the refit hook's look at the feedback backlog costs at each move (`service.feedback.services.refit_waiting`):
the hook runs once per request's rows of every batch the worker moves (up to `ingest_batch`, 64, a batch), and
looked with `FeedbackLog.backlog()`, a pass over every pending record under the lock each feedback append waits
on; now `FeedbackLog.has_pending()`. `--records` one-row records pending in a real log (appended together, then
the log opened again: a replay).

    OMP_NUM_THREADS=1 python -m benchmarks.backlog_check --records 10000 100000

Prints one line per size: best of 5, ms per look and per batch of 64 looks, each way.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from pluralign.store import StoredPreference
from pluralign.store.feedback_log import FeedbackLog


async def fill(log: FeedbackLog, records: int) -> None:
    for start in range(0, records, 5000):
        await asyncio.gather(*(log.append_async([StoredPreference(
            tenant="t", user_id=f"u{i % 1000}", pref_id=f"p{i}", prompt="q", chosen="a", rejected="b", kind="comparison",
            created_at=float(i))]) for i in range(start, min(records, start + 5000))))


def best_ms(look, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        look()
        times.append(time.perf_counter() - began)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    for records in args.records:
        with tempfile.TemporaryDirectory() as folder:
            log = FeedbackLog(folder)
            asyncio.run(fill(log, records))
            log.close()
            log = FeedbackLog(folder)  # replayed: every record pending
            assert log.backlog()[0] == records
            before, now = best_ms(lambda log=log: log.backlog()[0]), best_ms(log.has_pending)
            print(f"{records:>7} records pending: backlog() {before:7.3f} ms a look, {64 * before:7.1f} ms a batch; "
                  f"has_pending() {now:7.4f} ms a look, {64 * now:6.3f} ms a batch")
            log.close()


if __name__ == "__main__":
    main()
