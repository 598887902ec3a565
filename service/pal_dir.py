"""PLURALIGN_PAL_DIR as replicas share it: a replica serving it takes up a new population model put there while it runs.

An operator puts a pal or em job's artifact into PLURALIGN_PAL_DIR (deploy/README.md); were each replica to serve
the model it loaded at start until it is restarted, replicas restarted one by one (a rolling restart) would fit
users against two population models meanwhile, and one not restarted would keep the old one for good. Each
replica looks at the folder every `deletion_sweep_s` seconds (`PalDirWatch`, from its start: a copy that ended while it
started counts too) and serves the new model once the folder has not changed for one whole pass (a copy under way is let finish), loaded under the folder's lock
(`pluralign.files.folder_lock`: no DELETE rewrites it meanwhile). A rewrite that only removed training users' rows
(a DELETE's) keeps the population version (`service.rewards.checkpoint_version`) and is not loaded again. A model
that cannot be served (another schema, encoder or vector size, a damaged file) is logged, naming the file, and the
served one stays: no chat or fit fails for it. Nor is a copy under way or a mix of two copies served, though the
folder did not change for a pass (a copy paused between files: meta.json copied first beside
the model before of the same shapes is not served): the model's meta.json records the sha256 of its other files and
loading checks them (`pluralign.files.FilesDiffer`, a WARNING naming the file while the model before is served). A DELETE of one of its training users does (500
population_not_rewritten: the row cannot be taken out of a file this release cannot read) until a model it reads is
put there; only theirs (`pal_checkpoint.forget_users` looks at the rows' bytes first).
A new EM mixture whose users.jsonl a DELETE rewrote after its meta.json without recording the file's digest there (a
release before replicas50's DELETE during a rolling upgrade: it rewrites users.jsonl and never reads meta.json) is
taken up as a start takes it up (`UserRewards.load_after_rewrites`, under the folder's lock): the digest recorded
anew, with a WARNING naming the file, not refused until the next promotion. Not a PAL
checkpoint's user_weights.json: a release before replicas50 cannot rewrite one of this release's (it refuses its
meta.json), so only a DELETE of this release killed between its two writes leaves that (a start takes it up), while
two plain copies at once, the last file the other model's user_weights.json, look the same and must not be served
(`tests/service/test_replicas50_pal_copy.py`). Two plain copies at once of EM mixtures that end so are served by the
watch, as by a start: promote with `pluralign promote`, which takes turns."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pluralign.files import FilesDiffer, folder_lock
from pluralign.reward.pal_checkpoint import META_FILE
from pluralign.reward.training_users import artifact_kind
from service.periodic import Periodic
from service.promoted import PROMOTED_PAL
from service.rewards import UserRewards, checkpoint_version

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("pluralign.service")

Stamp = tuple[tuple[str, int, int, int], ...]


def folder_stamp(folder: Path) -> Stamp | None:
    """(name, inode, mtime in ns, size) of each file in `folder`, by name; None without a meta.json (no model there,
    or one whose write has not finished: its description is written last)."""
    if not (folder / META_FILE).is_file():
        return None
    stamp = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):  # (temp files of a write)
                st = entry.stat(follow_symlinks=False)
                stamp.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(sorted(stamp))


class PalDirWatch(Periodic):
    """Serves the population model in `pal_path` once it changed and settled (the module's docstring)."""

    def __init__(self, rt: Runtime, interval_s: float):
        super().__init__(interval_s, "pal-dir-watch", "looking for a new population model in PLURALIGN_PAL_DIR")
        self.rt = rt
        self.folder = rt.settings.pal_path
        # what was looked at and found served (or unservable): nothing yet, so the first passes compare the folder's
        # version with the one served. Were the folder as found here counted as served, a
        # copy that ended between the start's read and this would go unseen, the model read served for good
        self._seen: Stamp | None = None
        self._pending: Stamp | None = None

    def run_once(self) -> bool:
        """One look; True when a new model is served from now on."""
        if (self.rt.settings.data_path / PROMOTED_PAL / META_FILE).exists():
            return False  # the promoted model is served, over pal_path (a leftover: Runtime.build warns of it)
        stamp = folder_stamp(self.folder)
        if stamp is None or stamp == self._seen:
            self._pending = None
            return False
        if stamp != self._pending:  # changed since the last look: a copy may be under way
            self._pending = stamp
            return False
        # population_lock first, as a DELETE takes them (`Runtime.forget_population_users`): the other order could deadlock
        with self.rt.population_lock, folder_lock(self.folder):
            self._seen, self._pending = folder_stamp(self.folder), None
            version = checkpoint_version(self.folder)
            if version == self.rt.rewards.version:
                return False  # only training users' rows removed (a DELETE), or the same model copied again
            # an EM mixture's users.jsonl a DELETE rewrote after meta.json without its digest is taken up, as a start
            # does; not a PAL checkpoint's user_weights.json (the module's docstring)
            load = UserRewards.load_after_rewrites if artifact_kind(self.folder) == "em" else UserRewards.load
            try:
                rewards = load(self.folder, self.rt.encoder.encoder_id, self.rt.encoder.dim)
            except FilesDiffer as exc:  # looked at again once the folder changes: the copy's end
                log.warning("PLURALIGN_PAL_DIR %s holds a new population model whose files are not all the ones its "
                            "meta.json records, so it is not served: %s; it serves %s still", self.folder, exc,
                            self.rt.rewards.version)
                return False
            except (OSError, ValueError) as exc:
                log.error("PLURALIGN_PAL_DIR %s holds a new population model this replica cannot serve: %s; it serves "
                          "%s still (put a model it can serve there)", self.folder, exc, self.rt.rewards.version)
                return False
            rewards.note = f"taken up from {self.folder} while serving"
            before, self.rt.rewards = self.rt.rewards.version, rewards
        self.rt.metrics.inc("pluralign_population_swaps_total", help="population reward models swapped in while serving")
        log.info("now serving population model %s (%s, K=%d) from PLURALIGN_PAL_DIR %s, put there while this replica "
                 "served %s: users are refitted against it at their next request", rewards.version, rewards.kind,
                 rewards.k, self.folder, before)
        return True
