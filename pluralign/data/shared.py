"""Where the real preference sets live: the shared data folder beside the checkout.

    shared_data_dir()               # <checkout>/../shared/data, wherever the command runs from
    shared_data_dir("/srv/data")    # a folder given by a setting or an option, as given
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # the folder holding pluralign/ (an editable install's checkout)
BESIDE_CHECKOUT = CHECKOUT.parent / "shared" / "data"


def shared_data_dir(given: str | os.PathLike | None = None) -> Path:
    """The shared data folder: `given` (PLURALIGN_SHARED_DATA, a setting, an option) when not empty,
    else `../shared/data` beside the checkout (not beside the working folder: `pluralign serve` run from
    anywhere finds the same data). Nothing is checked: a reader names what it misses there."""
    return Path(given) if given else BESIDE_CHECKOUT
