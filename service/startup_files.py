"""What a start reads before any model loads or the store opens: the population model's description
and the service's own FSPO adapter. Imports torch (the artifacts' readers) but not lancedb, litestar's
app or the models: `pluralign serve` calls it before the app's imports (seconds of CPU), `create_app`
again for a caller that builds the app itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluralign.policy.adapters import AdapterError, check_files, read_meta
from service.promoted import PROMOTED_PAL
from service.rewards import UserRewards
from service.settings import check_keys_file

if TYPE_CHECKING:
    from service.settings import Settings


def check_pal_dir_rewritable(settings: Settings) -> None:
    """`pal_path` while the promoted model is served: every DELETE rewrites its training users' rows still
    (`Runtime.forget_population_users`), so one of another schema is refused at start (`UserRewards.check_rewritable`),
    a ValueError naming the setting and the file. Before session 49 it was not looked at: the start went on, and
    each DELETE of a user it could not rewrite answered 500 `population_not_rewritten`."""
    try:
        UserRewards.check_rewritable(settings.pal_path)
    except (ValueError, FileNotFoundError) as exc:  # (a meta.json without its user_weights.json: damaged)
        raise ValueError(f"PLURALIGN_PAL_DIR (setting pal_dir), whose training users' rows each DELETE rewrites though the "
                         f"promoted model in {settings.data_path / PROMOTED_PAL} is served: {exc}; put a checkpoint this "
                         "release reads there (or empty it) and start again") from None


def check_startup_files(settings: Settings) -> None:
    """Read the description of the population model `Runtime.build` would serve (the promoted one,
    else `pal_path`) and the FSPO adapter's files (`fspo_adapter`) before any model is loaded: a
    damaged one is a ValueError naming the file (and the setting) at once, not after the encoder and
    generator have loaded. And the key file a `keys_file` names (`service.settings.check_keys_file`)."""
    check_keys_file(settings)
    promoted = settings.data_path / PROMOTED_PAL
    if (promoted / "meta.json").exists():
        UserRewards.check_description(promoted)
        check_pal_dir_rewritable(settings)
    else:
        UserRewards.check_description(settings.pal_path)
    if settings.fspo_adapter:  # the service's own adapter
        try:
            read_meta(settings.fspo_adapter)
            check_files(settings.fspo_adapter)
        except AdapterError as exc:
            raise ValueError(f"PLURALIGN_FSPO_ADAPTER (setting fspo_adapter): {exc}") from None
