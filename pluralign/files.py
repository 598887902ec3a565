"""Whole-file writes that a crash cannot leave half done: a temp file beside the target, fsynced,
then renamed over it. Readers see the old file or the new one, never part of either. Artifact
folders the same way (`staged_folder`): written into a temp folder beside the target, then put in
its place with renames."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

import msgspec

from pluralign.data.decode_words import said

T = TypeVar("T")

DECODE_ERRORS: tuple[type[ValueError], ...] = (msgspec.DecodeError, UnicodeDecodeError)
"""What decoding damaged bytes with msgspec (JSON or MessagePack) raises: its DecodeError (a ValidationError is one),
and UnicodeDecodeError, which msgspec raises as it is for a string whose bytes are not UTF-8 (a byte changed, a
character of two bytes or more missing one; a file cut short inside its last string is a DecodeError). Every reader that takes a damaged file's (or reply's) own path for a
DecodeError catches these, so that a byte that is not UTF-8 takes the same path, not a traceback."""

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


@contextmanager
def writing_to(path: str | os.PathLike, weights: str | os.PathLike | None = None) -> Iterator[None]:
    """Errors of the writes in the block name what was being written. A write or fsync that fails
    (a full disk: ENOSPC; a file size limit: EFBIG) raises an OSError without a file name, so the
    one line a user sees said "[Errno 28] No space left on device" and no more: it gets `path`.
    safetensors' own error for a failed write ("I/O error: ... (os error 28)", not an OSError)
    becomes that OSError too, naming `weights` (default `path`). Other errors pass unchanged."""
    from safetensors import SafetensorError

    try:
        yield
    except OSError as exc:
        if exc.filename is not None or not exc.errno:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
    except SafetensorError as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(weights or path)) from exc


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yields a binary file; on a clean exit it replaces `path` and returns once the new file and its
    name are on disk (the file, then its folder, fsynced); on an error it is removed. A write
    that fails (a full disk) is an OSError naming `path` (`writing_to`), not the temp file.

    The file replaced keeps its permission bits (mkstemp's 0600 would hide a 0640 file from the group that
    reads it). Raises IsADirectoryError (naming `path`) when `path` is a folder, and SymlinkInTheWay when it
    is a symbolic link (a Kubernetes Secret or ConfigMap mount is one, into `..data/`): the rename would
    replace the link with a regular file, cut from what it points to. Both before anything is written."""
    path = Path(path)
    if path.is_symlink():
        raise SymlinkInTheWay(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file, is at this path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing_to(path):
        try:
            kept = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            kept = None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            shared = 0o640 if group_shared(path.parent) else 0  # mkstemp's 0600 would hide it from the folder's group
            if kept is not None or shared:
                os.fchmod(fd, (kept if kept is not None else 0o600) | shared)
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)  # the new name on disk too: a power loss after the return keeps the new file


class SymlinkInTheWay(OSError):
    """A file to be replaced is a symbolic link: refused, the link and what it points to left as they are."""

    def __init__(self, path: Path):
        target = os.readlink(path)
        super().__init__(errno.EEXIST, f"a symbolic link (to {target}) is at this path, not a file: replacing it would "
                         "replace the link with a regular file, cut from what it points to (a Kubernetes Secret or "
                         "ConfigMap mount is such a link into ..data/); change the file it points to where it comes "
                         "from, or remove the link first", str(path))


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def append_durably(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` to the file at `path` (created, with its folders, when missing) and return only once
    it is on disk: the file fsynced, and when this call created it (or its folders) each folder whose
    entries changed fsynced too, so neither the bytes nor the file's name are lost to a crash or a power
    loss after the caller acknowledged what they record. Raises OSError naming `path` when it cannot be
    written (a full disk: part of `data` may be appended; readers must take whole records only)."""
    path = Path(path)
    made = []  # folders this call creates, outermost last
    folder = path.parent
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    with writing_to(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            created = False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(path.parent)
        for folder in made:  # each new folder's name in its parent
            fsync_dir(folder.parent)


class FilesDiffer(ValueError):
    """An artifact's file is not the one its description (meta.json, written last) records: a copy into the folder
    under way (`cp artifact/*` copies meta.json first), what two copies at once mixed, or a damaged file."""


def file_digests(folder: str | os.PathLike, names: Collection[str]) -> dict[str, str]:
    """{name: sha256 hex digest} of the files `names` in `folder`, as an artifact's description records them
    (`check_digests`). Raises FileNotFoundError naming a missing one."""
    return {name: _sha256(Path(folder) / name) for name in names}


def check_digests(folder: str | os.PathLike, digests: dict[str, str], description: str = "meta.json") -> None:
    """Raise FilesDiffer naming the first file in `folder` (by name) that is missing or whose sha256 is not the one
    `digests` records (`file_digests`); `description` names the file that records them. {} (an artifact written
    by an earlier release, before digests were recorded) checks nothing."""
    for name, digest in sorted(digests.items()):
        path = Path(folder) / name
        try:
            found = _sha256(path)
        except FileNotFoundError:
            found = None
        if found != digest:
            raise FilesDiffer(f"{path}: {'missing' if found is None else 'not the file'} {description} records "
                              f"(sha256 {digest[:12]}..., found {'none' if found is None else found[:12] + '...'}): a "
                              "copy into the folder under way, two copies mixed, or a damaged file")


def rewritten_after_description(folder: str | os.PathLike, digests: dict[str, str], rewritten: str,
                                description: str = "meta.json") -> bool:
    """Whether `rewritten` (a per-user file a DELETE rewrites) is the only file in `folder` that `digests` records
    (`file_digests`) and that differs, and was put there after `description` (its inode's change time, ctime, not
    earlier): what a DELETE of a release before replicas50 leaves (it rewrote the file and left meta.json, its digest
    included, as it was), or one of this release killed between its two writes (the per-user file, then meta.json). A
    copy under way differs the other way (`cp artifact/*` copies meta.json first: the per-user file there is the model
    before's, changed before), or in another file too. The change time, not the modification time, which `cp -p` and
    `rsync -t` set to the artifact's (older than a DELETE's rewrite in the folder since): a copy sets the change time.
    Only meaningful under `folder_lock` (no `promote_into` under way); raises OSError for a file that cannot be read."""
    folder = Path(folder)
    differ = []
    for name, digest in digests.items():
        try:
            if _sha256(folder / name) == digest:
                continue
        except FileNotFoundError:
            return False
        differ.append(name)
    return differ == [rewritten] and \
        (folder / rewritten).stat().st_ctime_ns >= (folder / description).stat().st_ctime_ns


def still_recorded(folder: str | os.PathLike, digests: dict[str, str], name: str) -> bool:
    """Whether the file `name` in `folder` is the one `digests` records (its sha256, `file_digests`): asked before a
    DELETE rewrites a per-user file, so that the new file's digest is recorded (`with_new_digest`) only where the
    description described the file before. Never for a mix (another artifact's file beside this description, a copy
    under way): that must go on failing `check_digests`. False where `digests` records no such file (an artifact
    written by an earlier release, before digests were recorded). Raises FileNotFoundError where it records one and the file is missing."""
    recorded = digests.get(name)
    return recorded is not None and _sha256(Path(folder) / name) == recorded


def with_new_digest(folder: str | os.PathLike, digests: dict[str, str], name: str) -> dict[str, str]:
    """`digests` with the sha256 of the file `name` in `folder` as it is now: a per-user file a DELETE rewrote
    (where `still_recorded` said so before the rewrite, or `rewritten_after_description` after a DELETE that did not
    record it). Raises FileNotFoundError when the file is missing."""
    return {**digests, **file_digests(folder, (name,))}


def _sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The tensors of a safetensors file, by name (torch tensors on `device`).

    Raises FileNotFoundError when there is no file, and ValueError naming `path` when it is not a
    whole safetensors file (truncated by a crash mid-write, or another format)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}")
    try:
        return load_file(str(path), device=device)
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a whole safetensors file (truncated or another format): {exc}") from None


def check_artifact_folder(folder: str | os.PathLike, files: tuple[str, ...], what: str) -> Path:
    """Whether an artifact made of `files` (names in the folder) may be written to `folder`: it may
    be missing, empty, or hold only such files and their temp files (an earlier artifact of the same
    kind, or what a stopped write left of one). Anything else is refused, so a wrong --out never mixes one artifact's
    files with another's or overwrites unrelated files. Raises NotADirectoryError when a file is at
    `folder`, ValueError naming `folder` and a few of its other entries otherwise. Writes nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"a file, not a folder for a {what}, is at this path", str(folder))
    if folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if not _artifact_file(p.name, files))
        if other:
            shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
            raise ValueError(f"{folder} holds files that are not a {what}'s ({shown}): give a new or empty folder")
    return folder


def begin_artifact(folder: str | os.PathLike, files: tuple[str, ...], what: str) -> Path:
    """`check_artifact_folder`, then create `folder` and remove the earlier artifact's `files`
    (the first, its description, before the rest), so until the writer writes that description
    again, last, the folder is no artifact: a stopped write never leaves one that loads half old."""
    folder = check_artifact_folder(folder, files, what)
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).unlink(missing_ok=True)
    for path in folder.iterdir():  # temp files of a write that was killed before it could remove them
        if path.name not in files:
            path.unlink(missing_ok=True)
    return folder


class ArtifactBusy(ValueError):
    """Another process is writing an artifact into this folder now (`writing_artifact`)."""


@contextmanager
def writing_artifact(folder: str | os.PathLike, files: tuple[str, ...], what: str) -> Iterator[Path]:
    """`begin_artifact`, holding an exclusive lock on the folder (flock on its descriptor) until the
    block ends, for artifacts written in place, description last. A second save into the folder
    meanwhile is an ArtifactBusy naming it, before it removes or writes anything: two saves
    interleaving their files would leave one's weights under the other's description, which loads.
    (Folders written whole beside the target, `staged_folder`, need no lock: the last one wins.)"""
    folder = check_artifact_folder(folder, files, what)
    folder.mkdir(parents=True, exist_ok=True)
    if _holds_by_descriptor(folder):  # this thread's `folder_lock` holds this very flock (its fallback): a second
        yield begin_artifact(folder, files, what)  # descriptor's would be refused (a first start's bootstrap would fail so)
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactBusy(f"{folder}: another process is saving a {what} there now: wait for it to finish, "
                               "or give another folder") from None
        yield begin_artifact(folder, files, what)
    finally:
        os.close(fd)  # and with it the lock


def lock_file(folder: str | os.PathLike) -> Path:
    """The lock file `folder_lock` takes for `folder`: ".<name>.lock" beside it."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for reading and rewriting the artifact at `folder` that other processes rewrite too
    (replicas sharing PLURALIGN_PAL_DIR, each removing deleted users' rows from it), waiting for the process that
    holds it. Without it, two read-modify-write rewrites of one file interleave and the second writes back what the
    first removed (a deleted user's row came back). The lock is `flock` on `lock_file(folder)`, created when missing:
    a file, not the folder, since NFS (the shared volume replicas mount) takes an exclusive flock only on a file opened
    for writing; flock reaches every process on one machine, and every machine of a local-lock-free NFSv4 mount.
    Where the folder's parent cannot be written (`folder` itself a read-only or separate mount point), the folder's
    own descriptor is locked instead, which orders the processes of one machine: the flock `writing_artifact` takes,
    so this thread's `writing_artifact` into the folder inside the block (a first start's bootstrap) goes on under it
    (not refused, ArtifactBusy), and another process's is refused. Only where the lock
    file is not there: one this process cannot open for writing (another uid's, mode 0640) is locked opened read-only
    (a local volume's flock takes it so), and one it cannot open at all is an OSError naming it, since the processes
    that opened it take turns on it (locking the folder instead would let a replica of another uid rewrite it while
    the others held their lock). Raises OSError naming the lock file when it cannot be opened nor
    the folder's own lock taken. The folder may be missing (a first start bootstraps it under the lock)."""
    path, own = lock_file(folder), None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM) or not Path(folder).is_dir():
            raise OSError(exc.errno, f"cannot open the lock file of {folder}: {exc.strerror}", str(path)) from None
        if os.path.lexists(path):  # others take turns on it: locking anything else would let both rewrite at once
            fd = _open_lock_read_only(path, folder, exc)
        else:
            fd, own = os.open(folder, os.O_RDONLY), os.path.realpath(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if own is not None:  # `writing_artifact` into the folder meanwhile (a bootstrap's save) is this thread's to make
            _by_descriptor.held = getattr(_by_descriptor, "held", frozenset()) | {own}
        yield
    finally:
        if own is not None:
            _by_descriptor.held = getattr(_by_descriptor, "held", frozenset()) - {own}
        os.close(fd)  # and with it the lock


def promote_into(source: str | os.PathLike, folder: str | os.PathLike, *, description: str = "meta.json",
                 check: Callable[[Path], None] | None = None, replaces: Collection[str] = (),
                 recorded: Callable[[Path], dict[str, str]] | None = None) -> list[str]:
    """Put the artifact at `source` (a folder of plain files, `description` among them) in place of the one in `folder`,
    a folder other processes read and rewrite under `folder_lock` (replicas sharing PLURALIGN_PAL_DIR), as one turn under
    that lock: each file copied beside its target under a hidden temp name (".<name>.<random>", which readers pass
    over) and fsynced, `check(folder)` (which raises to refuse: a compare-and-swap), then the copies renamed over their
    targets, `description` last, and the files `source` lacks removed (an earlier model's of another kind). Promotions
    into one folder at once take turns, so it ends holding one of them whole, never a mix; a reader under the lock
    sees the one before or this one; one killed part way leaves a mix whose description's digests do not match
    (`check_digests`), which a reader refuses, until the next promotion. `replaces`: the names, besides `source`'s,
    that `folder` may hold (the files of any artifact of the kinds promoted there): a folder holding another plain file
    is no such artifact's (a mistyped folder, a data folder) and nothing is done (its files are not removed). `recorded(copy of the description)`: the digests it records (`file_digests`), against which
    each copy is checked before anything is renamed: a source rewritten while it was copied (a DELETE rewriting a job's
    artifact, its per-user file then its description, under no lock of this folder) is refused, FilesDiffer naming
    the file, nothing changed (the mix is not put in place: no reader loads it).
    Returns the names put in place. Raises ValueError naming `source` when it holds no `description` or anything but
    plain files, naming `folder` and the file when it holds one `replaces` does not name, and what `check` raises."""
    source, folder = Path(source), Path(folder)
    names = sorted(p.name for p in source.iterdir() if not p.name.startswith(".")) if source.is_dir() else []
    if description not in names:
        raise ValueError(f"{source}: no {description}: not an artifact folder")
    if any(not (source / name).is_file() or (source / name).is_symlink() for name in names):
        raise ValueError(f"{source}: holds something other than plain files: not an artifact folder")
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        _refuse_foreign_files(folder, {*names, *replaces})
        copies: dict[str, Path] = {}
        try:
            for name in names:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
                copies[name] = Path(tmp)
                with writing_to(folder / name), os.fdopen(fd, "wb") as out, open(source / name, "rb") as src:
                    shutil.copyfileobj(src, out)
                    out.flush()
                    os.fsync(out.fileno())
            if recorded is not None:
                _check_copies(source, copies, recorded(copies[description]), description)
            if check is not None:
                check(folder)
            for name in [n for n in names if n != description] + [description]:
                os.replace(copies.pop(name), folder / name)
        finally:
            for tmp in copies.values():
                tmp.unlink(missing_ok=True)
        for path in folder.iterdir():
            if not path.name.startswith(".") and path.name not in names and path.is_file():
                path.unlink()
        fsync_dir(folder)
    return names


def _refuse_foreign_files(folder: Path, allowed: Collection[str]) -> None:
    """`promote_into`'s refusal of a folder holding a plain file not `allowed` (ValueError naming it)."""
    foreign = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and p.name not in allowed)
    if foreign:
        raise ValueError(f"{folder}: holds {foreign[0]}, which is no part of a model this promotion replaces (it holds "
                         f"{', '.join(sorted(allowed))}): not the folder of one; nothing was changed")


def _check_copies(source: Path, copies: dict[str, Path], digests: dict[str, str], description: str) -> None:
    """`promote_into`'s check of each copy against the `digests` its copied `description` records: FilesDiffer naming
    the source file that changed while it was copied."""
    for name, digest in sorted(digests.items()):
        if name not in copies or _sha256(copies[name]) != digest:
            raise FilesDiffer(f"{source / name}: changed while it was copied (not the file the {description} copied with "
                              "it records: a DELETE rewriting the artifact meanwhile?); nothing was changed, promote it again")


def _open_lock_read_only(path: Path, folder: str | os.PathLike, refused: OSError) -> int:
    """`folder_lock`'s lock file `path`, there already but refused for writing (`refused`), opened read-only; an OSError
    naming it, its owner and mode, and this process's uid when that is refused too."""
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        st = os.stat(path)
        raise OSError(refused.errno, f"cannot open the lock file of {folder}, by which the processes rewriting it take "
                      f"turns ({refused.strerror}: it is uid {st.st_uid}'s, gid {st.st_gid}, mode {st.st_mode & 0o777:04o}; "
                      f"this process runs as uid {os.geteuid()}): locking anything else would let two of them rewrite it at "
                      "once; make it readable and writable by every uid that runs pluralign on this folder (chmod 0666, or "
                      "one group and 0660), or run them as one uid", str(path)) from None


# the folders this thread holds `folder_lock` on through their own descriptor (its fallback): the flock
# `writing_artifact` takes, which a second descriptor of this process could not take
_by_descriptor = threading.local()


def _holds_by_descriptor(folder: str | os.PathLike) -> bool:
    return os.path.realpath(folder) in getattr(_by_descriptor, "held", frozenset())


def _artifact_file(name: str, files: tuple[str, ...]) -> bool:
    """`name` is one of `files`, or `atomic_writer`'s temp file for one (".<file>.<random>"), which a
    killed write leaves behind."""
    return name in files or any(name.startswith(f".{file}.") for file in files)


def stopped_artifact(folder: str | os.PathLike, files: tuple[str, ...]) -> bool:
    """Whether `folder` holds what a stopped write of an artifact made of `files` left: some of its
    files or their temp files, but not its description `files[0]` (written last). False for a
    missing or empty folder, a whole artifact, and a folder holding anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir()]
    return bool(names) and files[0] not in names and all(_artifact_file(name, files) for name in names)


@contextmanager
def staged_folder(folder: str | os.PathLike, files: tuple[str, ...], what: str) -> Iterator[Path]:
    """Write an artifact folder whole or not at all: yields a new empty folder beside `folder`
    (hidden, ".<name>.<random>") to write the artifact into; on a clean exit its files are fsynced
    and it takes the place of `folder` by renames (`swap_folder`), on an error it is removed. A kill
    mid-write leaves `folder` as it was (and the hidden folder beside it); saves to one folder at
    once each write their own, and the last to finish is the artifact, whole. A write in the block
    that fails (a full disk) is an OSError naming `folder` (`writing_to`), not the hidden folder.

    `folder` is checked first (`check_artifact_folder`: NotADirectoryError, ValueError naming it)."""
    folder = check_artifact_folder(folder, files, what)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    shared = group_shared(folder.parent)
    try:
        with writing_to(folder):
            yield staged
        if shared:  # mkdtemp's 0700, safetensors' 0600 would hide the artifact from the folder's group (vLLM reading adapters)
            for path in [staged, *staged.rglob("*")]:
                os.chmod(path, 0o2750 if path.is_dir() else 0o640)
        _fsync_tree(staged)
        swap_folder(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO)  # the copy's side, not the source's


def copy_into_place(source: str | os.PathLike, folder: str | os.PathLike, staged: str | os.PathLike) -> None:
    """Copy the artifact folder `source` to `folder` whole or not at all, to put an artifact into
    service: into `staged`, a hidden folder beside `folder` (what a copy killed part way left there
    is removed first), each file fsynced, then in place of `folder` by renames (`swap_folder`). A copy
    that fails removes `staged` and leaves `folder` as it was; a full disk (or a read-only one) is an
    OSError naming the file of `folder` that could not be written, not shutil's list of pairs."""
    source, folder, staged = Path(source), Path(folder), Path(staged)
    shutil.rmtree(staged, ignore_errors=True)
    try:
        staged.mkdir(parents=True)
        shared = group_shared(staged)  # (setgid from a shared parent) the copies readable by its group: the source's may be 0600
        if shared:
            os.chmod(staged, 0o2750)
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_dir():
                (staged / relative).mkdir(mode=0o2750 if shared else 0o777)
                continue
            try:
                shutil.copy2(path, staged / relative)
                if shared:
                    os.chmod(staged / relative, 0o640)
            except OSError as exc:
                if exc.errno not in _NO_ROOM:
                    raise
                raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(folder / relative)) from None
        _fsync_tree(staged)
        swap_folder(staged, folder)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def swap_folder(staged: Path, folder: Path) -> None:
    """Put the fully written `staged` folder in place of `folder` with renames, so a reader sees the
    old artifact or the new one, never half of one. The old one is renamed aside (".<name>.retired<random>")
    and removed once the new one is in place; if another writer puts its folder in place between the two
    renames, that one is renamed aside too: the last swap wins, whole. Anything else that stops the
    swap between the renames (a failed rename, Ctrl-C, SIGTERM raised as an exception) puts the old
    one back first: `folder` is never left empty."""
    staged, folder = Path(staged), Path(folder)
    for _ in range(100):
        retired = folder.with_name(f".{folder.name}.retired{uuid.uuid4().hex[:12]}")
        try:
            with contextlib.suppress(FileNotFoundError):
                folder.rename(retired)
            staged.rename(folder)
        except BaseException as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                shutil.rmtree(retired, ignore_errors=True)  # superseded by the folder another swap put there
                continue  # another swap put its folder there meanwhile: retire that one too
            if retired.exists() and not folder.exists():
                with contextlib.suppress(OSError):  # (another swap's folder got there first: it is the artifact)
                    retired.rename(folder)  # as it was
            raise
        finally:
            if retired.exists() and folder.exists():  # the new one is in place (or the old one back)
                shutil.rmtree(retired, ignore_errors=True)
        fsync_dir(folder.parent)
        return
    raise OSError(errno.EBUSY, "other writers kept replacing this folder", str(folder))


def later_schema(found: object, reads: int) -> bool:
    """Whether `found` (a description's `schema_version`, as decoded) is a schema later than `reads`: a later release's."""
    return isinstance(found, int) and not isinstance(found, bool) and found > reads


def other_schema(what: str, found: object, reads: int) -> str:
    """Why an artifact file of schema `found` is refused by code that reads schema `reads`, in words an
    operator can act on: a later release's (run it), an earlier format's (retrain), or no version at all."""
    if later_schema(found, reads):
        return (f"{what} schema {found}, written by a later pluralign release (this one reads schema {reads}): "
                "run that release, or retrain with this one")
    if isinstance(found, int) and not isinstance(found, bool):
        return f"{what} schema {found}, an earlier format this release does not read (it reads schema {reads}): retrain with this release"
    return f"{what} schema_version {found!r} is not a schema version (this release reads schema {reads})"


PAL_CHECKPOINT = "PAL checkpoint"  # the kind of a description that names none: a PAL checkpoint's came before kinds


def read_description(folder: Path, kind: str, schema: int, struct: type[T], what: str, *,
                     description: str = "an artifact description") -> T:
    """The meta.json of an artifact folder whose description names its `kind` (an EM mixture, a MaxMin
    policy; PAL_CHECKPOINT: a PAL checkpoint's, which names none), as `struct`, read before any weights. `what`
    names the artifact in messages ("a MaxMin policy (maxmin-lora)"), `description` what a file that is not JSON
    (or not an object) is said not to be. Raises FileNotFoundError when there is none, ValueError naming the
    file or folder for another kind of artifact (a PAL checkpoint, whose description names no kind, is named
    so), another schema (`other_schema`: a later release's says so), or a file that is not such a description."""
    path = folder / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not {what}: no meta.json")
    raw = _description_object(path, description)
    found = raw.get("kind", PAL_CHECKPOINT if "variant" in raw else None)
    # read as a PAL checkpoint, a description without a kind is one (a missing variant is named below, as a field)
    if found != kind and not (kind == PAL_CHECKPOINT and "kind" not in raw):
        raise ValueError(f"{folder} holds {'a ' + repr(found) if found else 'no'} artifact, not {what}")
    if raw.get("schema_version") != schema:
        raise ValueError(f"{path}: {other_schema(kind, raw.get('schema_version'), schema)}")
    try:
        return msgspec.convert(raw, struct)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: not a description of {what}: {said(str(exc))}") from None


def write_description(folder: str | os.PathLike, description: object) -> None:
    """Write an artifact's description (a msgspec Struct: `PALMeta`, `EMMeta`) as `folder`/meta.json, indented
    JSON, whole (`write_atomic`); `read_description` reads it back. Raises OSError when it cannot be written."""
    write_atomic(Path(folder) / "meta.json", msgspec.json.format(msgspec.json.encode(description)))


def _description_object(path: Path, description: str = "an artifact description") -> dict:
    """The JSON object an artifact description at `path` holds, every field as the file has it. Raises OSError naming
    the file, ValueError naming it as not `description` when it is not JSON or not a JSON object."""
    try:
        raw = msgspec.json.decode(path.read_bytes())
    except DECODE_ERRORS as exc:
        raise ValueError(f"{path}: not {description}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not {description}: expected a JSON object")
    return raw


def rewrite_description(folder: str | os.PathLike, changes: dict[str, object], description: str = "meta.json") -> None:
    """Rewrite the artifact description (`folder`/`description`, a JSON object) with the fields `changes` gives set,
    whole (`write_atomic`), every other field kept as the file has it, in its order: a field a later release added
    (which this release's struct skips on reading) stays for that release, where re-encoding the struct read dropped
    it. A `files` change of {} (no digests: a model written by an earlier release) is not added to a description
    without `files`: a release before digests refuses the field (its struct forbade unknown fields), so a DELETE of
    this release during a rolling upgrade would leave an older-form meta.json that the older replicas could no longer
    read (their starts and DELETEs failing). Raises OSError naming the file, ValueError when it is
    not a JSON object."""
    path = Path(folder) / description
    raw = _description_object(path)
    for name, value in changes.items():
        if name == "files" and value == {} and name not in raw:
            continue
        raw[name] = value
    write_atomic(path, msgspec.json.format(msgspec.json.encode(raw)))


def drop_description_fields(folder: str | os.PathLike, names: Collection[str], description: str = "meta.json") -> list[str]:
    """Rewrite the artifact description (`folder`/`description`, a JSON object) without the fields `names`, whole
    (`write_atomic`), the others as they are; nothing written when it holds none of them. Returns the fields removed.
    For an older release that refuses them (`pluralign promote --older-form`). Raises OSError naming the file,
    ValueError when it is not a JSON object. For the caller holding the folder's lock (`folder_lock`)."""
    path = Path(folder) / description
    raw = _description_object(path)
    dropped = [name for name in names if name in raw]
    if dropped:
        write_atomic(path, msgspec.json.format(msgspec.json.encode({k: v for k, v in raw.items() if k not in dropped})))
    return dropped


def undo_stopped_swap(folder: str | os.PathLike) -> Path | None:
    """Put back what `swap_folder` killed between its two renames (SIGKILL, a power loss) left: `folder`
    missing and the artifact it held beside it as ".<name>.retired<random>", whole. The newest such
    folder is renamed back to `folder` (as `swap_folder` does on an exception) and returned; None when
    `folder` is there or nothing was left. The new artifact's staged folder is left to whoever wrote it."""
    folder = Path(folder)
    if folder.exists() or not folder.parent.is_dir():
        return None
    retired = [p for p in folder.parent.glob(f".{glob.escape(folder.name)}.retired*") if p.is_dir()]
    if not retired:
        return None
    newest = max(retired, key=lambda p: p.stat().st_ctime)  # a rename sets the ctime
    newest.rename(folder)
    fsync_dir(folder.parent)
    return newest


def _fsync_tree(folder: Path) -> None:
    """Each file under `folder` and the folders themselves on disk, before a rename publishes them."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in [*sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fsync_dir(path)


def fsync_dir(folder: Path) -> None:
    """A folder's entries (a new or renamed file's name) on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def left_as_found(*folders: str | os.PathLike, keep: Collection[str | os.PathLike] = (),
                  unless: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Undo what the block created in `folders` if it raises: an entry at a folder's top level that
    was not there before is removed (a whole subtree), and a folder that did not exist is removed
    with everything in it. What was there before is left alone (a file changed inside an old entry
    stays changed). For a start-up that fails part way: a service that cannot start leaves its data
    folder as it found it, not with empty tables and logs beside a damaged file.

    `keep`: paths of top-level entries that other processes write into these folders by design, under
    their own locks, while the block runs (the key file `pluralign keys create` writes while a service
    starts): a new one is left, and so is a folder that did not exist and holds one; a kept folder
    that is empty (the block's own mkdir) is removed. `unless`: exceptions that leave the folders as they are (what is
    new there is another process's: a store that replicas share, found only part way)."""
    paths = [Path(f).absolute() for f in folders]
    kept = {Path(k).absolute() for k in keep}
    before = {path: (set(os.listdir(path)) if path.is_dir() else None) for path in paths}
    try:
        yield
    except unless:
        raise
    except BaseException:
        for path, names in before.items():
            if path.is_dir():
                _remove_new_entries(path, names or set(), kept)
                if names is None:  # made by the block: gone unless it holds what another process wrote
                    with contextlib.suppress(OSError):
                        path.rmdir()
        raise


def _remove_new_entries(folder: Path, names: set[str], kept: set[Path]) -> None:
    for name in set(os.listdir(folder)) - names:
        entry = folder / name
        if entry in kept and not (entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir())):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


class NoHomeFolder(ValueError):
    """The account has no home folder for a default under it: HOME unset and its uid without a passwd entry
    (OpenShift's arbitrary uid, a bare `env -i`). The message says so; the caller names its variable."""


def home_folder() -> Path:
    """This account's home folder (HOME, else its passwd entry); NoHomeFolder when it has neither (Python's
    own RuntimeError, which a command would show as a traceback)."""
    try:
        return Path.home()
    except RuntimeError:
        raise NoHomeFolder(f"this account has no home folder (HOME is unset and uid {os.getuid()} has no passwd entry)") from None


def group_shared(folder: str | Path) -> bool:
    """Whether `folder` is shared with its group: setgid, as Kubernetes makes a volume mounted with an
    `fsGroup` (and `chmod g+s` marks a folder other accounts of a group read). A missing folder is not."""
    import stat

    try:
        return bool(os.stat(folder).st_mode & stat.S_ISGID)
    except OSError:
        return False


def keep_private(folder: str | Path) -> None:
    """`folder` readable by this account only (0700), or by its group too when it is `group_shared`
    (the others' bits cleared, the group's kept). A folder another account owns (the root of a volume
    Kubernetes mounted with an `fsGroup`) is left as it is: only its owner may change its mode."""
    import stat

    mode = os.stat(folder)
    if mode.st_uid != os.geteuid():
        return
    os.chmod(folder, stat.S_IMODE(mode.st_mode) & ~0o007 if mode.st_mode & stat.S_ISGID else 0o700)


def may_hold(forget: Callable[[str], bool], data: bytes | str | os.PathLike) -> bool:
    """Whether a file of users' rows may hold a row of a user `forget` picks, judged from its bytes alone:
    False only when `forget` says how the names it picks may be spelt in a file (a `may_name(bytes) -> bool`
    method, as a DELETE's `pluralign.store.deletions.Forget` has) and `data` (the file's bytes, or its path,
    then read) holds none of them; True otherwise (a plain callable: every row must be decoded and asked).
    A DELETE of a user outside a 100,000-user file then reads its bytes and decodes no row. Raises OSError
    when the path cannot be read."""
    may_name = getattr(forget, "may_name", None)
    if may_name is None:
        return True
    return may_name(data if isinstance(data, bytes) else Path(data).read_bytes())
