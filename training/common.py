"""Pieces the commands share: logging set-up, the cached default encoder, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import logging
import math
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from pluralign.data.shared import shared_data_dir
from pluralign.files import DECODE_ERRORS

# the commands' --data-dir: PLURALIGN_SHARED_DATA, else ../shared/data beside the checkout (not the working folder)
DEFAULT_DATA_DIR = str(shared_data_dir(os.environ.get("PLURALIGN_SHARED_DATA")))


# help strings of options several commands share
SEED_HELP = "random seed (splits, initialization, batch order): the same seed and inputs give the same run (default %(default)s)"
DATA_DIR_HELP = ("the shared data folder holding ukp_convarg1/ and anthropic_persona/ (default: PLURALIGN_SHARED_DATA, "
                 "else ../shared/data beside the checkout: %(default)s)")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def check_given(option: str, value: str | None, what: str) -> None:
    """An optional path `option` given empty (`--pal "$PAL"` with PAL unset) is a ValueError naming it, as an empty --out
    is: read as the option not given, the command ran without it and said nothing. `what`: what to give instead."""
    if value is not None and not value.strip():
        raise ValueError(f"{option} {value!r}: empty; give {what}, or leave {option} out")


def check_cache(value: str | None) -> None:
    """An empty `--cache` is refused (`check_given`), not read as no --cache (the default cache used without a
    word)."""
    check_given("--cache", value, "the embedding cache's file")


def cache_path(value: str | None = None) -> Path:
    """The embedding cache file `--cache` names (None: the default, `default_cache_path`); raises as `check_cache`."""
    from pluralign.embed.cache import default_cache_path

    check_cache(value)
    return Path(value) if value is not None else default_cache_path()


def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="minilm", help="minilm (default), minilm-onnx, minilm-onnx-int8 or smollm2")
    parser.add_argument("--cache", default=None, help="embedding cache file (default ~/.cache/pluralign)")


def check_encoder(args: argparse.Namespace) -> None:
    """`--encoder` names an encoder `make_encoder` knows: a ValueError naming the option (`--encoder minilm-onx:
    unknown encoder ...`, as serve-embeddings says it) at once, before a command reads its data or imports torch
    (seconds); `cached_encoder` would find it only then. An empty `--cache` too (`check_cache`)."""
    from pluralign.embed.named import encoder_identity

    try:
        encoder_identity(args.encoder)
    except ValueError as exc:
        raise ValueError(f"--encoder {args.encoder}: {exc}") from None
    check_cache(args.cache)


def cached_encoder(args: argparse.Namespace):
    """`--encoder` behind the embedding cache `--cache`. The encoder loads at the first text missing from
    the cache (`LazyEncoder`): a rerun on cached texts loads no weights. An unknown --encoder is a
    ValueError at once (`make_encoder`'s words)."""
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.named import LazyEncoder

    encoder = LazyEncoder(args.encoder)
    path = cache_path(args.cache)
    try:  # a wrong --cache costs nothing
        cache = EmbeddingCache(path)
    except (ValueError, OSError) as exc:
        where = "--cache" if args.cache else "the embedding cache (PLURALIGN_CACHE_DIR)"
        problem = f"{path}: {exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and not args.cache:  # no writable HOME (a container): say where else it can go
            problem += "; set PLURALIGN_CACHE_DIR (or --cache) to a folder this account can write"
        raise ValueError(f"{where} {problem}") from None
    return CachedEncoder(encoder, cache)


class AtLeastOne(argparse.Action):
    """argparse action for `type=int` options (one value or several): each must be >= 1.

    A non-integer is still argparse's own "invalid int value" error; 0 or less is a usage error
    naming the option."""

    def __call__(self, parser, namespace, values, option_string=None):
        for value in values if isinstance(values, list) else [values]:
            if value < 1:
                parser.error(f"argument {option_string}: expected an integer >= 1, got {value}")
        setattr(namespace, self.dest, values)


def check_out(out: str, files: tuple[str, ...], what: str, schema: int | None = None) -> None:
    """A trainer's --out, checked before it trains (`pluralign.files.check_artifact_folder`):
    a ValueError that names --out when the folder holds anything but an earlier artifact's files,
    an artifact a later release wrote (`schema`: the one this release writes, in the description
    `files[0]`, whose `schema_version` is compared: replaced, it would be lost to that release),
    or when nothing can be written there (`check_writable`)."""
    from pluralign.files import check_artifact_folder

    if not out.strip():  # `--out "$OUT"` with OUT unset: the working folder, as Path("") reads it
        raise ValueError(f"--out {out!r}: empty; give the folder to write the {what} to")
    try:
        check_artifact_folder(out, files, what)
    except (ValueError, NotADirectoryError) as exc:
        raise ValueError(f"--out {out}: {exc.strerror}" if isinstance(exc, OSError) else f"--out: {exc}") from None
    if schema is not None and (found := _later_schema(Path(out) / files[0], schema)) is not None:
        raise ValueError(f"--out {out}: holds a {what} of schema {found}, written by a later pluralign release (this one "
                         f"writes schema {schema}): training here would replace it with an older format; give another folder, "
                         "or train with that release")
    check_writable("--out", out)


def _later_schema(description: Path, schema: int) -> int | None:
    """The `schema_version` in the artifact description at `description` when it is later than `schema`; None when it
    is not (or there is no description: a damaged or stopped write is replaced, as before)."""
    import msgspec

    from pluralign.files import later_schema

    try:
        raw = msgspec.json.decode(description.read_bytes())
    except (OSError, *DECODE_ERRORS):
        return None
    found = raw.get("schema_version") if isinstance(raw, dict) else None
    return found if later_schema(found, schema) else None


def check_writable(option: str, path: str, *, file: bool = False) -> None:
    """Whether the file or folder `path` can be written, checked before the work that produces it:
    its nearest existing folder must take a new file (a probe file, removed at once). A ValueError
    naming `option` otherwise: a file where a folder is needed, no permission, a read-only place.
    `file`: `path` is a file, written beside itself and renamed over it, so a file there already is
    replaced (its folder is probed), not a folder missing."""
    import tempfile

    base = Path(path).absolute().parent if file else Path(path).absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{option} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".pluralign-write-check.")
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write in {base} ({exc.strerror or exc})") from None
    try:
        os.close(fd)
    finally:  # a SIGTERM or Ctrl-C (`training.cli`) meanwhile leaves no probe file
        os.unlink(probe)


def check_temp_dir() -> None:
    """A temporary folder this process can write (Python's: TMPDIR, TEMP or TMP, else /tmp, /var/tmp,
    /usr/tmp, the working folder): torch's import fails without one ("No usable temporary directory
    found"), and Lance writes there while it builds an index. A ValueError naming TMPDIR and the
    folders tried (a read-only root file system with nothing mounted at /tmp)."""
    import tempfile

    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        tried = [os.environ[v] for v in ("TMPDIR", "TEMP", "TMP") if os.environ.get(v)] + ["/tmp", "/var/tmp", "/usr/tmp", os.getcwd()]
        raise ValueError(f"TMPDIR{'' if os.environ.get('TMPDIR') else ' (unset)'}: no writable temporary folder "
                         f"({', '.join(tried)} cannot be written); set TMPDIR to a writable folder, or mount one at /tmp "
                         f"(Kubernetes: an emptyDir, as deploy/k8s/pluralign.yaml does)") from None


def check_base(name: str) -> None:
    """A LoRA trainer's --base: `smollm2` or a local transformers model folder (one holding config.json), checked
    before any work; a ValueError naming --base otherwise (any other name reached transformers' hub lookup, whose
    error named no option: "Repo id must use ...")."""
    if name != "smollm2" and not (Path(name) / "config.json").is_file():
        raise ValueError(f"--base must be `smollm2` or a transformers model folder, got {name}")


def check_writable_file(option: str, path: str, what: str = "the output") -> None:
    """`check_writable` for an output *file*: a folder at `path` is a ValueError naming `option`
    before the work (it would be found only when the file is written, after it), and so is an empty `path` (`--out "$OUT"`
    with OUT unset), which Path reads as the working folder."""
    if not path.strip():
        raise ValueError(f"{option} {path!r}: empty; give a file name for {what}")
    if Path(path).is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name for {what}")
    check_writable(option, path, file=True)


K_MAX = 12  # the trainers' --k-max by default


def persona_groups(args: argparse.Namespace, option: str, source: str | None, default: int) -> None:
    """`--groups` (the synthetic persona population's number of groups) is read only when the command's
    source `option` is `persona`: given with another (or none), a ValueError naming both, not a run made
    without it; unset, it becomes `default`."""
    if args.groups is not None and source != "persona":
        chosen = f"{option} {source} has users of its own" if source else "the data given has users of its own"
        raise ValueError(f"--groups {args.groups}: read only with {option} persona (the synthetic population's groups); {chosen}")
    if args.groups is None:
        args.groups = default


def k_search(k: list[int] | None, k_max: int | None, users: int):
    """The trainers' K search (`--k`, `--k-max`, None: K_MAX) on `users` training users, checked before
    training: a --k above the number of training users is a ValueError naming --k (pluralign.reward.
    model_selection.KSearch.for_users); an upward search stops at that number. --k-max beside --k, which
    it would not bound, is a ValueError naming both."""
    from pluralign.reward.model_selection import KSearch, TooManyComponents

    check_k_options(k, k_max)
    try:
        return KSearch(k_max=K_MAX if k_max is None else k_max, candidates=tuple(k or ())).for_users(users)
    except TooManyComponents as exc:
        raise ValueError(f"--k {' '.join(map(str, exc.ks))}: more than the {users} training users; "
                         f"K is at most the number of training users (each component is fitted from users' preferences)") from None


def check_k_options(k: list[int] | None, k_max: int | None) -> None:
    """--k-max beside --k, which it would not bound: a ValueError naming both. Called by the trainers
    before their imports (torch: seconds), and by `k_search`."""
    if k and k_max is not None:
        raise ValueError(f"--k-max {k_max}: read only without --k (it bounds the search over K = 1, 2, ...); "
                         f"--k {' '.join(map(str, k))} names the K to try: give one of them")


def check_mixture_options(args: argparse.Namespace) -> None:
    """What `train pal` and `train em` refuse before their imports (torch: seconds), in this order, each a ValueError
    naming the option: --protocol and --data at odds (`check_protocol_data`), --groups without --protocol persona
    (`persona_groups`; unset, 4), --k-max beside --k (`check_k_options`), an unknown --encoder or an empty --cache
    (`check_encoder`)."""
    check_protocol_data(args)
    persona_groups(args, "--protocol", args.protocol, 4)
    check_k_options(args.k, args.k_max)
    check_encoder(args)


def add_k_args(p: argparse.ArgumentParser, components: str) -> None:
    """A mixture trainer's --k and --k-max (`components`: what K counts, e.g. "prototypes"), read by
    `check_k_options` and `k_search`."""
    p.add_argument("--k", type=int, nargs="+", action=AtLeastOne, default=None,
                   help=f"{components}, at most the number of training users; several values: keep the smallest K within one standard error of the best held-out "
                        "log-likelihood; default: chosen the same way from K = 1, 2, ... (see --k-max)")
    p.add_argument("--k-max", type=int, action=AtLeastOne, default=None,
                   help="without --k: the largest K the search may try (default 12, never above the number of training users)")


def print_k_choice(name: str, k: list[int] | None, search, selection) -> None:
    """On stderr, when K was searched for (no --k, or several): `name`'s search and the K it kept
    (`pluralign.reward.model_selection`), then its table of held-out scores per K."""
    if not k or len(k) > 1:
        print(f"{name}: {search.describe()}; K = {selection.k_selected} selected ({selection.rule})", file=sys.stderr)
        for line in selection.table():
            print(line, file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class StoreFolder:
    """Where a `--store` option's tables are: `uri` (the LanceDB folder or object-store URI) and, for a
    local store, the service's data folder that holds it (None when the tables are not in `lancedb/`
    of one, or lie in an object store)."""

    uri: str
    data_dir: Path | None


def store_folder(option: str, value: str) -> StoreFolder:
    """`option VALUE` naming the service's store either way an operator has it at hand: its data folder
    (PLURALIGN_DATA_DIR, holding `lancedb/`), the `lancedb/` folder inside it, or an object-store URI
    (taken as the tables' URI, left to the store). Checked before anything is opened (opening a local
    folder creates it, and `Store` its tables): a ValueError naming the option, the path and both forms
    when neither holds a preferences table."""
    from pluralign.store.location import is_object_store

    if is_object_store(value):
        return StoreFolder(value, None)
    path = Path(value)
    if (path / "lancedb" / "preferences.lance").is_dir():
        return StoreFolder(str(path / "lancedb"), path)
    if (path / "preferences.lance").is_dir():
        return StoreFolder(str(path), path.parent if path.name == "lancedb" else None)
    problem = "no such folder" if not path.exists() else "not a folder" if not path.is_dir() else \
        f"neither {path / 'lancedb' / 'preferences.lance'} nor {path / 'preferences.lance'} is there"
    raise ValueError(f"{option} {value}: no pluralign store there ({problem}): give the service's data folder "
                     f"(PLURALIGN_DATA_DIR, which holds lancedb/) or the lancedb/ folder inside it")


def store_options(uri: str) -> dict[str, str]:
    """The Lance storage options every command opens the store at `uri` (its `--store`, or PLURALIGN_STORE_URI) with: the
    service's store settings (`PLURALIGN_STORE_ENDPOINT`, `_REGION`, `_ALLOW_HTTP`, the keys, `_TIMEOUT_S`, `_RETRIES`, or
    the PLURALIGN_CONFIG file's), as `pluralign serve` reaches its store (`Settings.storage_options_for`); empty for a
    folder. Every command reads them: a store opened with none would take Lance's defaults (AWS's endpoint), one opened
    with the variables alone would miss the request bounds and the file's."""
    from service.settings import Settings

    return Settings.load().storage_options_for(uri)


def no_store_there(option: str, value: str) -> str:
    """The words of a refused `option VALUE`, an object-store URI whose prefix holds no pluralign store (no `preferences`
    table): mistyped, or another store's settings."""
    return (f"{option} {value}: no pluralign store there (no `preferences` table): give the URI the service's "
            "PLURALIGN_STORE_URI names, with the PLURALIGN_STORE_* settings it reaches it by")


def check_store_there(option: str, value: str, uri: str) -> None:
    """`option VALUE` (its store's `uri`, `store_folder`'s) refused as a ValueError (`no_store_there`) where it is an
    object store holding no pluralign store, before anything opens it as a `Store`, which would make its tables there (a
    folder is checked by `store_folder`). Reached with `store_options(uri)` (`pluralign.store.location.reach`: a listing,
    one table's latest version, nothing written); a store that cannot be reached raises its StoreUnavailable (an
    OSError: the CLI's one line). Checked first because opening it as a `Store` at a mistyped prefix
    (`train adapter --store s3://bucket/typo`) would make the store's six tables there, then find no comparisons."""
    from pluralign.store.location import reach

    tables = reach(uri, store_options(uri))
    if tables is not None and "preferences" not in tables:
        raise ValueError(no_store_there(option, value))


def check_store_uri(option: str, uri: str) -> None:
    """`option URI`, an object store the command reaches with the `PLURALIGN_STORE_*` settings as the service does
    (`store_options`), that Lance would refuse in words naming no option: an `s3+ddb://` URI without its one `ddbTableName`
    (`pluralign.store.location.commit_table_problem`), or a plain-http `PLURALIGN_STORE_ENDPOINT` that object_store
    sends nothing to (`plain_http_endpoint`; before: Lance's `BadScheme`). A ValueError naming the option and what to
    set, as `service.settings` refuses a PLURALIGN_STORE_URI."""
    from pluralign.store.location import commit_table_problem, plain_http_endpoint
    from pluralign.urls import redacted

    if (problem := commit_table_problem(uri)) is not None:
        raise ValueError(f"{option} {redacted(uri)}: {problem}")
    endpoint = plain_http_endpoint(uri, store_options(uri))
    if endpoint is not None:
        raise ValueError(f"{option} {redacted(uri)}: PLURALIGN_STORE_ENDPOINT {redacted(endpoint)!r} is plain http, and the "
                         "object store sends no request to an http:// endpoint unless told it may: set "
                         "PLURALIGN_STORE_ALLOW_HTTP=true (a local S3-compatible server: MinIO, moto), or give the endpoint as https://")


def number(kind: type = int, minimum: float | None = None, above: float | None = None, below: float | None = None,
           maximum: float | None = None, hint: Callable[[str], str] | None = None):
    """An argparse `type=` for a number with bounds: `minimum` (>=), `above` (>), `below` (<), `maximum` (<=).

    A value out of bounds, or a float that is not finite (nan, inf), is argparse's usage error
    naming the option: "argument --epochs: expected an integer >= 1, got 0" (exit code 2), before
    anything runs; `hint(text)` is added to it (a time's: `pluralign.data.record.time_text_hint`). The job runner's
    params (`training.jobs.params`) have the same lower bounds."""
    noun = "an integer" if kind is int else "a number"

    def refuse(problem: str, text: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(problem + (hint(text) if hint is not None and len(text) <= 64 else ""))

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise refuse(f"expected {noun}, got {text!r}", text) from None
        if kind is float and not math.isfinite(value):
            raise refuse(f"expected a finite number, got {text!r}", text)
        for bound, fails, sign in ((minimum, lambda b: value < b, ">="), (above, lambda b: value <= b, ">"), (below, lambda b: value >= b, "<"),
                                   (maximum, lambda b: value > b, "<=")):
            if bound is not None and fails(bound):
                raise refuse(f"expected {noun} {sign} {bound:.15g}, got {text}", text)
        return value

    return parse


# the most torch CPU threads --threads takes on a machine of fewer logical CPUs: above most core counts, below where
# OpenMP fails to make them (16,384 on a 2-core box: "libgomp: Thread creation failed"; 100,000 was a segmentation
# fault, exit 139; 1024 ran there, 0.16 s for a 512x512 matmul)
MAX_THREADS = 1024


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """--threads: torch CPU threads, 0 (torch's default) to MAX_THREADS or the machine's logical CPUs, whichever is more
    (one thread a CPU is always taken: machines with more than 1024 exist, e.g. 1,920 on a Power10 E1080 with SMT8);
    more is argparse's usage error naming the option and the most (exit 2)."""
    most = max(MAX_THREADS, os.cpu_count() or 1)
    p.add_argument("--threads", type=number(int, minimum=0, maximum=most), default=0,
                   help=f"torch CPU threads, 0 to {most} (0: torch's default; 1 is fastest on a busy box)")


SEED_BOUND = 2**31  # a seed is below it: what a job's `seed` param takes (training.jobs.params.Seed), and every RNG seeded


def seed_number(text: str) -> int:
    """The argparse `type=` of every command's --seed: an integer 0 <= seed < 2**31, or argparse's usage
    error naming --seed (exit 2). Out of that range, numpy refused a negative seed after the data had
    loaded ("expected non-negative integer", naming nothing) and torch a huge one ("Overflow when
    unpacking long long"), while other commands trained on -1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < SEED_BOUND:
        raise argparse.ArgumentTypeError(f"expected an integer 0 <= seed < {SEED_BOUND}, got {text}")
    return value


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether `a` and `b` name one existing file (another spelling, a hard or symbolic link)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either not there (yet): not one file
        return False


def check_not_an_input(option: str, path: str, inputs: dict[str, str | os.PathLike | None], what: str = "the output") -> None:
    """An output file `path` that is one of the command's inputs (`inputs`: option -> file or folder, None
    when not given) is a ValueError naming both, before the work: written, it would replace what was read
    (`audit --data prefs.jsonl --out prefs.jsonl` replaced the preferences with the report)."""
    target = Path(path).resolve()
    for name, value in inputs.items():
        if not value:
            continue
        if same_file(path, value):
            raise ValueError(f"{option} {path}: is the file {name} reads ({value}); {what} would replace it: give another file name")
        if Path(value).is_dir() and target.is_relative_to(Path(value).resolve()):
            raise ValueError(f"{option} {path}: is inside the folder {name} reads ({value}); give a file name outside it")


def tenant_name(text: str) -> str:
    """An argparse `type=` for an option naming a tenant: the service's rule (`pluralign.data.record.tenant_problem`,
    what `pluralign keys create` and so the API keys take), or argparse's usage error naming the option (exit 2):
    "argument --tenant: 'a/b': a tenant name is 1-128 characters: ...". A tenant names folders (an adapter
    registry's `<tenant>/<user>/`): a `/` or `..` would write outside them."""
    from pluralign.data.record import tenant_problem
    from pluralign.data.text import shown

    problem = tenant_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{shown(text)}: {problem}")
    return text


def user_id(text: str) -> str:
    """An argparse `type=` for an option naming an end user: the HTTP API's user-id rule (`USER_ID`), or
    argparse's usage error naming the option (exit 2): "argument --user: '../x': a user id is 1-128 characters: ..."."""
    from pluralign.data.record import USER_ID, USER_ID_RULE
    from pluralign.data.text import shown

    if not USER_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shown(text)}: {USER_ID_RULE}")
    return text


def add_listen_args(parser: argparse.ArgumentParser, default_port: int, default_log_level: str = "info",
                    port_variable: str | None = None) -> None:
    """A server command's --host, --port and --log-level (uvicorn's levels); see `check_listen`. With
    `port_variable`, --port defaults to None: the command reads the port with `listen_port`."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    default = f"${port_variable} when set, else {default_port}" if port_variable else str(default_port)
    parser.add_argument("--port", type=number(int, minimum=0, below=65536), default=None if port_variable else default_port,
                        help=f"port, 0 to 65535 (default {default}; 0: any free port)")
    parser.add_argument("--log-level", default=default_log_level, choices=("critical", "error", "warning", "info", "debug", "trace"),
                        help=f"uvicorn log level (default {default_log_level})")


def listen_port(given: int | None, variable: str, default: int) -> tuple[int, str]:
    """The port a server command listens on and how to name it in an error: --port when `given`, else
    the environment variable `variable` (PORT, the convention of Cloud Run and Heroku, which the image
    and the Kubernetes manifest set, and which their liveness probes read), else `default`. Raises
    ValueError naming the variable when it is set to anything but an integer from 1 to 65535 (0, any free
    port, is --port 0 only: what reads the variable, a liveness probe, connects to that port)."""
    if given is not None:
        return given, f"--port {given}"
    text = os.environ.get(variable)
    if text is None:
        return default, f"--port {default} (the default)"
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
        from pluralign.data.text import shown

        # not 0 (any free port): the probes that read the variable would connect to port 0
        raise ValueError(f"{variable}={shown(text)}: the port to listen on must be an integer from 1 to 65535 "
                         f"(unset it, or give --port, for {default}; any free port is --port 0)")
    return int(text), f"{variable}={int(text)}"


def check_listen(host: str, port: int, port_named: str | None = None) -> None:
    """Bind `host`:`port` once, as uvicorn will, before the server loads anything: a host that does
    not resolve or an address taken by another process is a ValueError naming --host or the port as
    `port_named` says it was given (default `--port N`), not uvicorn's error after the models have
    loaded (a minute at a first start). Every address `host` resolves to is bound, as asyncio's `create_server` (which
    uvicorn serves with) binds them: `localhost` as 127.0.0.1 and ::1 on many machines, '' as every interface (0.0.0.0
    and ::), so another process on ::1 fails here, before the models load, not after. An address whose socket this
    kernel cannot make (IPv6 disabled: EAFNOSUPPORT) is skipped, as asyncio skips it, and does not refuse the start."""
    port_named = port_named or f"--port {port}"
    try:  # asyncio's reading of '': every interface
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        problem = _host_mistake(host) or f" ({getattr(exc, 'strerror', None) or exc})"
        raise ValueError(f"--host {host}: not an address this machine can listen on{problem}") from None
    made = 0
    with contextlib.ExitStack() as bound:  # held together: two of them on one port are what uvicorn will hold
        for family, kind, proto, _, address in dict.fromkeys(found):
            try:
                sock = bound.enter_context(socket.socket(family, kind, proto))
            except OSError:  # as asyncio's: a family this kernel lacks (IPv6 disabled) is skipped
                continue
            made += 1
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own socket
            if family == socket.AF_INET6:  # as asyncio's: `::` beside 0.0.0.0 takes IPv6 alone
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                at = host_port(address[0], port)
                if exc.errno == errno.EADDRINUSE:
                    raise ValueError(f"{port_named}: {at} is in use by another process; choose another port") from None
                raise ValueError(f"--host {host} {port_named}: cannot listen on {at} ({exc.strerror})") from None
        if not made:  # as asyncio's, which then fails at its bind
            raise ValueError(f"--host {host}: not an address this machine can listen on (no socket of its address family)")


def _host_mistake(host: str) -> str:
    """What a --host (or HOST) that does not resolve holds instead of a host, said as ": ..." with the options meant,
    or "": a URL (`http://127.0.0.1:8000`, copied from the README) or a host and a port (`127.0.0.1:8000`), which the
    resolver only says are no name ("Name or service not known")."""
    import re
    from urllib.parse import urlsplit

    if "://" in host:
        try:
            parts = urlsplit(host)
        except ValueError:  # "Invalid IPv6 URL" (`http://[::1`): a URL still, whose host cannot be told
            return ": a URL, where the host alone goes"
        try:
            port = parts.port
        except ValueError:  # a port that is no number: the host alone is said
            port = None
        name = parts.hostname
        return f": a URL, where the host alone goes (--host {name}{f' --port {port}' if port else ''})" if name else ""
    found = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", host)
    if found:
        return f": a host and a port, where the host alone goes (--host {found[1] or found[3]} --port {found[2] or found[4]})"
    return ""


def host_port(host: str, port: int) -> str:
    """`host:port` as a URL's authority writes it (RFC 3986, 3.2.2; RFC 6874): an IPv6 address in brackets, its zone
    id's `%` as `%25` (`[fe80::1%25eth0]:8000`)."""
    return f"[{host.replace('%', '%25')}]:{port}" if ":" in host else f"{host}:{port}"


def read_preference_file(option: str, path: str, *, skip_bad: bool | None = None, default_user: str | None = None):
    """The records of the preference file given as `option` (`--data`, `--path`): a bad row or an
    empty file is a ValueError naming the option, the file, the line and the field ("--data p.jsonl:
    line 3, field `chosen`: ..."), with a hint at --skip-bad where the command has it (`skip_bad` is
    not None); rows skipped with it are counted on stderr."""
    return read_preference_rows(option, path, skip_bad=skip_bad, default_user=default_user)[0]


def read_preference_rows(option: str, path: str, *, skip_bad: bool | None = None, default_user: str | None = None,
                         user_option: str | None = None):
    """`read_preference_file`, with where each record is in the file: (records, places), `places[i]`
    the line (JSON lines) or row (Parquet) of `records[i]` as an error names it ("line 3", "row 3",
    from 1). `user_option`: the command's
    option naming the user of rows without `user_id`, which a row missing one is pointed at."""
    from pluralign.data.io import read_preferences
    from pluralign.data.record import PreferenceError

    try:
        with reading(option, path):
            records, load = read_preferences(path, skip_bad=bool(skip_bad), default_user=default_user)
    except PreferenceError as exc:
        hint = " (--skip-bad skips bad rows)" if skip_bad is not None and exc.line and exc.skippable else ""
        if user_option and default_user is None and exc.field == "user_id" and exc.problem == "missing required field":
            hint = f" (a TRL dataset names no user: {user_option} NAME makes every row without `user_id` that user's)"
        raise ValueError(f"{option} {exc}{hint}") from None
    if load.skipped:  # one line naming the file, the count and the first few lines skipped (not a Python list)
        first = "; ".join(load.errors[:3])
        print(f"{option} {path}: skipped {load.skipped} bad row{'s' * (load.skipped != 1)} (--skip-bad); first: {first}", file=sys.stderr)
    return records, [f"{load.unit} {n}" for n in load.lines]


def check_protocol_data(args: argparse.Namespace) -> None:
    """`--protocol` and `--data` agree: `file` needs --data, and a --data beside another protocol (which reads
    --data-dir, so --data would be ignored) is a ValueError naming it. Cheap: commands call it before their
    imports (torch: seconds); `load_training_protocol` calls it too."""
    if args.protocol == "file" and not args.data:
        raise ValueError("--protocol file needs --data PATH: a JSONL or Parquet preference file")
    if args.protocol != "file" and args.data:
        raise ValueError(f"--data {args.data}: read only with --protocol file (--protocol {args.protocol} reads its data from --data-dir)")


def load_training_protocol(args: argparse.Namespace, **persona_sizes: int):
    """The protocol a trainer or `eval` reads (`--protocol`, `--data`, `--data-dir`, `--groups`, `--seed`):
    `file` reads `--data` as every command reads a preference file (an error names --data, the line
    and the field; a file without a user of `MIN_FILE_PAIRS` strict comparisons names --data too);
    `ukp` and `persona` read `--data-dir` (a missing file names --data-dir). A `--data` beside another
    protocol, which would be ignored, is a ValueError naming it (`check_protocol_data`). `persona_sizes`:
    `EvalConfig`'s persona-only fields (`unseen_users_per_group`, `query_size`), as `eval` gives them."""
    from pluralign.data.splits import MIN_FILE_PAIRS, file_protocol
    from pluralign.evaluation import EvalConfig, load_protocol

    check_protocol_data(args)
    if args.protocol == "file":
        records = read_preference_file("--data", args.data)
        try:  # the threshold named here, as `file_protocol_help` and `left_out_users` name it
            return file_protocol(records, seed=args.seed, min_pairs=MIN_FILE_PAIRS)
        except ValueError as exc:  # no user with enough comparisons: say which file
            raise ValueError(f"--data {args.data}: {exc}") from None
    with reading("--data-dir", args.data_dir):
        return load_protocol(EvalConfig(protocol=args.protocol, data_dir=args.data_dir, groups=args.groups, seed=args.seed,
                                        **persona_sizes))


def file_protocol_help() -> str:
    """The --protocol help of a trainer taking `file`, its threshold read from the constant `load_training_protocol`
    passes (`pluralign.data.splits.MIN_FILE_PAIRS`), so the help and the behaviour cannot disagree."""
    from pluralign.data import splits

    return ("file: a preference file given by --data (e.g. a snapshot of the service's feedback); its users with "
            f"fewer than {splits.MIN_FILE_PAIRS} strict comparisons are left out, counted in users_left_out and left_out_pairs "
            "(a comparison repeated counts once; its repeats are split together, never trained on and tested)")


def left_out_users(protocol) -> dict[str, int]:
    """A `--protocol file` trainer's count of the users its file holds too few strict comparisons of to train on
    (`pluralign.data.splits.file_protocol`'s `left_out`), for its JSON line: `users_left_out` and
    `left_out_pairs`; said on stderr too when there are any. Other protocols choose their users themselves: {}."""
    if protocol.name != "file":
        return {}
    users, pairs = len(protocol.left_out), sum(protocol.left_out.values())
    if users:
        from pluralign.data.splits import MIN_FILE_PAIRS

        print(f"pluralign: warning: {users} user{'s' * (users != 1)} with fewer than {MIN_FILE_PAIRS} different strict comparisons "
              f"left out ({pairs} comparison{'s' * (pairs != 1)}): a seen user's are split train/validation/test",
              file=sys.stderr)
    return {"users_left_out": users, "left_out_pairs": pairs}


@contextlib.contextmanager
def reading(option: str, value):
    """An input given as `option VALUE` that cannot be read is a ValueError naming both: "--path
    x.jsonl: no such file or folder", "--data d: is a directory, not a file", "--data-dir d: no persona trait file
    d/persona/..." (an OSError raised inside the block: a missing file, a folder for a file, no permission)."""
    try:
        yield
    except IsADirectoryError:
        raise ValueError(f"{option} {value}: is a directory, not a file") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and exc.strerror and str(exc.filename) == str(value):
            problem = "no such file or folder"
            if str(value) == "-":  # `curl ... | pluralign data import --path -`: no command reads `-` as standard input
                problem += " (`-` is read as a file's name: give a pipe's input as /dev/stdin)"
        elif exc.strerror:
            problem = exc.strerror + (f": {exc.filename}" if exc.filename and str(exc.filename) != str(value) else "")
        else:
            problem = str(exc)
        raise ValueError(f"{option} {value}: {problem}") from None


STDOUT = "stdout"  # the file name an OSError of writing the command's output carries (`print_json`)


def print_json(obj) -> None:
    """One JSON line on stdout, flushed. A write that fails (`> /dev/full`; a reader that has gone, `| head -1`) is an
    OSError naming stdout: without a name the CLI's error line said "[Errno 28] No space left on device", and the
    CLI's `main` cannot tell a closed pipe of its output from another. A stdout closed before the start (`>&-`, Python's
    `sys.stdout` None) is one too (EBADF): it was an AttributeError's traceback, a key `keys create` issued kept unseen."""
    if sys.stdout is None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF), STDOUT)
    try:
        sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")
        sys.stdout.flush()
    except OSError as exc:
        if exc.filename is not None or not exc.errno:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), STDOUT) from exc


PROGRESS_ENV = "PLURALIGN_PROGRESS"
PROGRESS_PREFIX = "@progress "


def report_progress(fraction: float) -> None:
    """Tell a job runner how far a command has got (a stderr line it parses); silent otherwise."""
    if os.environ.get(PROGRESS_ENV):
        sys.stderr.write(f"{PROGRESS_PREFIX}{fraction:.3f}\n")
        sys.stderr.flush()


FD_RESERVE = 1024  # open files a server keeps for what is not a connection: the store's, the models', logs, a job's pipes
DEFAULT_MAX_CONNECTIONS = 1000  # PLURALIGN_MAX_CONNECTIONS unset, where the open-files hard limit has room for it


def fit_open_files(max_connections: int | None) -> int:
    """Make room for `max_connections` (PLURALIGN_MAX_CONNECTIONS) in this process's open-files limit: each
    connection is a file descriptor, and the refused ones closing (`serve.REFUSED_LINGERING`) and FD_RESERVE
    more are needed beside them. The soft limit (`ulimit -n`) is raised to that when it is lower, as far as
    the hard limit allows. Returns the connection limit in force: `max_connections`, or, when it is None
    (unset), DEFAULT_MAX_CONNECTIONS or as many as the hard limit leaves room for, if fewer (at least 1; a
    warning says so: `make serve` on a machine whose hard limit is 1,024 starts). A ValueError naming the
    setting when a value set needs more than the hard limit allows (a server whose connections took every
    descriptor failed to open its store's files)."""
    import resource

    from training.commands.serve import REFUSED_LINGERING

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    given = max_connections
    if max_connections is None:
        max_connections = DEFAULT_MAX_CONNECTIONS
        if hard != resource.RLIM_INFINITY and hard < max_connections + REFUSED_LINGERING + FD_RESERVE:
            max_connections = max(1, min(max_connections, max(hard - REFUSED_LINGERING - FD_RESERVE, hard // 4)))
            logging.getLogger("pluralign").warning(
                "PLURALIGN_MAX_CONNECTIONS (setting max_connections) is unset: %d connections, not %d, as this process may "
                "open at most %d files (`ulimit -Hn`); raise that limit for more", max_connections, DEFAULT_MAX_CONNECTIONS, hard)
    need = max_connections + REFUSED_LINGERING + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            if given is None:  # too few files for even the least: as much as there is
                need = hard
            else:
                raise ValueError(f"PLURALIGN_MAX_CONNECTIONS (setting max_connections) = {max_connections} needs {need} open files "
                                 f"({REFUSED_LINGERING} more for refused connections closing, {FD_RESERVE} for the store, models and logs), "
                                 f"but this process may open at most {hard} (`ulimit -Hn`): set PLURALIGN_MAX_CONNECTIONS to at most "
                                 f"{max(hard - REFUSED_LINGERING - FD_RESERVE, 0)}, or raise the limit")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return max_connections
