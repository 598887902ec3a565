"""`pluralign eval`: train a named model on a named protocol and measure it.

    pluralign eval --model bt --protocol persona --groups 4 --seed 0 --json
    pluralign eval --model per-user-bt --protocol ukp --json
    pluralign eval --model em --protocol persona --groups 5          # K chosen from the data
    pluralign eval --model pal-b --k 4 --protocol persona --groups 4  # K fixed
    pluralign eval --model pal-a+residual --protocol persona --groups 4 --shots active   # + actively chosen support
    pluralign eval --model pal-a+residual --protocol persona --groups 5 --seed 2 --shots active --unseen-per-group 50 --query-size 50
    pluralign eval --model per-user-bt --protocol file --data prefs.jsonl --seed 0 --json   # your own users' comparisons

`--protocol file` reads a preference file (JSONL, Parquet or a `datasets` save_to_disk folder, read as the
trainers read `--data`) and splits it as `train pal|em --protocol file` do (`pluralign.data.splits.file_protocol`):
every user with at least MIN_FILE_PAIRS (5) different strict comparisons is a seen user, split train/validation/test
by --seed; the others are left out, counted in the JSON line's `users_left_out` and `left_out_pairs`. Each seen
user's test accuracy is reported (`seen_user_acc`). A file's users are all seen users: there are no unseen users,
so `unseen_acc_by_k` is empty, and the options that size or choose unseen users' comparisons (`--shots active`,
`--active-target`, `--unseen-per-group`, `--query-size`) are refused, as `--groups` is.

Without --k, the mixtures (pal-a, pal-b, em) choose K = 1, 2, ... (up to 12, stopping after two K
without a better held-out log-likelihood on the seen users' validation pairs) and keep the smallest
K within one standard error of the best; the table and the JSON line report `k_selected` and the
criterion per K (`k_criterion`, `k_criterion_se`, `k_criterion_per_pair`).

With `--shots active` (user models only), each unseen user's k support comparisons are also chosen
from their support pool by expected information gain on the posterior (`pluralign.user.active`,
the criterion chat's `pluralign.compare` uses), reported as `unseen_active_acc_by_k` beside the
pool-order (random) choice `unseen_acc_by_k` (and, started from the seen users' spread of coefficients rather than
the model's prior, `unseen_active_population_acc_by_k`); k = 4 is then measured too. `--active-target
predictive` chooses by EPIG instead (information about the user's answers to the rest of their pool).
`--active-target group` takes each new user to be like one of the seen users, chooses by the
information about which of PAL's groups of seen users that is, and predicts the query by averaging
the seen users' predictions under the user's posterior over them; the pool's first k predicted the
same way are reported beside it (`unseen_particle_acc_by_k`), so the choice is compared like for like.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from training.common import (
    DATA_DIR_HELP,
    DEFAULT_DATA_DIR,
    SEED_HELP,
    AtLeastOne,
    add_encoder_args,
    add_threads_arg,
    cached_encoder,
    check_encoder,
    check_protocol_data,
    file_protocol_help,
    k_search,
    left_out_users,
    load_training_protocol,
    number,
    persona_groups,
    print_json,
    seed_number,
)

PERSONA_SIZES = {"unseen_users_per_group": "--unseen-per-group", "query_size": "--query-size"}  # EvalConfig field -> its flag
# the most comparisons eval's persona population may give its new users (groups x --unseen-per-group x (support pool +
# --query-size)): each is embedded as three (384,) float32 rows beside its record; 100,000 query comparisons took 1.5 GB
# and 66 s on two cores, so this is about 3 GB; --query-size 100000 was killed by the kernel
# (exit 137, no message). The recorded run (benchmarks.active_shots: 4 x 50 x (50 + 50) = 20,000) is a tenth of it.
MAX_UNSEEN_COMPARISONS = 200_000
UNSEEN_USERS = {  # a protocol's unseen users, as an error refusing persona's sizes or active shots says it
    "ukp": "UKP's unseen users are its own held-out annotators",
    "file": "--protocol file has no unseen users: every user of the file with enough comparisons is a seen user, "
            "split train/validation/test as `train pal|em --protocol file` split them",
}


def check_active_options(args: argparse.Namespace) -> None:
    """`--shots active` and `--active-target` where they can be read: a ValueError naming the option given with
    `--protocol file` (no unseen users to choose for: it would report no figure at all; the error does not send a
    user who gave only --active-target to add --shots active, which is refused there too), and `--active-target`
    without `--shots active` (it would be ignored)."""
    if args.protocol == "file" and args.shots == "active":
        raise ValueError(f"--shots active chooses unseen users' comparisons, but {UNSEEN_USERS['file']}; "
                         "give --protocol ukp or persona for unseen users' k-shot accuracy, or leave --shots out")
    if args.protocol == "file" and args.active_target is not None:
        raise ValueError(f"--active-target {args.active_target} chooses how --shots active picks unseen users' comparisons, "
                         f"but {UNSEEN_USERS['file']}; give --protocol ukp or persona with --shots active, or leave --active-target out")
    if args.active_target is not None and args.shots != "active":
        raise ValueError(f"--active-target {args.active_target} chooses how --shots active picks; add --shots active (or drop --active-target)")


def check_persona_size(args: argparse.Namespace, sizes: dict[str, int]) -> None:
    """A ValueError naming --groups, --unseen-per-group and --query-size when the persona population they ask for
    gives its new users more than MAX_UNSEEN_COMPARISONS comparisons (it would not fit in memory)."""
    from pluralign.data.persona import PersonaConfig

    if args.protocol != "persona":
        return
    defaults = PersonaConfig()
    unseen = sizes.get("unseen_users_per_group", defaults.unseen_users_per_group)
    query = sizes.get("query_size", defaults.query_size)
    total = args.groups * unseen * (defaults.support_size + query)
    if total > MAX_UNSEEN_COMPARISONS:
        raise ValueError(f"--groups {args.groups}, --unseen-per-group {unseen}, --query-size {query}: {total:,} comparisons of "
                         f"new users ({args.groups} x {unseen} users x ({defaults.support_size} support + {query} query)), over "
                         f"the {MAX_UNSEEN_COMPARISONS:,} that fit in a few GB of memory; lower --unseen-per-group or --query-size")


def check_model(name: str) -> None:
    """A ValueError naming --model and the closest known model when `name` is none (`pal_a`: did you mean pal-a?).
    The registry's names import no model's code (torch): the error comes at once."""
    from pluralign.data.text import closest_name
    from pluralign.reward.registry import MODELS

    if name not in MODELS:
        close = closest_name(name, MODELS)
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"--model {name}: unknown model{hint}; known: {', '.join(sorted(MODELS))}")


def run(args: argparse.Namespace) -> int:
    # usage errors first: the imports below (torch, the models) take seconds
    check_active_options(args)
    check_protocol_data(args)
    persona_groups(args, "--protocol", args.protocol, 4)
    sizes = {field: getattr(args, field) for field in PERSONA_SIZES if getattr(args, field) is not None}
    if sizes and args.protocol != "persona":
        given = ", ".join(f"{PERSONA_SIZES[field]} {value}" for field, value in sizes.items())
        raise ValueError(f"{given}: persona only ({UNSEEN_USERS[args.protocol]})")
    check_persona_size(args, sizes)
    from pluralign.reward.registry import WITHOUT_COMPONENTS  # the models' names alone: none of their code (torch)

    if args.k is not None and args.model in WITHOUT_COMPONENTS:
        raise ValueError(f"--k {args.k}: the number of mixture components (pal-a, pal-b, em and their +residual forms), and "
                         f"--model {args.model} has none: leave --k out")
    check_encoder(args)
    check_model(args.model)
    from tqdm import tqdm

    from pluralign.evaluation import EvalConfig, evaluate
    from pluralign.reward.registry import build_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = EvalConfig(protocol=args.protocol, path=args.data, data_dir=args.data_dir, groups=args.groups, seed=args.seed, **sizes)
    if args.shots == "active":  # issue 16's bar compares 2 and 5 active shots with 4 and 10 random ones
        config = replace(config, shots=tuple(sorted({*config.shots, 4})))
    model = build_model(args.model, k=args.k, seed=args.seed)
    if args.shots == "active" and not hasattr(model, "prob_new_users_active"):
        raise ValueError(f"--shots active needs a user model with a posterior (pal-a+residual, pal-b+residual), not {args.model}")
    protocol = load_training_protocol(args, **sizes)  # `file`: --data, read and split as the trainers read and split it
    left_out = left_out_users(protocol)  # said before the training, reported after it
    if args.k is not None:  # a fixed K, as the trainers check it: at most the number of training users
        k_search([args.k], None, len({r.user_id for r in protocol.seen.train}))
    encoder = cached_encoder(args)
    active = args.shots == "active"
    # a protocol without unseen users (`file`) measures no k: a bar of them would stand at 0 while the model trains
    bar = tqdm(total=len(config.shots) * (1 + active), desc=f"{args.model} unseen k", file=sys.stderr,
               disable=not sys.stderr.isatty() or not protocol.unseen.support)
    report = evaluate(model, protocol, encoder, shots=config.shots, progress=lambda k: bar.update(), active=active,
                      active_target=args.active_target or "coefficients", per_user=protocol.name == "file")
    bar.close()
    report.update(left_out)
    if not args.json:
        _print_summary(report, model)
    print_json(report)
    return 0


USERS_SHOWN = 10  # a file's seen users printed in the summary, the least accurate first


def _print_summary(report: dict, model) -> None:
    """The report in lines a person reads (before its JSON line): accuracies seen and unseen per k,
    a file's users left out and its least accurate users, per group, the K a mixture selected
    (its table), ARI and seconds."""
    print(f"model {report['model']} on {report['protocol']}: {report['seen_users']} seen, {report['unseen_users']} unseen users")
    if "users_left_out" in report:
        from pluralign.data.splits import MIN_FILE_PAIRS

        users, pairs = report["users_left_out"], report["left_out_pairs"]
        said = (f"{users} user{'s' * (users != 1)} ({pairs} comparison{'s' * (pairs != 1)}): too few different strict comparisons to split"
                if users else f"none: every user has {MIN_FILE_PAIRS} or more different strict comparisons")
        print(f"  left out         {said}")
    print(f"  seen macro acc   {report['seen_macro_acc']:.3f}")
    print(f"  seen pooled acc  {report['seen_pooled_acc']:.3f}")
    # each figure the JSON line holds for k: with --active-target group the chosen shots are predicted by the seen
    # users, and their like for like is the random shots predicted so (in the table too);
    # the active shots' label names the criterion that chose them, `active_target`, so that BALD's, EPIG's and the group
    # one's tables do not read alike
    chosen = f"active ({report['active_target']})" if "active_target" in report else "active"
    beside = (("unseen_active_acc_by_k", chosen), ("unseen_active_population_acc_by_k", f"{chosen}, population start"),
              ("unseen_particle_acc_by_k", "random, by the seen users"))
    for k, acc in report["unseen_acc_by_k"].items():
        extra = "".join(f"   {label} {report[key][k]:.3f}" for key, label in beside if k in report.get(key, {}))
        print(f"  unseen k={k:<4}     {acc:.3f}{extra}")
    if not report["unseen_users"]:
        print("  unseen users     none in this protocol: no k-shot accuracy")
    for user, acc in sorted(report.get("seen_user_acc", {}).items(), key=lambda item: item[1])[:USERS_SHOWN]:
        print(f"  user {user:<12}  {acc:.3f}")
    if len(report.get("seen_user_acc", {})) > USERS_SHOWN:
        print(f"  ... {len(report['seen_user_acc']) - USERS_SHOWN} more users (the JSON line's seen_user_acc holds all)")
    for g, acc in report["group_acc"].items():
        print(f"  group {g:<12} {acc:.3f}  ({report['group_pairs'][g]} pairs)")
    print(f"  worst group      {report['worst_group_acc']:.3f}")
    selection = getattr(model, "selection", None)  # a mixture that chose its K (model_selection.KSelected)
    if selection is not None:
        print(f"  K selected       {selection.k_selected}  ({selection.rule}; best K {selection.k_best})")
        for line in selection.table():
            print("  " + line)
    if "ari" in report:
        print(f"  ARI              {report['ari']:.3f}")
    print(f"  seconds          {report['seconds']:.1f}")


def register(sub) -> None:
    p = sub.add_parser("eval", help="train and evaluate a preference model on a protocol", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="bt, per-user-bt, pal-a, pal-b, em, pal-a+residual, pal-b+residual (the user model)")
    p.add_argument("--protocol", required=True, choices=["ukp", "persona", "file"],
                   help="ukp: the UKP ConvArg1 annotators; persona: a synthetic population of --groups groups from anthropic_persona; "
                        + file_protocol_help() + "; a file has no unseen users")
    p.add_argument("--data", default=None, help="--protocol file: a JSONL or Parquet preference file (or a Dataset.save_to_disk folder, or one of its .arrow files)")
    p.add_argument("--groups", type=number(int, minimum=2, below=65), default=None, help="persona: number of groups, 2 to 64 (default 4)")
    p.add_argument("--k", type=int, action=AtLeastOne, default=None, help="mixture components (pal, em); default: chosen from the data by held-out log-likelihood")
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.add_argument("--unseen-per-group", dest="unseen_users_per_group", metavar="UNSEEN_PER_GROUP", type=int, action=AtLeastOne, default=None,
                   help="persona: new (unseen) users per group (default 10); the seen users and their model stay the same, more users narrow the intervals")
    p.add_argument("--query-size", type=int, action=AtLeastOne, default=None, help="persona: held-out query comparisons per unseen user (default 20); the new users' comparisons, "
                        "--groups x --unseen-per-group x (50 support + --query-size), are at most 200,000")
    p.add_argument("--shots", choices=["random", "active"], default="random",
                   help="unseen users' k support comparisons: the pool's first k (random order), or also chosen by "
                        "expected information gain on the user model's posterior (`active`, +residual models)")
    p.add_argument("--active-target", choices=["coefficients", "predictive", "group"], default=None,
                   help="only with --shots active (default coefficients): what each chosen comparison should teach most about, the user model's "
                        "coefficients (BALD), the user's answers to the rest of their pool (EPIG), or which group of "
                        "seen users the user is like (group; predicted by those users, random k the same way beside it)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=DATA_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print only the JSON report")
    add_threads_arg(p)
    add_encoder_args(p)
    p.set_defaults(func=run)
