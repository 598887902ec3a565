"""`pluralign train fspo`: meta-train a policy that reads a user's past comparisons in context.

    OMP_NUM_THREADS=1 pluralign train fspo --population persona --groups 2 --shots 4 --steps 60 --out artifacts/fspo-persona
    pluralign train fspo --population ukp --shots 4 --steps 200 --out artifacts/fspo-ukp
    pluralign train fspo --population file --data prefs.jsonl --shots 4 --out artifacts/fspo-mine

Writes a peft LoRA adapter folder (`adapter_config.json`, `adapter_model.safetensors`) with
`pluralign.json` (schema version, base model id, shots, data version, metrics) and prints the
metrics as JSON: held-out reward accuracy on unseen users before (the base model's likelihood of
each answer given the same shots) and after training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from training.common import (
    DATA_DIR_HELP,
    DEFAULT_DATA_DIR,
    SEED_HELP,
    check_base,
    check_out,
    number,
    persona_groups,
    print_json,
    read_preference_file,
    reading,
    seed_number,
)

# what `--full` writes (transformers' model and tokenizer files, our pluralign.json): an earlier one is replaced
FULL_MODEL_FILES = (
    "pluralign.json", "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
    "added_tokens.json", "README.md",
)


def load_base(spec: str):
    """(model, tokenizer, base model id) for `smollm2` or a transformers model folder (its id: the folder's name, as the service's generator names it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pluralign.device import default_device
    from pluralign.embed.models import SMOLLM2_ID, load_smollm2

    if spec == "smollm2":
        model, tokenizer = load_smollm2()
        return model, tokenizer, SMOLLM2_ID
    check_base(spec)
    folder = Path(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(folder)).to(default_device()).eval()
    return model, tokenizer, folder.resolve().name


def unseen_users(names: list[str], fraction: float) -> set[str]:
    """The users of `names` (sorted) held out unseen: round(`fraction` x their number), spread evenly over the
    order, at least one and never all (the training needs a user). Not every round(1 / fraction)-th user, which is at
    least every 2nd: 0.8 would hold out half of them, and a file of one user would have no training user left."""
    n = len(names)
    m = min(max(1, round(fraction * n)), n - 1)
    return {names[i * n // m] for i in range(m)} if m > 0 else set()


def load_population(args: argparse.Namespace):
    """(training users -> comparisons, unseen support, unseen query) for the chosen population."""
    from pluralign.data.splits import by_user, split_unseen
    from pluralign.evaluation import EvalConfig, load_protocol

    if args.data and args.population != "file":  # it would be ignored: a run on another population, minutes long
        raise ValueError(f"--data {args.data}: read only with --population file (--population {args.population} reads --data-dir)")
    if args.population == "file":
        if not args.data:
            raise ValueError("--population file needs --data FILE")
        records = read_preference_file("--data", args.data)
        users = by_user([r for r in records if not r.tie])
        names = sorted(users)
        held_out = unseen_users(names, args.unseen_fraction)
        unseen = split_unseen({u: users[u] for u in held_out}, args.seed, min_query=1)
        return {u: users[u] for u in names if u not in held_out}, unseen.support, unseen.query
    with reading("--data-dir", args.data_dir):
        protocol = load_protocol(EvalConfig(protocol=args.population, data_dir=args.data_dir, groups=args.groups, seed=args.seed))
    return by_user(protocol.seen.train), protocol.unseen.support, protocol.unseen.query


def run(args: argparse.Namespace) -> int:
    # usage errors first: the imports below (torch, peft, transformers) take seconds
    persona_groups(args, "--population", args.population, 2)
    if args.unseen_fraction is not None and args.population != "file":  # it would be ignored
        raise ValueError(f"--unseen-fraction {args.unseen_fraction:g}: read only with --population file; "
                         f"--population {args.population} holds its unseen users out itself")
    import copy

    from tqdm import tqdm

    from pluralign.files import staged_folder
    from pluralign.policy.adapters import (
        ADAPTER_FILES,
        SCHEMA_VERSION,
        AdapterMeta,
        data_version,
        save_adapter,
        write_meta,
    )
    from pluralign.policy.fspo import (
        FSPOConfig,
        ReferencePolicy,
        add_lora,
        distinct_comparisons,
        query_episodes,
        reward_accuracy,
        train,
        training_episodes,
    )

    args.unseen_fraction = 0.2 if args.unseen_fraction is None else args.unseen_fraction
    if args.out is not None:  # before any training: a wrong --out costs nothing (an empty one too), and a folder of other files is never replaced
        check_out(args.out, FULL_MODEL_FILES if args.full else ADAPTER_FILES, "full model" if args.full else "LoRA adapter",
                  None if args.full else SCHEMA_VERSION)
    config = FSPOConfig(
        shots=args.shots,
        loss=args.loss,
        beta=args.beta,
        lora_rank=args.lora_rank,
        lora_layers=args.lora_layers,
        full_finetune=args.full,
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        queries=args.queries,
        max_response_tokens=args.max_response_tokens,
        seed=args.seed,
    )
    train_users, support, query = load_population(args)
    most = max((distinct_comparisons([p for p in ps if not p.tie]) for ps in train_users.values()), default=0)
    if most < config.shots + config.queries:  # an episode takes that many of one user's comparisons
        source = f"--data {args.data}" if args.population == "file" else f"--population {args.population}"
        raise ValueError(f"--shots {config.shots} + --queries {config.queries}: each training episode takes "
                         f"{config.shots + config.queries} different strict comparisons of one user, and no training user of {source} has "
                         f"that many (at most {most}, among {len(train_users)} training users); lower --shots or --queries")
    eval_users = sorted(u for u in query if len(support[u]) >= config.shots)[: args.eval_users]
    # unseen users held out of training for a score that cannot be taken (it would read `null`); a file of one
    # user holds none out, and loses nothing (not refused, blaming --shots)
    if args.eval_users and query and not eval_users:
        source = f"--data {args.data}" if args.population == "file" else f"--population {args.population}"
        most = max((len(support[u]) for u in query), default=0)
        raise ValueError(f"--shots {config.shots}: each unseen user is scored with {config.shots} of their own support "
                         f"comparisons in context, and no unseen user of {source} has that many (at most {most}, among "
                         f"{len(query)} unseen users); lower --shots, or give --eval-users 0 to train without scoring")
    test = query_episodes({u: support[u] for u in eval_users}, {u: query[u] for u in eval_users}, config.shots, per_user=args.eval_per_user)
    episodes = training_episodes(
        train_users, config.shots, args.episodes or config.steps * config.batch_size, seed=config.seed, queries=config.queries
    )
    model, tokenizer, base_id = load_base(args.base)

    started = time.time()
    before = reward_accuracy(model, None, tokenizer, test, config)
    if config.full_finetune:
        reference = ReferencePolicy(model, full_copy=copy.deepcopy(model).eval())
        policy = model
        for p in policy.parameters():
            p.requires_grad_(True)
    else:
        policy = add_lora(model, config)
        reference = ReferencePolicy(policy)
    bar = tqdm(total=config.steps, desc="fspo", file=sys.stderr, disable=not sys.stderr.isatty() and not args.progress)
    metrics = train(
        policy,
        reference,
        tokenizer,
        episodes,
        config,
        on_step=lambda step, s: (bar.update(), bar.set_postfix(loss=f"{s['loss']:.3f}", acc=f"{s['reward_acc']:.2f}")),
    )
    bar.close()
    after = reward_accuracy(policy, reference, tokenizer, test, config)
    metrics.update(
        unseen_base_likelihood_acc=before,
        unseen_reward_acc=after,
        unseen_users=len(eval_users),
        unseen_pairs=len(test),
        seconds=time.time() - started,
    )
    meta = AdapterMeta(
        kind="fspo",
        base_model=base_id,
        shots=config.shots,
        loss=config.loss,
        beta=config.beta,
        data_version=data_version([p for u in sorted(train_users) for p in train_users[u]]),
        metrics=metrics,
    )
    if args.out:
        if config.full_finetune:  # written whole beside --out, then renamed into place (as save_adapter does)
            with staged_folder(args.out, FULL_MODEL_FILES, "full model") as staged:
                policy.save_pretrained(str(staged))
                tokenizer.save_pretrained(str(staged))
                write_meta(staged, meta)
        else:
            save_adapter(policy, args.out, meta)
    print_json({"population": args.population, "out": args.out, **metrics})
    return 0


def register(sub) -> None:
    p = sub.add_parser("fspo", help="FSPO: train a policy to act as any user's reward model from a few shots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", default="persona", choices=["persona", "ukp", "file"],
                   help="the users trained on: a synthetic persona population, the UKP annotators, or a preference file (--data); default %(default)s")
    p.add_argument("--groups", type=number(int, minimum=2, below=65), default=None, help="persona: number of (opposed) groups, 2 to 64 (default 2)")
    p.add_argument("--data", default=None, help="--population file: a preference JSONL/Parquet file")
    p.add_argument("--unseen-fraction", type=number(float, above=0, below=1), default=None,
                   help="--population file: share of users held out unseen (default 0.2): round(share x users), "
                        "spread evenly, at least one and never all")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=DATA_DIR_HELP)
    p.add_argument("--base", default="smollm2", help="`smollm2` or a transformers model folder")
    p.add_argument("--shots", type=number(int, minimum=0), default=4,
                   help="the user's own past comparisons shown in context before each held-out one (default %(default)s)")
    p.add_argument("--loss", default="ipo", choices=["ipo", "dpo"], help="preference loss on the held-out comparison (default %(default)s)")
    p.add_argument("--beta", type=number(float, above=0), default=0.1,
                   help="the loss's beta: how far the policy may move from pi_ref (smaller: further; default %(default)g)")
    p.add_argument("--lora-rank", type=number(int, minimum=1), default=8, help="LoRA rank (default %(default)s)")
    p.add_argument("--lora-layers", type=number(int, minimum=0), default=0, help="LoRA on the top N layers only (0 = all); the frozen "
                   "layers below are computed once per batch and shared with pi_ref (the fast CPU setting)")
    p.add_argument("--full", action="store_true", help="train every weight (GPU); saves a full model folder")
    p.add_argument("--lr", type=number(float, above=0), default=2e-4, help="AdamW learning rate (default %(default)g)")
    p.add_argument("--steps", type=number(int, minimum=1), default=100, help="optimizer steps (default %(default)s)")
    p.add_argument("--episodes", type=number(int, minimum=0), default=0, help="distinct training episodes, cycled through (0: steps x "
                   "batch size, each seen once); fewer than that with --lora-layers reuses the kept trunk states")
    p.add_argument("--batch-size", type=number(int, minimum=1), default=4, help="held-out comparisons per step")
    p.add_argument("--queries", type=number(int, minimum=1), default=1, help="held-out comparisons per set of shots: they share one "
                   "packed row, so the shots are computed once for all of them")
    p.add_argument("--max-response-tokens", type=number(int, minimum=1), default=96,
                   help="answers are cut to this many tokens in training and scoring (default %(default)s)")
    p.add_argument("--eval-users", type=number(int, minimum=0), default=20, help="unseen users scored")
    p.add_argument("--eval-per-user", type=number(int, minimum=1), default=5, help="held-out comparisons per unseen user")
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.add_argument("--out", default=None, help="artifact folder (peft adapter + pluralign.json)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.set_defaults(func=run)
