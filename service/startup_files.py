"""What a start reads before any model loads or the store opens: the population model's description
and the service's own FSPO adapter. Imports torch (the artifacts' readers) but not lancedb, litestar's
app or the models: `pluralign serve` calls it before the app's imports (seconds of CPU), `create_app`
again for a caller that builds the app itself."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from pluralign.files import lock_file
from pluralign.policy.adapters import AdapterError, check_files, read_meta
from service.promoted import PROMOTED_PAL
from service.rewards import UserRewards
from service.settings import check_calibration_pools_dir, check_keys_file

if TYPE_CHECKING:
    from service.settings import Settings


def check_pal_dir_rewritable(settings: Settings) -> None:
    """`pal_path` while the promoted model is served: every DELETE rewrites its training users' rows still
    (`Runtime.forget_population_users`), so one of another schema is refused at start (`UserRewards.check_rewritable`),
    a ValueError naming the setting and the file. Unchecked, the start would go on, and
    each DELETE of a user it could not rewrite would answer 500 `population_not_rewritten`."""
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
    check_calibration_pools_dir(settings)
    check_pal_dir_lock(settings)
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


def check_pal_dir_lock(settings: Settings) -> None:
    """With several replicas, `pal_path`'s lock file (`pluralign.files.lock_file`), on which they take turns rewriting
    the folder they share, must be one this process can lock: a ValueError naming the setting and the file when it can
    be neither made (the folder's parent not writable: `folder_lock` would lock the folder itself, which orders the
    processes of one machine only, and not a replica whose uid can make the file) nor opened (another uid's file).
    Started, such a replica would rewrite the folder while another held the lock. A parent not
    there yet passes (the start makes it)."""
    if settings.replicas <= 1:
        return
    path = lock_file(settings.pal_path)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o660))
        return
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            return  # (ENOENT: the start makes the parent; anything else is named where the lock is taken)
        problem = exc
    try:
        if os.path.lexists(path):
            os.close(os.open(path, os.O_RDONLY))  # locked read-only (`folder_lock`): a local volume's flock takes it
            return
    except OSError:
        st = os.stat(path)
        raise ValueError(f"PLURALIGN_PAL_DIR (setting pal_dir): its lock file {path}, on which the {settings.replicas} "
                         f"replicas take turns rewriting the folder, cannot be opened by this process ({problem.strerror}: "
                         f"it is uid {st.st_uid}'s, gid {st.st_gid}, mode {st.st_mode & 0o777:04o}; this process runs as uid "
                         f"{os.geteuid()}); make it readable and writable by every replica's uid (chmod 0666, or one group "
                         "and 0660), or run the replicas as one uid") from None
    raise ValueError(f"PLURALIGN_PAL_DIR (setting pal_dir): its lock file {path}, on which the {settings.replicas} replicas "
                     f"take turns rewriting the folder, cannot be made ({problem.strerror}: its parent is not writable by "
                     f"uid {os.geteuid()}), and a lock on the folder itself orders one machine's processes only; set "
                     "PLURALIGN_PAL_DIR to a folder inside the shared volume (deploy/k8s: /var/lib/pluralign/shared/pal), "
                     "or make its parent writable")
