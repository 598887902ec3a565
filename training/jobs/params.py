"""The parameters each kind of job takes: a typed allow-list, never flags passed through.

A job's params are decoded into its kind's Struct (unknown names, wrong types and values out of
bounds are errors naming the parameter), and only then turned into the command's flags, each as
`--name=value` so that no value can be read as another flag. Paths a worker reads or writes
(`data`, `store`, `base`, output folders) are never taken from a client: `SERVER_SET` names the
ones the service fills in itself (an adapter's snapshot, the audited store), and the runner sets
the output folder.

    >>> job_argv("audit", {"group_by": "segment", "since": 1764000000.0})
    ['--group-by=segment', '--since=1764000000.0', '--min-group-size=1', '--min-comparisons=50', '--personalized=logistic']
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Literal, get_args, get_origin, get_type_hints

import msgspec

from pluralign.data.decode_words import in_our_words, one_of
from pluralign.data.record import MAX_CREATED_AT, Base, digits_date_problem, tenant_problem, time_text_hint
from pluralign.data.text import closest_name, is_blank, name_control_problem, shorten, surrogate_problem

# what a client may name: an attribute, a tenant, a user (the service's user-id rule); `(?!\n)`: msgspec
# searches with Python's `re`, whose `$` also matches before a final newline ("alice\n" was a user)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:+\-]{0,127}$(?!\n)"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
# Name's pattern said in words (msgspec's message is the regex itself, `(?!\n)` and all)
NAME_WORDS = "must be 1-128 characters: ASCII letters, digits and . _ @ : + - (starting with a letter or digit)"
# an attribute an audit groups by: any name a feedback's `attributes` may hold (`région`, `年齢層`: not the id rule,
# which would hold the admin routes to ASCII), passed as one `--group-by=VALUE` argument; its
# visible text and NUL are checked in `decode_params`. At most 256 characters (the service's names: 64 by default)
MAX_GROUP_BY_CHARS = 256
GroupBy = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_GROUP_BY_CHARS)]
GROUP_BY_WORDS = f"must name an attribute: 1-{MAX_GROUP_BY_CHARS} characters, in any script"
Seed = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
# a Unix time in seconds (finite: NaN is refused), up to the end of year 9999: every time an import takes, so a `since`
# can pick any rows stored from then on
Epoch = Annotated[float, msgspec.Meta(ge=0, le=MAX_CREATED_AT)]
# the encoders a trainer's `--encoder` builds by name (`pluralign.embed.encoders.make_encoder`)
JobEncoder = Literal["minilm", "minilm-onnx", "minilm-onnx-int8", "smollm2"]
JOB_ENCODERS: tuple[str, ...] = JobEncoder.__args__


class AdapterParams(Base, frozen=True):
    """`pluralign train adapter`: one user's LoRA adapter from a snapshot of their comparisons."""

    user: Name
    tenant: Name = "default"
    comparisons: Annotated[int, msgspec.Meta(ge=0)] = 0  # the user's comparison count when queued (the trigger's baseline)
    loss: Literal["dpo", "ipo"] = "dpo"
    beta: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.1
    lora_rank: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    lr: Annotated[float, msgspec.Meta(gt=0, le=1)] = 2e-4
    steps: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 40
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    seed: Seed = 0
    data: str | None = None  # server-set: the snapshot file the worker trains on
    base: str | None = None  # server-set: the model the service generates with
    base_model_id: str | None = None  # server-set: the name a remote generation server gives `base` (`--base-model-id`)


class PalParams(Base, frozen=True):
    """`pluralign train pal` on a built-in protocol, or (no protocol given) on a snapshot of the
    service's own stored comparisons (`protocol` "file" and `data` are then set by the service)."""

    protocol: Literal["persona", "ukp", "file"] = "persona"
    variant: Literal["a", "b"] = "a"
    k: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None  # None: chosen from the data (held-out likelihood)
    data: str | None = None  # server-set: the snapshot of the service's comparisons
    encoder: JobEncoder | None = None  # server-set: the encoder the service embeds with (None: the trainer's default)
    groups: Annotated[int, msgspec.Meta(ge=2, le=64)] | None = None  # protocol persona only (None: the trainer's, 4)
    epochs: Annotated[int, msgspec.Meta(ge=1, le=200)] = 40
    max_pairs: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 300_000
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 256
    lr_shared: Annotated[float, msgspec.Meta(gt=0, le=1)] = 2e-3
    lr_user: Annotated[float, msgspec.Meta(gt=0, le=1)] = 5e-2
    latent_dim: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 64
    hidden: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 256
    seed: Seed = 0


class EmParams(Base, frozen=True):
    """`pluralign train em` on a built-in protocol, or on a snapshot of the service's comparisons."""

    protocol: Literal["persona", "ukp", "file"] = "persona"
    k: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None  # None: chosen from the data (held-out likelihood)
    data: str | None = None  # server-set: the snapshot of the service's comparisons
    encoder: JobEncoder | None = None  # server-set: the encoder the service embeds with (None: the trainer's default)
    groups: Annotated[int, msgspec.Meta(ge=2, le=64)] | None = None  # protocol persona only (None: the trainer's, 4)
    assignment: Literal["hard", "soft"] = "hard"
    init: Literal["kmeans", "random"] = "kmeans"
    restarts: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    max_iter: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    l2: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 1.0
    seed: Seed = 0


class AuditParams(Base, frozen=True):
    """`pluralign audit --store`: the service's stored comparisons, grouped by an attribute."""

    group_by: GroupBy
    since: Epoch | None = None
    tenant: Name | None = None
    min_group_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    min_comparisons: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 50
    personalized: Literal["logistic", "pal"] = "logistic"
    store: str | None = None  # server-set: the service's LanceDB URI


PARAMS: dict[str, type[Base]] = {"adapter": AdapterParams, "pal": PalParams, "em": EmParams, "audit": AuditParams}
SERVER_SET: dict[str, tuple[str, ...]] = {"adapter": ("data", "base", "base_model_id"), "audit": ("store",), "pal": ("data", "encoder"), "em": ("data", "encoder")}


class JobParamsError(ValueError):
    """A job parameter that is not allowed, of the wrong type or out of bounds; `field` names it."""

    def __init__(self, field: str, problem: str, unknown: bool = False):
        self.field = field
        self.problem = problem
        self.unknown = unknown  # a name the kind does not take (the API's `unknown_parameter`)
        super().__init__(f"`{field}`: {problem}")


def _where(exc: msgspec.ValidationError, schema: type[Base], params: Mapping[str, object]) -> tuple[str, str]:
    """msgspec's 'problem - at `$.name`' as (`params.name`, problem); an unknown or missing name is named itself, a value
    outside a choice's values with them (`one_of`: `must be one of `logistic`, `pal`; got 'robot'`)."""
    problem, _, path = str(exc).partition(" - at `$")
    path = path.rstrip("`")
    named = re.search(r"field `([^`]+)`", problem)
    if named and not path:
        path = "." + named.group(1)
    if problem == f"Expected `str` matching regex {NAME_PATTERN!r}":
        problem = NAME_WORDS
    elif path == ".group_by" and problem.startswith("Expected `str` of length"):
        problem = GROUP_BY_WORDS
    elif problem.startswith("Invalid enum value ") and (choices := _choices(schema, path[1:])) and path[1:] in params:
        problem = one_of(choices, params[path[1:]])  # the value as sent, cut, and the choice it most likely means
    return "params" + path, in_our_words(problem)


def _choices(schema: type[Base], name: str) -> tuple[str, ...]:
    """The values `schema`'s parameter `name` takes when it is a Literal (`personalized`: `logistic`, `pal`); else ()."""
    kind = get_type_hints(schema).get(name)
    return tuple(str(value) for value in get_args(kind)) if get_origin(kind) is Literal else ()


def decode_params(kind: str, params: Mapping[str, object], *, from_client: bool = False) -> Base:
    """`params` as the kind's Struct (strict: no strings for numbers). With `from_client`, the
    server-set names are refused too, and a tenant name the service reserves (`tenant_problem`). A parameter whose
    value is None (a request's null) is not given, the kind's default, once its name is checked: a misspelled
    name is refused, null or not. Raises JobParamsError naming `params.<name>`."""
    schema = PARAMS.get(kind)
    if schema is None:
        raise JobParamsError("kind", f"unknown job kind {shorten(kind, 66, '...')!r}; known: {', '.join(sorted(PARAMS))}")
    if from_client:
        for name in SERVER_SET.get(kind, ()):
            if params.get(name) is not None:
                raise JobParamsError(f"params.{name}", "is set by the service, not by a request")
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise JobParamsError(f"params.{name}", f"must be a finite number, got {value}")
    takes = [name for name in schema.__struct_fields__ if name not in SERVER_SET.get(kind, ())]
    for name in params:
        if name not in schema.__struct_fields__:
            close = closest_name(name, takes, given={n for n, v in params.items() if v is not None})  # one given is not meant; a null is no value
            hint = f" (did you mean `{close}`?)" if close else ""
            raise JobParamsError(f"params.{name}", f"unknown parameter of a `{kind}` job{hint}; it takes {', '.join(takes)}", unknown=True)
    try:
        typed = msgspec.convert({name: value for name, value in params.items() if value is not None}, schema, strict=True)
    except msgspec.ValidationError as exc:
        where, problem = _where(exc, schema, params)
        since = params.get("since")  # an audit's: a date, or a time in milliseconds, is told its seconds
        if where == "params.since" and isinstance(since, str | int | float) and not isinstance(since, bool):
            problem += time_text_hint(str(since), quoted=isinstance(since, str)) if len(str(since)) <= 64 else ""
        raise JobParamsError(where, problem) from None
    _check_values(typed, from_client)
    return typed


def _check_values(typed: Base, from_client: bool) -> None:
    """What a type cannot say of decoded params: an audit's `group_by` names an attribute, its `since` is no date
    written in digits (`digits_date_problem`), a client's `tenant` is
    not reserved, `groups` goes with protocol `persona`, a client's audit is `logistic` (the service's audits read its
    store, which `--personalized pal` does not). Raises JobParamsError naming `params.<name>`."""
    if (problem := _group_by_problem(getattr(typed, "group_by", None))) is not None:
        raise JobParamsError("params.group_by", problem)
    if (problem := digits_date_problem(getattr(typed, "since", None))) is not None:  # 20260101: 1970-08-23 as seconds
        raise JobParamsError("params.since", problem)
    tenant = getattr(typed, "tenant", None)
    if from_client and tenant is not None and (problem := tenant_problem(tenant)):  # a reserved name, as keys refuse
        raise JobParamsError("params.tenant", problem)
    if from_client and getattr(typed, "personalized", None) == "pal":  # the job is `audit --store`: it would fail at start
        raise JobParamsError("params.personalized", "an audit job reads the service's stored comparisons, which only "
                                                    "`logistic` audits; `pal` is `pluralign audit --personalized pal "
                                                    "--pal CHECKPOINT_DIR` on a preference file or --source")
    if getattr(typed, "groups", None) is not None and typed.protocol != "persona":  # it would be ignored
        raise JobParamsError("params.groups", f"read only with protocol `persona` (the synthetic population's groups); "
                                              f"protocol `{typed.protocol}` has users of its own")


def _group_by_problem(group_by: str | None) -> str | None:
    """Why `group_by` can name no attribute (None when it can): blank (feedback refuses such a name), holding NUL,
    which no command-line argument can carry, or starting with `-` (a flag's look, refused as every job's names are),
    or holding what feedback refuses in an attribute's name (`name_control_problem`: a control character, a line
    separator, a bidi override)."""
    if group_by is None:
        return None
    if is_blank(group_by):
        return "an attribute name must hold a visible character"
    if "\x00" in group_by or group_by.startswith("-"):  # no argument holds NUL; one after `=` is never a flag, but kept so
        return "must neither start with `-` nor hold NUL (U+0000): the audit's worker takes it as a command-line argument"
    if (problem := name_control_problem(group_by)) is not None:  # feedback refuses such a name: no attribute has it
        return f"an attribute name {problem}: no attribute is named so (feedback refuses such a name)"
    return surrogate_problem(group_by)


def job_argv(kind: str, params: Mapping[str, object], skip: tuple[str, ...] = ()) -> list[str]:
    """The command's flags for a job of `kind`, each `--name=value` (a bare `--name` for True)."""
    typed = decode_params(kind, params)
    out: list[str] = []
    for name, value in msgspec.structs.asdict(typed).items():
        if name in skip or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        out.append(flag if value is True else f"{flag}={value}")
    return out
