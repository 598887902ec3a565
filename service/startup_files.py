"""What a start reads before any model loads or the store opens: the population model's description
and the service's own FSPO adapter. Imports torch (the artifacts' readers) but not lancedb, litestar's
app or the models: `pluralign serve` calls it before the app's imports (seconds of CPU), `create_app`
again for a caller that builds the app itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluralign.policy.adapters import AdapterError, check_files, read_meta
from service.promoted import PROMOTED_PAL
from service.rewards import UserRewards

if TYPE_CHECKING:
    from service.settings import Settings


def check_startup_files(settings: Settings) -> None:
    """Read the description of the population model `Runtime.build` would serve (the promoted one,
    else `pal_path`) and the FSPO adapter's files (`fspo_adapter`) before any model is loaded: a
    damaged one is a ValueError naming the file (and the setting) at once, not after the encoder and
    generator have loaded."""
    promoted = settings.data_path / PROMOTED_PAL
    UserRewards.check_description(promoted if (promoted / "meta.json").exists() else settings.pal_path)
    if settings.fspo_adapter:  # the service's own adapter
        try:
            read_meta(settings.fspo_adapter)
            check_files(settings.fspo_adapter)
        except AdapterError as exc:
            raise ValueError(f"PLURALIGN_FSPO_ADAPTER (setting fspo_adapter): {exc}") from None
