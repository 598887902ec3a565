"""`pluralign promote`: serve a pal or em job's artifact from PLURALIGN_PAL_DIR, which replicas share.

    pluralign promote data/jobs/artifacts/<job id>
    pluralign promote ARTIFACT --pal-dir /var/lib/pluralign/shared/pal --if-version 1eaeee231c2a4ef4

Copies the artifact into the folder as one turn under its lock (`.pal.lock`, the one replicas' DELETEs and take-ups
hold), each file beside its target under a hidden name, then renamed over it, meta.json last; files the artifact
lacks (an earlier model's of the other kind) are removed (`pluralign.files.promote_into`); a folder holding any
other file (a data folder named by mistake) is refused, exit 2, nothing changed, and so is an artifact rewritten
while it was copied (a DELETE of one of its training users: each copy is checked against the copied meta.json), and an artifact of
another encoder than the model there (which no replica would take up, nor start on). Two promotions at once take
turns, and the folder ends holding one of them whole. Each replica serves it within two passes of
PLURALIGN_DELETION_SWEEP_S (`service.pal_dir`). `--if-version V`: promote only while the folder holds the model V
names (`/health`'s `pal.digest`, the same whatever the release; or its `pal.version`, this release's, a later
release's or an earlier one's; `none` for an empty folder), a compare-and-swap: nothing changed when another
promotion came first (exit 2, as every refusal). Prints one JSON line: the folder, the artifact's kind, its population
version, its digest and files.
The folder is PLURALIGN_PAL_DIR (or PLURALIGN_CONFIG's pal_dir; default <data dir>/pal) unless --pal-dir is given.

    pluralign promote --older-form [--pal-dir /var/lib/pluralign/shared/pal]

rewrites the model the folder holds, in place, under the same lock, in the form releases before replicas50
read: its meta.json without the sha256 of its other files (`files`), which those releases refuse (their starts and
their DELETEs of its training users fail). For a rollback to such a release, or a rolling update from one after a
promotion: run it before an older replica starts, or while older replicas run. This release serves the model all the
same, unchecked; the next promotion records the digests again. Prints one JSON line: the folder and its version (unchanged).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pluralign.files import DECODE_ERRORS
from training.common import check_given, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("promote", help="serve a pal or em job's artifact from PLURALIGN_PAL_DIR (replicas take it up)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", nargs="?", default=None,
                        help="the artifact folder (a PAL checkpoint or an EM mixture: a pal or em job's artifact)")
    parser.add_argument("--pal-dir", default=None, help="the folder served (default PLURALIGN_PAL_DIR, else <data dir>/pal)")
    parser.add_argument("--if-version", default=None, help="promote only while the folder holds this model "
                        "(/health's pal.digest or pal.version; `none`: no model there)")
    parser.add_argument("--older-form", action="store_true",
                        help="no artifact: rewrite the folder's model in the form releases before replicas50 read "
                        "(meta.json without `files`), for a rollback to one")
    parser.set_defaults(func=run)


def recorded_digests(description: Path) -> dict[str, str]:
    """The sha256 of each file a PAL checkpoint's or EM mixture's meta.json records (`files`; none in a model
    written by a release before replicas50), so a copy of an artifact rewritten meanwhile is refused (`pluralign.files.promote_into`)."""
    import msgspec

    meta = msgspec.json.decode(description.read_bytes())
    files = meta.get("files") if isinstance(meta, dict) else None
    return files if isinstance(files, dict) else {}


def described_encoder(folder: Path) -> str | None:
    """The encoder id the meta.json at `folder` records (a PAL checkpoint's or an EM mixture's); None without one."""
    import msgspec

    try:
        meta = msgspec.json.decode((folder / "meta.json").read_bytes())
    except (OSError, *DECODE_ERRORS):
        return None
    return meta.get("encoder_id") if isinstance(meta, dict) and isinstance(meta.get("encoder_id"), str) else None


def check_paths_given(args: argparse.Namespace) -> None:
    """An empty ARTIFACT or --pal-dir (`"$ARTIFACT"` with the variable unset) is a ValueError naming it: as Path("") it
    would be the folder the command ran in, whose model would be promoted, or promoted over."""
    if args.artifact is not None and not args.artifact.strip():
        raise ValueError(f"ARTIFACT {args.artifact!r}: empty; give the artifact folder (<data dir>/jobs/artifacts/<job id>)")
    check_given("--pal-dir", args.pal_dir, "the folder served (PLURALIGN_PAL_DIR's)")


def run(args: argparse.Namespace) -> int:
    from pluralign.files import promote_into
    from pluralign.reward.em import EM_FILES, EMMixture
    from pluralign.reward.pal import load_pal
    from pluralign.reward.pal_checkpoint import PAL_FILES
    from pluralign.reward.training_users import artifact_kind
    from service.rewards import checkpoint_version, model_digest

    check_paths_given(args)
    folder, option = served_folder(args)
    if args.older_form:
        return older_form(args, folder, option)
    if args.artifact is None:
        raise ValueError("give the artifact folder to promote (or --older-form)")
    artifact = Path(args.artifact)
    if not artifact.is_dir():
        raise ValueError(f"{artifact}: {'not a folder' if artifact.exists() else 'no such folder'} (a pal or em job's artifact is <data dir>/jobs/artifacts/<job id>, "
                         "the job's `artifact` in GET /admin/jobs/{id})")
    kind = artifact_kind(artifact)
    if kind is None:
        raise ValueError(f"{artifact}: not a PAL checkpoint or an EM mixture (a pal or em job's artifact): no meta.json "
                         "describing one")
    if kind == "pal":  # whole and readable (its digests included) before anything is copied
        load_pal(artifact, device="cpu")
    else:
        from pluralign.files import read_description
        from pluralign.reward.em import SCHEMA_VERSION, EMMeta

        meta = read_description(artifact, "em-bt-mixture", SCHEMA_VERSION, EMMeta, "an EM mixture artifact (em-bt-mixture)")
        EMMixture.load(artifact, meta.encoder_id, device="cpu")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder}: a file, not a folder")

    def may_replace(served: Path) -> None:
        """Under the folder's lock, before anything is renamed: a model of another encoder (which every replica would
        refuse to take up, and to start on) and --if-version."""
        theirs, ours = described_encoder(served), described_encoder(artifact)
        if theirs is not None and theirs != ours:
            raise ValueError(f"{option} {folder} holds a model of encoder {theirs!r}, the one the replicas serving it embed "
                             f"with; {artifact} was trained on {ours!r}: no replica would take it up, nor start on it; "
                             "retrain it on their encoder (nothing was changed)")
        if args.if_version is None or args.if_version in held_versions(served):
            return
        held = served / "meta.json"
        found = f"population version {checkpoint_version(served)}" if held.is_file() else "population version none"
        digest = f", digest {model_digest(served)}" if held.is_file() else ""
        raise ValueError(f"{option} {folder} holds {found}, not {args.if_version} (--if-version{digest}): "
                         "another promotion came first; nothing was changed")

    try:
        names = promote_into(artifact, folder, check=may_replace, replaces=(*PAL_FILES, *EM_FILES), recorded=recorded_digests)
    except ValueError as exc:
        if not str(exc).startswith(f"{folder}: holds "):
            raise
        raise ValueError(f"{option} {exc} (a data folder, or another than the one the replicas serve?)") from None
    # the artifact's: the folder holds its files now, unless a promotion that took the next turn replaced them (read off
    # the folder, it would be that one's: `--if-version` with it would swap out a model unseen)
    print_json({"pal_dir": str(folder), "kind": kind, "version": checkpoint_version(artifact),
                "digest": model_digest(artifact), "files": names})
    return 0


def held_versions(folder: Path) -> set[str]:
    """What `--if-version` takes for the model at `folder`: its digest (`service.rewards.model_digest`, /health's
    `pal.digest`, the same whatever the release) and its population version as any release gives it
    (`service.rewards.checkpoint_versions`: /health's `pal.version` of this release, of a later one that knows a
    meta.json field this one skips, and of an earlier one); {"none"} when it holds no model (no meta.json). Every
    release's, so a version read off another release's /health is taken."""
    from service.rewards import checkpoint_versions, model_digest

    if not (folder / "meta.json").is_file():
        return {"none"}
    digest = model_digest(folder)
    return checkpoint_versions(folder) | ({digest} if digest else set())


def served_folder(args: argparse.Namespace) -> tuple[Path, str]:
    """The folder promoted into, and the option or setting that names it (for messages)."""
    if args.pal_dir is not None:
        return Path(args.pal_dir), "--pal-dir"
    from service.settings import Settings

    return Settings.load().pal_path, "PLURALIGN_PAL_DIR (setting pal_dir)"


def older_form(args: argparse.Namespace, folder: Path, option: str) -> int:
    """`--older-form`: the model at `folder` (a PAL checkpoint or an EM mixture) rewritten under its lock with a
    meta.json that releases before replicas50 read (`pluralign.files.drop_description_fields`). ValueError for an
    artifact or --if-version given with it, and naming the option and the folder where it holds no such model."""
    from pluralign.files import drop_description_fields, folder_lock
    from pluralign.reward.training_users import artifact_kind
    from service.rewards import checkpoint_version

    if args.artifact is not None or args.if_version is not None:
        raise ValueError("--older-form rewrites the model the folder holds: give no artifact and no --if-version")
    if artifact_kind(folder) is None:
        raise ValueError(f"{option} {folder}: holds no PAL checkpoint or EM mixture (no meta.json describing one)")
    with folder_lock(folder):
        refuse_a_mix(folder, option)
        dropped = drop_description_fields(folder, ("files",))
        version = checkpoint_version(folder)
    print_json({"pal_dir": str(folder), "version": version, "older_form": True, "dropped": dropped})
    return 0


def refuse_a_mix(folder: Path, option: str) -> None:
    """ValueError naming the option, the folder and the file, where a file of the model at `folder` is not the one its
    meta.json records (`pluralign.files.check_digests`: a copy under way, two copies mixed): the digests `--older-form`
    drops are what keeps every replica from serving it (dropped unchecked, the mix would be served). A per-user file a DELETE rewrote after meta.json (an older release's, in a rolling update; one of this
    release killed part way) passes, as a start takes it up (`pluralign.files.rewritten_after_description`). For the
    caller holding the folder's lock."""
    import msgspec

    from pluralign.files import FilesDiffer, check_digests, rewritten_after_description
    from pluralign.reward.em import USERS_FILE
    from pluralign.reward.pal_checkpoint import USER_WEIGHTS_FILE
    from pluralign.reward.training_users import artifact_kind

    digests = msgspec.json.decode((folder / "meta.json").read_bytes()).get("files") or {}
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ValueError(f"{option} {folder}: meta.json's `files` is not an object of sha256 digests (a damaged file)")
    per_user = USERS_FILE if artifact_kind(folder) == "em" else USER_WEIGHTS_FILE
    try:
        check_digests(folder, digests)
    except FilesDiffer as exc:
        if not rewritten_after_description(folder, digests, per_user):
            raise ValueError(f"{option} {folder}: {exc}. --older-form would drop the digests that keep replicas from "
                             "serving it: let the copy end, or promote the model to serve (`pluralign promote`), then "
                             "run --older-form again") from None
