"""The promoted population model's folder under the data folder, and what a start does about a swap
cut short. Light (no torch, no LanceDB): `pluralign serve` calls `restore_promoted` before it imports
the service, and before its undoable start."""

from __future__ import annotations

import glob
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pluralign.files import undo_stopped_swap

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("pluralign.service")

PROMOTED_PAL = "pal-promoted"  # under the data folder: the promoted population checkpoint, served over pal_dir


def remove_crash_leftovers(served: Path) -> int:
    """Remove what a process killed mid-swap or mid-write left beside the promoted population model
    `served`: `.<name>.staged` and `.<name>.retired<random>` (`pluralign.files.swap_folder`; whole
    copies, every training user's rows in them) and temp files `.<file>.<random>` inside it. Called
    under `Runtime.population_lock`, which every swap and every rewrite holds, so none of them is in
    progress. Returns what went."""
    gone = 0
    retired = sorted(served.parent.glob(f".{glob.escape(served.name)}.retired*")) if served.parent.is_dir() else []
    for leftover in (served.with_name(f".{served.name}.staged"), *retired):
        if leftover.is_dir():
            shutil.rmtree(leftover)
            gone += 1
    if served.is_dir():
        for temp in served.glob(".*"):
            if temp.is_file():
                temp.unlink()
                gone += 1
    return gone


RETIRED_ADAPTER = re.compile(r"\.(?P<user>.+)\.retired[0-9a-f]{12}")  # swap_folder's name for a user's folder set aside


def restore_adapters(root: Path) -> int:
    """Put back each user's adapter that a swap killed between its two renames left set aside
    (`<root>/<tenant>/.<user>.retired<random>`, `<user>/` missing: a promotion's `copy_into_place`), as
    `restore_promoted` does for the population model: without it the user was served the
    fallback, their adapter never loaded. A set-aside folder beside a user folder that is there is
    left (`AdapterRegistry.leftovers`: a DELETE removes it). One listing per tenant; returns the
    adapters put back."""
    restored = 0
    for retired in sorted(root.glob("*/.*.retired*")) if root.is_dir() else []:
        match = RETIRED_ADAPTER.fullmatch(retired.name)
        if match is None or not retired.is_dir():
            continue
        try:  # (another replica sharing the folder may put it back first)
            back = undo_stopped_swap(retired.with_name(match["user"]))
        except OSError:
            continue
        if back is not None:
            restored += 1
            log.warning("%s was missing (a swap of the user's adapter was cut short): put back from %s",
                        retired.with_name(match["user"]), back.name)
    return restored


def restore_promoted(settings: Settings) -> None:
    """A service killed while it swapped in a promoted population model (between `swap_folder`'s two
    renames) left no `pal-promoted/` and the model it served beside it, renamed aside: put back, so
    the start serves that model rather than falling back to `pal_path` without a word; the same for
    each user's adapter (`restore_adapters`). The other
    leftovers of a killed swap or copy (`remove_crash_leftovers`) are removed. Called before
    a start that may fail (whose undoing would take the restored folder for one it created)."""
    restored = undo_stopped_swap(settings.data_path / PROMOTED_PAL)
    if restored is not None:
        log.warning("%s was missing (a swap of the promoted population model was cut short): put back from %s",
                    settings.data_path / PROMOTED_PAL, restored.name)
    # what the killed process left beside it (a copy staged for a swap that never came, an old model set
    # aside, temp files): each a whole copy of the training users' rows, never loaded, removed
    gone = remove_crash_leftovers(settings.data_path / PROMOTED_PAL)
    if gone:
        log.warning("removed %d leftover(s) of a promotion cut short beside %s", gone, settings.data_path / PROMOTED_PAL)
    restore_adapters(settings.adapters_path)
