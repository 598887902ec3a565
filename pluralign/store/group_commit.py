"""Group commit: concurrent writers share one LanceDB commit, and each returns once it is durable.

A LanceDB commit costs milliseconds whatever its size, so one commit per request caps the write
rate. Here the first writer to arrive commits everything queued so far (its own rows included);
writers arriving meanwhile wait and go in the next commit. Nobody returns before its rows are
committed, so "acknowledged" still means "on disk".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class _Ticket:
    data: pa.Table
    done: bool = False
    error: BaseException | None = None
    batch: list = field(default_factory=list)


class GroupCommit:
    """`submit(table)` blocks until a commit holding `table` succeeded (or raises its error)."""

    def __init__(self, commit: Callable[[pa.Table], None]):
        self._commit = commit  # writes one table (the concatenated batch) durably
        self._cv = threading.Condition()
        self._pending: list[_Ticket] = []
        self._committing = False
        self.commits = 0  # for tests and benchmarks: how many commits served how many submits
        self.submits = 0

    def submit(self, data: pa.Table) -> None:
        ticket = _Ticket(data)
        with self._cv:
            self._pending.append(ticket)
            self.submits += 1
            while not ticket.done and self._committing:
                self._cv.wait()
            if ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return
            batch, self._pending, self._committing = self._pending, [], True
        error = None
        try:
            self._commit(pa.concat_tables([t.data for t in batch]))
        except BaseException as exc:  # every writer of the batch sees the failure
            error = exc
        with self._cv:
            for t in batch:
                t.done, t.error = True, error
            self._committing = False
            self.commits += 1
            self._cv.notify_all()
        if error is not None:
            raise error
