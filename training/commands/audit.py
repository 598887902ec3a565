"""`pluralign audit`: how well each group of users is served, personalized vs one-size-fits-all.

    pluralign audit --data prefs.jsonl --group-by group --min-group-size 5 --json
    pluralign audit --source ukp_convarg1 --path ../shared/data/ukp_convarg1 --group-by worker_stance
    pluralign audit --source persona --groups 2 --group-weights 0.9,0.1 --group-by group --json
    pluralign audit --data prefs.parquet --group-by cluster --user-groups clusters.json --out report.json
    pluralign audit --store data --group-by segment --since 1764000000 --json
    pluralign audit --source persona --groups 4 --group-by pal_prototype --pal artifacts/pal-a
    pluralign audit --source persona --groups 4 --group-by em_cluster --em runs/em-persona4
    pluralign audit --source persona --groups 2 --group-by group --personalized pal --pal artifacts/pal-a

Each comparison is predicted by its user's online model before the model learns from it
(prequential accuracy); the base model is cross-fitted by user. `--user-groups` maps user ids to
groups learned elsewhere (nearest PAL prototype, EM cluster); otherwise `--group-by` names a record
attribute; `--group-by pal_prototype --pal DIR` and `--group-by em_cluster --em DIR` group users by
a trained mixture's components. `--store` audits the service's LanceDB tables (its data folder or the `lancedb/` folder in it; stored vectors, user attributes, and
`--group-by pal_prototype` for each user's nearest PAL prototype; the file and learned-component
options are refused with it). Groups with fewer than `--min-group-size` users are suppressed, a group of one user
always; groups of fewer than 5 users have no 95% intervals (their ends would be individual users' accuracies).
A `--data` file loads as for `data stats`: a bad row is an error naming its line and field, unless
`--skip-bad` skips bad rows (and says how many). A `--group-by` no comparison has is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from pluralign.data.record import MAX_CREATED_AT, digits_date_problem, time_text_hint
from pluralign.files import write_atomic
from training.common import (
    DATA_DIR_HELP,
    DEFAULT_DATA_DIR,
    SEED_HELP,
    add_encoder_args,
    cache_path,
    cached_encoder,
    check_encoder,
    check_given,
    check_not_an_input,
    check_store_there,
    check_store_uri,
    check_writable_file,
    no_store_there,
    number,
    persona_groups,
    read_preference_file,
    reading,
    report_progress,
    seed_number,
    store_folder,
    store_options,
    tenant_name,
)


def timed_for_since(args: argparse.Namespace, records: list):
    """`records` when `--since` can be read of each comparison audited: a ValueError naming --since when some have no
    `created_at` (a TRL dataset; an export's row stored with a time no file takes), which an audit would order by their
    place instead, so that `--since` compared a Unix time with line numbers and scored none."""
    if args.since is None:
        return records
    untimed = sum(r.created_at is None for r in records if not r.tie)
    if untimed:
        total = sum(not r.tie for r in records)
        raise ValueError(f"--since {args.since:.15g}: {untimed} of the {total} comparisons audited {'has' if untimed == 1 else 'have'} "
                         f"no created_at, so whether {'it' if untimed == 1 else 'they'} came at or after that time is unknown; "
                         "give every row its time, or audit without --since")
    return records


def load_records(args: argparse.Namespace):
    """The comparisons to audit, from a preference file, UKP or a synthetic persona population."""
    if args.data:  # a bad row fails the load (naming its line and field) unless --skip-bad, as for `data stats`
        return read_preference_file("--data", args.data, skip_bad=args.skip_bad)
    given = ("--path", args.path) if args.path else ("--data-dir", args.data_dir)  # what an unreadable source is said of
    if args.source == "ukp_convarg1":
        from pluralign.data.ukp import load_ukp

        with reading(*given):
            return load_ukp(args.path or Path(args.data_dir) / "ukp_convarg1")[0]
    if args.source == "persona":
        from pluralign.data.persona import PersonaConfig, build_persona

        config = PersonaConfig(groups=args.groups, group_weights=args.group_weights, seed=args.seed)
        with reading(*given):
            protocol = build_persona(config, args.path or args.data_dir)
        seen = protocol.seen
        # in each user's order of arrival: training pairs first, then validation, then test
        return [*seen.train, *seen.val, *seen.test]
    raise ValueError("give --data FILE, --store URI, or --source ukp_convarg1|persona")


_since_number = number(float, minimum=0, maximum=MAX_CREATED_AT, hint=time_text_hint)


def since_seconds(text: str) -> float:
    """The argparse `type=` of --since: Unix seconds from 0 to the end of year 9999 (`number`'s usage error otherwise,
    with a date's seconds or a division by 1000 as its hint); a date written in digits (20260101: 1970-08-23 as
    seconds, so every comparison would be scored) is a usage error giving the date's seconds (`digits_date_problem`)."""
    seconds = _since_number(text)
    if (problem := digits_date_problem(seconds)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return seconds


def group_weights(text: str) -> tuple[float, ...]:
    """The argparse `type=` of --group-weights: comma-separated finite numbers >= 0, one above 0 at least
    (`0.9,0.1`), or argparse's usage error naming the option and the weight that is wrong."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.9,0.1, got {text!r}")
    weights = []
    for part in text.split(","):
        try:
            weight = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a number (expected comma-separated numbers, e.g. 0.9,0.1)") from None
        if not math.isfinite(weight):
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a finite number")
        if weight < 0:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is below 0 (a weight is a relative group size)")
        weights.append(weight)
    if not any(weights):
        raise argparse.ArgumentTypeError(f"{text}: at least one must be above 0 (a weight is a relative group size)")
    return tuple(weights)


def read_user_groups(path: str) -> dict[str, str]:
    """The `--user-groups` file: a JSON object user_id -> group name. A malformed file is a ValueError
    naming the file, the line and (for a value that is not a group name) the user it maps; so is a key
    that no preference row can have as its `user_id` (blank: the rule of `Preference`, which the audited
    file's rows follow; a file's user ids need not be the service's), a blank group name (no visible character)
    and a user given twice (json.loads would keep the last group silently)."""
    from pluralign.data.text import is_blank, shorten

    where = f"--user-groups {path}"
    with reading("--user-groups", path):
        raw = Path(path).read_bytes()
    if not raw.strip():
        raise ValueError(f"{where}: is empty: expected a JSON object user_id -> group name")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{where}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    try:
        data = json.loads(text, object_pairs_hook=_Object)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: line {exc.lineno}, column {exc.colno}: malformed JSON ({exc.msg})") from None
    except RecursionError:  # nested deeper than json.loads goes: no group name is that deep
        raise ValueError(f"{where}: malformed JSON (nested too deeply)") from None
    except ValueError as exc:  # json.loads's own limits, e.g. an integer of more than 4,300 digits
        raise ValueError(f"{where}: malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        line = text.count("\n", 0, len(text) - len(text.lstrip())) + 1
        raise ValueError(f"{where}: line {line}: expected a JSON object user_id -> group, got {_json_kind(data)}")
    lines = _key_lines(text)
    if data.repeated is not None:
        user, first, then = data.repeated
        raise ValueError(f"{where}: line {lines.get(user, 1)}, key {shorten(user, 64, '...')!r}: given twice "
                         f"(to {_shown(first)}, then {_shown(then)}): a user is in one group")
    for user, group in data.items():
        if is_blank(user):
            raise ValueError(f"{where}: line {lines.get(user, 1)}, key {user!r}: a user id must not be empty (it has no visible character)")
        if not isinstance(group, str):
            raise ValueError(f"{where}: line {lines.get(user, 1)}, field `{user}`: expected a group name (a string), got {_json_kind(group)}")
        if is_blank(group):  # trimmed as a value is (`comparisons_from_records`), it would be a group named ""
            raise ValueError(f"{where}: line {lines.get(user, 1)}, field `{user}`: a group name must not be empty (it has no visible character)")
    return dict(data)


class _Object(dict):
    """A JSON object as `json.loads`' object_pairs_hook builds it, remembering its first repeated key:
    `repeated` = (key, its first value, its next one), or None."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__()
        self.repeated = None
        for key, value in pairs:
            if key in self and self.repeated is None:
                self.repeated = (key, self[key], value)
            self[key] = value


def _shown(value) -> str:
    from pluralign.data.text import shorten

    return repr(shorten(value, 64, "...")) if isinstance(value, str) else _json_kind(value)


def _json_kind(value) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return "an object" if isinstance(value, dict) else names.get(type(value), f"a number ({value!r})")


def _key_lines(text: str) -> dict[str, int]:
    """The line of each key of the (valid) JSON object `text`, the last one where a key repeats."""
    decoder, space = json.JSONDecoder(), re.compile(r"\s*")
    lines: dict[str, int] = {}
    i = space.match(text, 0).end() + 1  # past "{"
    while True:
        i = space.match(text, i).end()
        if text[i] == "}":
            return lines
        key, i = json.decoder.scanstring(text, i + 1)
        lines[key] = text.count("\n", 0, i) + 1
        i = space.match(text, space.match(text, i).end() + 1).end()  # past ":"
        _, i = decoder.raw_decode(text, i)
        i = space.match(text, i).end()
        i += text[i] == ","


def check_user_groups(path: str, user_groups: dict[str, str], records) -> None:
    """A mapping that names none of the audited users would put everyone in NO_VALUE (`" (no value)"`): an error."""
    if not user_groups:
        raise ValueError(f"--user-groups {path}: maps no user to a group (an empty object)")
    audited = {r.user_id for r in records if not r.tie}
    if audited and not audited & user_groups.keys():
        raise ValueError(f"--user-groups {path}: none of its {len(user_groups)} users is among the {len(audited)} users audited "
                         f"(it maps {sorted(user_groups)[0]!r}; the data has {sorted(audited)[0]!r})")


def online_pal(records, encoder, users: list[str], pal_dir: str):
    """Each user's PAL logits learned online from the prior, the checkpoint's shared model frozen."""
    import torch

    from pluralign.fairness.online import OnlinePAL
    from pluralign.reward.features import embed_pairs
    from pluralign.reward.pal import load_pal

    model, user_weights, _ = load_pal(pal_dir, encoder_id=encoder.encoder_id, device=torch.device("cpu"), dim=encoder.dim)
    batch = embed_pairs([r for r in records if not r.tie], encoder, users)  # the audit's rows, in its order
    return OnlinePAL(model, user_weights.prior(), batch.prompt, batch.chosen, batch.rejected, len(users))


NO_VALUE_SHOWN = "(without a value)"  # how the table writes the group NO_VALUE (the dashboard: "without a value", in italics)


def group_shown(name: str) -> str:
    """A group's name in the text table: a value quoted as JSON quotes it (its quotation marks and control characters
    escaped), the group NO_VALUE (`" (no value)"`) in our own words, unquoted, so it reads apart from a value
    `"(no value)"` or `"(without a value)"`, as the dashboard tells them apart (both bare, they would differ by one
    space)."""
    from pluralign.fairness.audit import NO_VALUE

    return NO_VALUE_SHOWN if name == NO_VALUE else json.dumps(name, ensure_ascii=False)


def _interval(bounds: tuple[float, float] | None, users: int, minimum: int) -> str:
    if bounds is None:
        return "withheld" if users < minimum else "-"  # fewer than `minimum` users (`withheld_notes`); or a report before them
    return f"{bounds[0]:.3f}-{bounds[1]:.3f}"


def _gap_said(gap: float, bounds: tuple[float, float] | None) -> str:
    if bounds is None:
        return f"{gap:.3f}"
    apart = "cannot tell the groups apart" if bounds[0] <= 0 <= bounds[1] else "the groups differ"
    return f"{gap:.3f} (95% interval {bounds[0]:.3f} to {bounds[1]:.3f}: {apart})"


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def print_table(report) -> None:
    """The report as text: one row a group (its value quoted, `group_shown`), then every comparison's row (`all`,
    unquoted), then the worst group and the gap. Each accuracy is followed by its 95% interval over the group's users
    (`-` in a report before them), and the gap by its own, saying whether it tells the groups apart. `--json` prints
    the report alone."""
    ties = "withheld ties" if report.ties_skipped is None else _counted(report.ties_skipped, "tie")
    print(f"audit by {report.group_by}: {_counted(report.users, 'user')}, {_counted(report.comparisons, 'comparison')} "
          f"({ties} skipped, {_counted(report.suppressed_groups, 'group')} suppressed), {report.seconds:.1f} s")
    print(f"  {'group':<18} {'users':>6} {'pairs':>8} {'personal':>9} {'95% interval':>13} {'base':>6} {'95% interval':>13} "
          f"{'ECE p/b':>11} {'win':>6}")
    rows = [(group_shown(g.group), g) for g in report.groups] + ([(report.overall.group, report.overall)] if report.overall else [])
    for shown, g in rows:
        ece = f"{g.personalized_ece or 0:.3f}/{g.base_ece or 0:.3f}"
        win = f"{g.win_rate:.3f}" if g.win_rate is not None else "-"
        flag = "  (too few comparisons)" if g.too_few_comparisons else ""
        least = report.interval_min_users
        print(f"  {shown:<18} {g.users:>6} {g.comparisons:>8} {g.personalized_accuracy:>9.3f} "
              f"{_interval(g.personalized_accuracy_interval, g.users, least):>13} {g.base_accuracy:>6.3f} "
              f"{_interval(g.base_accuracy_interval, g.users, least):>13} {ece:>11} {win:>6}{flag}")
    if report.worst_group is not None:
        print(f"  worst group {group_shown(report.worst_group)} {report.worst_group_accuracy:.3f}, gap {_gap_said(report.gap, report.gap_interval)} "
              f"(base: worst {group_shown(report.base_worst_group)} {report.base_worst_group_accuracy:.3f}, "
              f"gap {_gap_said(report.base_gap, report.base_gap_interval)})")
    from pluralign.fairness.report import withheld_notes

    for note in withheld_notes(report):
        print(f"  {note}")


def run(args: argparse.Namespace) -> int:
    # usage errors first: the audit's imports take seconds (an encoder for --data, lancedb for --store, torch for --personalized pal)
    check_inputs(args)
    # an empty path (--store, --data, --path) is refused, not read as the option not given (`--store "$STORE"` beside
    # --data would audit the file); a mistyped --encoder at once too (not once the data was read: UKPConvArg1 ~9 s)
    check_encoder(args)
    for option, value, what in (("--user-groups", args.user_groups, "the user-groups file (a JSON object user_id -> group name)"),
                                ("--pal", args.pal, "the PAL checkpoint folder"), ("--em", args.em, "the EM mixture folder"),
                                ("--store", args.store, "the service's store (its data folder, or an object-store URI)"),
                                ("--data", args.data, "a preference file (.jsonl or .parquet)"),
                                ("--path", args.path, "the folder of the --source data")):
        check_given(option, value, what)
    if args.out is not None:  # before the audit: a report that cannot be written (or an empty --out) costs nothing, nor one that would replace an input
        check_writable_file("--out", args.out, "the report JSON")
        check_not_an_input("--out", args.out, {"--data": args.data, "--user-groups": args.user_groups, "--pal": args.pal, "--em": args.em,
                                               "--cache": cache_path(args.cache)}, "the report JSON")
    check_artifacts(args)
    if args.store:  # a mistyped folder too (opened, then, by the audit's store source)
        uri = store_folder("--store", args.store).uri
        check_store_uri("--store", uri)
        # an object store's prefix mistyped: told before the audit's imports, as `train adapter --store` tells it (not once
        # the audit's modules have loaded and the store source opened it)
        check_store_there("--store", args.store, uri)
    # before the data and the audit's imports: a bad file's errors cost nothing (--store never reads it)
    user_groups = read_user_groups(args.user_groups) if args.user_groups and not args.store else None
    from pluralign.data.text import controls_escaped
    from pluralign.fairness.audit import UnknownGroupBy

    try:
        return _run(args, user_groups)
    except UnknownGroupBy as exc:  # a misspelled --group-by: one error naming it and the attributes there are
        components = "" if args.store else "; or pal_prototype (with --pal), em_cluster (with --em)"
        # the name with its control characters escaped, as the stored names are: the service reads a job's error from
        # its worker's last line, and a newline in a misspelt name split it (a 422 quoting its second half)
        raise ValueError(f"--group-by {controls_escaped(args.group_by)}: {exc}{components}") from None


STORE_IGNORES = {  # what --store would not read (its groups come from stored attributes and PAL logits)
    "data": "--data", "source": "--source", "path": "--path", "skip_bad": "--skip-bad", "user_groups": "--user-groups",
    "em": "--em", "pal": "--pal",
}


def check_inputs(args: argparse.Namespace) -> None:
    """Every input option given is read: one the chosen source would not read is an error naming it,
    not a report silently made without it (`--store` never read `--user-groups`)."""
    persona_groups(args, "--source", args.source, 2)
    if args.group_weights:
        given = "--group-weights " + ",".join(f"{w:g}" for w in args.group_weights)
        if args.source != "persona":
            raise ValueError(f"{given}: read only with --source persona (the synthetic population's group sizes); "
                             f"{f'--source {args.source}' if args.source else 'the data given'} has groups of its own")
        if len(args.group_weights) != args.groups:
            raise ValueError(f"{given}: {len(args.group_weights)} weights for --groups {args.groups} (one per group)")
    if args.store:
        for name, option in STORE_IGNORES.items():
            value = getattr(args, name)
            if value:
                given = option if value is True else f"{option} {value}"
                raise ValueError(f"{given}: not read with --store, which groups by the stored comparisons' and users' "
                                 "attributes (set through the API) or by each user's stored PAL weights (--group-by pal_prototype)")
        return
    if args.tenant:
        raise ValueError(f"--tenant {args.tenant}: only read with --store (a file or --source has no tenants)")
    if args.data and args.source:
        raise ValueError(f"--data {args.data}: give --data FILE or --source {args.source}, not both")
    if args.em and (args.group_by != "em_cluster" or args.user_groups):
        raise ValueError(f"--em {args.em}: read only with --group-by em_cluster (and no --user-groups), which groups "
                         f"users by its clusters; --group-by {args.group_by} does not")
    if args.pal and args.personalized != "pal" and (args.group_by != "pal_prototype" or args.user_groups):
        raise ValueError(f"--pal {args.pal}: read only with --group-by pal_prototype (and no --user-groups) or "
                         f"--personalized pal; --group-by {args.group_by} does not")


def check_artifacts(args: argparse.Namespace) -> None:
    """`--pal` and `--em` name an artifact folder: one without its description (meta.json) is an
    error naming the option before the encoder loads (seconds); the rest is checked as it loads."""
    if args.pal:
        from pluralign.reward.pal_checkpoint import read_meta

        with reading("--pal", args.pal):
            read_meta(args.pal)
    if args.em and not (Path(args.em) / "meta.json").is_file():
        raise ValueError(f"--em {args.em}: not an EM mixture artifact (no meta.json in it; `pluralign train em --out` writes one)")


def _run(args: argparse.Namespace, user_groups: dict[str, str] | None) -> int:
    from pluralign.fairness.audit import AuditConfig, audit, comparisons_from_records
    from pluralign.fairness.report import report_encoder

    personalized = None
    if args.personalized == "pal" and (args.store or not args.pal):
        raise ValueError("--personalized pal needs --pal CHECKPOINT_DIR and a preference file or --source")
    if args.store:
        from pluralign.fairness.store_source import NoStore, comparisons_from_store

        try:
            uri = store_folder("--store", args.store).uri
            comparisons = comparisons_from_store(uri, args.group_by, args.tenant, storage_options=store_options(uri))
        except NoStore:  # a URI (a folder is checked by store_folder): its prefix mistyped, or another store's settings
            raise ValueError(no_store_there("--store", args.store)) from None
    else:
        records = timed_for_since(args, load_records(args))
        if user_groups is not None:
            check_user_groups(args.user_groups, user_groups, records)
        encoder = cached_encoder(args)
        if user_groups is None and args.group_by == "pal_prototype":
            from pluralign.fairness.components import pal_prototype_groups

            if not args.pal:
                raise ValueError("--group-by pal_prototype needs --pal CHECKPOINT_DIR")
            user_groups = pal_prototype_groups(records, encoder, args.pal)
        elif user_groups is None and args.group_by == "em_cluster":
            from pluralign.fairness.components import em_cluster_groups

            if not args.em:
                raise ValueError("--group-by em_cluster needs --em ARTIFACT_DIR")
            user_groups = em_cluster_groups(records, encoder, args.em)
        comparisons = comparisons_from_records(records, encoder, args.group_by, user_groups)
        if args.personalized == "pal":
            personalized = online_pal(records, encoder, comparisons.users, args.pal)
    config = AuditConfig(
        min_group_size=args.min_group_size, min_comparisons=args.min_comparisons, since=args.since, seed=args.seed
    )
    report = audit(comparisons, args.group_by, config, progress=report_progress, personalized=personalized)
    data = report_encoder.encode(report)
    if args.out:
        write_atomic(args.out, data)
    if not args.json:
        print_table(report)
    sys.stdout.write(data.decode() + "\n")
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="fairness audit: per-group accuracy, personalized vs one-size-fits-all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="preference file (.jsonl or .parquet, a Dataset.save_to_disk folder or one of its .arrow files); a bad row is an error naming its line and field")
    p.add_argument("--skip-bad", action="store_true", help="with --data: skip malformed rows and report how many")
    p.add_argument("--source", choices=["ukp_convarg1", "persona"], help="a built-in data set instead of --data")
    p.add_argument("--store", help="the service's store: its data folder (e.g. data), the lancedb/ folder in it, or an object-store URI")
    p.add_argument("--tenant", type=tenant_name, help="with --store: audit one tenant only")
    p.add_argument("--path", help="folder of the --source data (default under --data-dir)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=DATA_DIR_HELP)
    p.add_argument("--group-by", required=True,
                   help="record attribute naming each comparison's group (an error if no comparison has it; those without it: ' (no value)')")
    p.add_argument("--personalized", choices=["logistic", "pal"], default="logistic",
                   help="each user's online model: logistic on embeddings (default) or PAL logits (needs --pal)")
    p.add_argument("--pal", help="PAL checkpoint folder, for --group-by pal_prototype or --personalized pal")
    p.add_argument("--em", help="EM mixture artifact folder, for --group-by em_cluster")
    p.add_argument("--user-groups", help="JSON object user_id -> group name (learned components); overrides attributes; "
                   "users it does not name: ' (no value)'; each user once; group names are trimmed (a blank key or group is an error)")
    p.add_argument("--min-group-size", type=number(int, minimum=1), default=1, help="suppress groups with fewer users (a group of one user is suppressed always)")
    p.add_argument("--min-comparisons", type=number(int, minimum=0), default=50, help="flag groups with fewer comparisons")
    p.add_argument("--since", type=since_seconds, default=None,
                   help="score only comparisons created at or after this time (Unix seconds, up to the end of year 9999: the times imports take)")
    p.add_argument("--groups", type=number(int, minimum=2, below=65), default=None, help="--source persona: number of groups, 2 to 64 (default 2)")
    p.add_argument("--group-weights", type=group_weights, default=(),
                   help="--source persona: relative group sizes, one per group, e.g. 0.9,0.1 (default: equal)")
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.add_argument("--out", help="also write the report JSON here")
    p.add_argument("--json", action="store_true", help="print only the JSON report")
    add_encoder_args(p)
    p.set_defaults(func=run)
