"""A pass a service runs in the background: at start, then every `interval_s` seconds, on its own
daemon thread, until stopped. A pass that raises is logged and tried again at the next one; the
service goes on serving. Subclasses give `run_once` (`service.deletions.DeletionSweep`,
`service.admin.retention.JobRetention`, `service.pal_dir.PalDirWatch`). `passes` counts the passes that ran through
(`failed` those that raised): a test waits on it for a pass begun after an event, before it asserts that the pass did
not do something; a pass that raised may have stopped before the step that would have done it, so it is not counted."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

log = logging.getLogger("pluralign.service")


class Periodic(ABC):
    def __init__(self, interval_s: float, name: str, what: str):
        """`interval_s`: seconds between passes (positive); `name`: the thread's; `what`: the pass,
        as a failure's log line names it ("applying deletion records")."""
        self.interval_s = interval_s
        self._name, self._what = name, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # passes that ran through so far on the thread, and those that raised, written by it alone: what a wait for "a
        # pass begun after X has run" counts (two more than when X happened), where a fixed sleep proves nothing on a busy
        # machine; a pass that raised proves nothing either (it may have stopped before the step looked for)
        self.passes = self.failed = 0

    @abstractmethod
    def run_once(self) -> object:
        """One pass; what it returns is the subclass's (a count, a summary)."""

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True, name=self._name)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # a damaged file, the store unreachable, ...: tried again at the next pass
                log.exception("%s failed", self._what)
                self.failed += 1
            else:
                self.passes += 1
            if self._stop.wait(self.interval_s):
                return
