"""`pluralign train adapter`: one user's LoRA adapter, DPO on that user's comparisons, into the registry.

    OMP_NUM_THREADS=1 pluralign train adapter --user alice --tenant acme --data prefs.jsonl --registry adapters/
    pluralign train adapter --user alice --data prefs.jsonl --from-fspo artifacts/fspo-persona --steps 40
    pluralign train adapter --user alice --tenant acme --store ./data   # the service's data dir (or ./data/lancedb): its LanceDB
                                                                        # comparisons in, its adapters folder out
    pluralign train adapter --user alice --tenant acme --store s3://bucket/pluralign   # PLURALIGN_STORE_* settings, as serve's

Starting from an FSPO adapter keeps its few-shot format: each training pair is shown after the
same number of the user's own comparisons that FSPO was trained with. A fifth of the user's
comparisons (when there are at least 5) are held out and scored before and after training. The
adapter is saved in peft's format under `<registry>/<tenant>/<user>/` with its metadata. Without
`--registry` the registry is the service's adapters folder (`default_registry`).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from training.common import (
    SEED_HELP,
    StoreFolder,
    check_store_there,
    check_store_uri,
    check_writable,
    number,
    print_json,
    read_preference_file,
    seed_number,
    store_folder,
    store_options,
    tenant_name,
    user_id,
)


def default_registry(store: str | None) -> str:
    """Where the service reads users' adapters: its `adapters_dir` (PLURALIGN_ADAPTERS_DIR, or the
    PLURALIGN_CONFIG file), else `<data dir>/adapters`, the data dir being `store` (--store), else the
    service's (PLURALIGN_DATA_DIR, ./data)."""
    from service.settings import Settings

    return str(Settings.load(data_dir=store).adapters_path)


def user_comparisons(args: argparse.Namespace, found: StoreFolder | None):
    """The user's untied comparisons, from a preference file or from the service's LanceDB store (`found`, --store's)."""
    from pluralign.data.record import Preference

    if found is not None:
        from pluralign.embed.encoders import make_encoder
        from pluralign.store import Store

        encoder = make_encoder(args.encoder)
        # only reads: the service may be running on that store (its purges are its own)
        store = Store(found.uri, encoder.encoder_id, encoder.dim, storage_options=store_options(found.uri), finish_purges=False)
        rows, _ = store.preferences_for(args.tenant, args.user)
        records = [
            Preference(user_id=args.user, prompt=r.prompt, chosen=r.chosen, rejected=r.rejected, tie=r.tie)
            for r in rows
            if r.rejected.strip() and r.prompt.strip() and r.chosen.strip()
        ]
        where = f"the store at {found.uri} (tenant {args.tenant!r})"
    elif args.data:
        records = read_preference_file("--data", args.data, default_user=args.user)  # a TRL file names no user: --user's
        where = args.data
    else:
        raise ValueError("give --data FILE or --store DATA_DIR")
    mine = [r for r in records if r.user_id == args.user and not r.tie]
    if not mine:
        raise ValueError(f"no comparisons of user {args.user!r} in {where}")
    return mine


def fspo_parent(folder: str):
    """The description of the FSPO adapter in `folder` (--from-fspo), or a ValueError naming the option:
    no adapter there, a damaged description, another schema (a later release's says so), or an adapter of
    another kind: a user's (a registry's folders hold them) would start this user's adapter from that user's
    weights, their comparisons kept in it after their own adapter is deleted."""
    from pluralign.policy.adapters import AdapterError, read_meta

    try:
        meta = read_meta(folder)
    except AdapterError as exc:  # its message starts with the folder
        raise ValueError(f"--from-fspo {exc}") from None
    if meta.kind != "fspo":
        whose = f"a user's adapter (user {meta.user!r}, tenant {meta.tenant!r})" if meta.kind == "user" else f"a {meta.kind!r} adapter"
        raise ValueError(f"--from-fspo {folder} holds {whose}, not an FSPO adapter (`pluralign train fspo --out`)")
    return meta


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pluralign.data.splits import hold_out
    from pluralign.policy.adapters import AdapterError, AdapterMeta, AdapterRegistry, data_version, load_adapter
    from pluralign.policy.fspo import (
        FSPOConfig,
        ReferencePolicy,
        add_lora,
        distinct_comparisons,
        episode,
        own_episodes,
        reward_accuracy,
        train,
    )
    from training.commands.train_fspo import load_base

    found = store_folder("--store", args.store) if args.store else None  # a data folder or its lancedb/: checked, not created
    if found is not None:
        check_store_uri("--store", found.uri)  # its settings, as `audit --store`'s: before any model loads
        check_store_there("--store", args.store, found.uri)  # an object store's prefix mistyped: no store made there
    # before any work: a bad environment is refused first
    registry = args.registry or default_registry(str(found.data_dir) if found and found.data_dir else None)
    # where the adapter goes and what it starts from, checked before the model loads and trains (minutes)
    check_writable("--registry" if args.registry else "the adapter registry", registry)
    parent = fspo_parent(args.from_fspo) if args.from_fspo else None
    comparisons = user_comparisons(args, found)
    random.Random(args.seed).shuffle(comparisons)
    n_test = len(comparisons) // 5 if len(comparisons) >= 5 else 0
    held_out, train_pairs = hold_out(comparisons, n_test)  # a repeated comparison is never held out against itself
    model, tokenizer, base_id = load_base(args.base)
    base_id = args.base_model_id or base_id
    shots = min(parent.shots if parent else 0, distinct_comparisons(train_pairs) - 1)  # a repeat is no other comparison
    config = FSPOConfig(
        shots=shots,
        loss=args.loss,
        beta=parent.beta if parent else args.beta,
        lora_rank=args.lora_rank,
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    episodes = own_episodes(train_pairs, shots, max(1, config.steps * config.batch_size // len(train_pairs)), args.seed)
    test = [episode(train_pairs[:shots], p) for p in held_out]

    if parent:
        try:
            policy, _ = load_adapter(model, args.from_fspo, base_id, trainable=True)
        except AdapterError as exc:  # weights cut short, another base model: its message starts with the folder
            raise ValueError(f"--from-fspo {exc}") from None
    else:
        policy = add_lora(model, config)
    reference = ReferencePolicy(policy)
    started = time.time()
    before = reward_accuracy(policy, reference, tokenizer, test, config) if test else None  # none held out: not measured (null)
    bar = tqdm(total=config.steps, desc=f"adapter {args.user}", file=sys.stderr, disable=not sys.stderr.isatty())
    metrics = train(policy, reference, tokenizer, episodes, config, on_step=lambda step, s: bar.update())
    bar.close()
    after = reward_accuracy(policy, reference, tokenizer, test, config) if test else None
    metrics.update(
        comparisons=len(train_pairs),
        held_out=len(held_out),
        held_out_acc_before=before,
        held_out_acc_after=after,
        seconds=time.time() - started,
    )
    meta = AdapterMeta(
        kind="user",
        base_model=base_id,
        shots=shots,
        loss=config.loss,
        beta=config.beta,
        data_version=data_version(train_pairs),
        metrics=metrics,
        parent=parent.data_version if parent else None,
    )
    folder = AdapterRegistry(registry).save(args.tenant, args.user, policy, meta)
    print_json({"tenant": args.tenant, "user": args.user, "adapter": str(folder), **metrics})
    return 0


def register(sub) -> None:
    p = sub.add_parser("adapter", help="train one user's LoRA adapter (DPO) and store it in the adapter registry", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--user", required=True, type=user_id, help="the end user whose comparisons train the adapter (the API's `user`)")
    p.add_argument("--tenant", default="default", type=tenant_name, help="the user's tenant, as in the service (default %(default)s)")
    p.add_argument("--data", default=None, help="preference JSONL/Parquet file holding the user's comparisons (rows without `user_id`, as in a TRL dataset, are --user's)")
    p.add_argument("--store", default=None, help="the service's data folder (or the lancedb/ folder in it): read its LanceDB store, save to its "
                                                 "adapters/; or its object-store URI (s3://...), reached with the PLURALIGN_STORE_* settings as `serve` does")
    p.add_argument("--encoder", default="minilm", help="--store: the encoder the store was built with")
    p.add_argument(
        "--registry", default=None,
        help="adapter registry folder (default: where the service reads adapters, $PLURALIGN_ADAPTERS_DIR, else <store or $PLURALIGN_DATA_DIR or ./data>/adapters)"
    )
    p.add_argument("--from-fspo", default=None, help="start from this FSPO adapter folder (and use its shots)")
    p.add_argument("--base", default="smollm2", help="`smollm2` or a transformers model folder")
    p.add_argument("--base-model-id", default=None,
                   help="the base model's name the adapter records (default: SmolLM2's, or --base's folder name): the name a "
                        "generation server serving --base gives it (PLURALIGN_GENERATOR_MODEL), which the service checks")
    p.add_argument("--loss", default="dpo", choices=["ipo", "dpo"], help="preference loss (default %(default)s)")
    p.add_argument("--beta", type=number(float, above=0), default=0.1,
                   help="the loss's beta: how far the adapter may move the base model (smaller: further; default %(default)g)")
    p.add_argument("--lora-rank", type=number(int, minimum=1), default=8, help="LoRA rank (default %(default)s)")
    p.add_argument("--lr", type=number(float, above=0), default=2e-4, help="AdamW learning rate (default %(default)g)")
    p.add_argument("--steps", type=number(int, minimum=1), default=40, help="optimizer steps (default %(default)s)")
    p.add_argument("--batch-size", type=number(int, minimum=1), default=4, help="comparisons per step (default %(default)s)")
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.set_defaults(func=run)
