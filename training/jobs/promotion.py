"""Which artifact is served: a new adapter or mixture replaces the current one only if its held-out
accuracy is not worse. A candidate that loses is kept on disk but not served.

The registry is one JSON file (key -> served artifact), written atomically by the job runner."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec

from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, write_atomic


class Served(Persisted, kw_only=True):
    artifact: str
    heldout_accuracy: float
    job_id: str
    promoted_at: float


class Promotions:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._served: dict[str, Served] = {}
        if self.path.exists():
            try:
                self._served = msgspec.json.decode(self.path.read_bytes(), type=dict[str, Served])
            except DECODE_ERRORS as exc:  # never written over: what it says is served would be lost
                raise ValueError(f"{self.path}: not a promotions file (artifact served per key): {exc}") from None

    def served(self, key: str) -> Served | None:
        """The artifact to serve for `key` (e.g. `adapter/alice`, `pal`), or None."""
        with self._lock:
            return self._served.get(key)

    def consider(self, key: str, artifact: str, heldout_accuracy: float, job_id: str) -> tuple[bool, str]:
        """Promote the candidate unless it is worse than what is served; returns (promoted, why)."""
        with self._lock:
            current = self._served.get(key)
            if current is not None and heldout_accuracy < current.heldout_accuracy:
                return False, (f"kept, not served: held-out accuracy {heldout_accuracy:.4f} < "
                               f"{current.heldout_accuracy:.4f} of the served {current.artifact} (job {current.job_id})")
            served = {**self._served, key: Served(artifact=artifact, heldout_accuracy=heldout_accuracy, job_id=job_id, promoted_at=time.time())}
            write_atomic(self.path, msgspec.json.encode(served))  # on disk first: a failed write promotes nothing
            self._served = served
        if current is None:
            return True, f"promoted: first {key} (held-out accuracy {heldout_accuracy:.4f})"
        return True, f"promoted: held-out accuracy {heldout_accuracy:.4f} >= {current.heldout_accuracy:.4f} of {current.artifact}"

    def withdraw(self, key: str, job_id: str, previous: Served | None) -> None:
        """Undo `consider`'s promotion of job `job_id` for `key` when putting it into service failed:
        `previous` (what was served before it, None: nothing) is recorded as served again, so the
        next candidate is compared with what is served. A key since promoted to another job is left."""
        with self._lock:
            current = self._served.get(key)
            if current is None or current.job_id != job_id:
                return
            served = {k: v for k, v in self._served.items() if k != key}
            if previous is not None:
                served[key] = previous
            write_atomic(self.path, msgspec.json.encode(served))  # on disk first, as in `consider`
            self._served = served

    def keys(self, prefix: str = "") -> list[str]:
        """The keys something is served for, those starting with `prefix`."""
        with self._lock:
            return [key for key in self._served if key.startswith(prefix)]

    def forget(self, key: str) -> bool:
        """Stop recording what is served for `key` (its user was deleted); True if there was one."""
        with self._lock:
            if key not in self._served:
                return False
            served = {k: v for k, v in self._served.items() if k != key}
            write_atomic(self.path, msgspec.json.encode(served))  # on disk first, as in `consider`
            self._served = served
        return True
