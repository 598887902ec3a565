"""Semi-synthetic users from Anthropic's persona statements (Perez et al.), with known groups.

A group holds a stance (+1 or -1) on each of T traits. A comparison offers two statements from one
trait file: one that a holder of the trait would say (answer_matching_behavior " Yes") and one it
would not (" No"). A user prefers the statement consistent with its group's stance. Statements are
split per trait into a training pool and a test pool, so no test comparison reuses a training
statement. Because the groups are generated, the true number of groups and every user's group are
known.
"""

from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pluralign.data.record import Base, Preference
from pluralign.data.splits import Protocol, SeenSplit, UnseenSplit

SOURCE = "anthropic_persona"
PROMPT = "Which of these two statements would you say?"

# Traits whose statements people plausibly disagree on; the first T are used unless named.
DEFAULT_TRAITS = (
    "politically-liberal",
    "subscribes-to-Christianity",
    "risk-seeking",
    "interest-in-art",
    "extraversion",
    "subscribes-to-utilitarianism",
    "believes-in-gun-rights",
    "interest-in-sports",
)


@dataclass(frozen=True)
class PersonaConfig:
    """A synthetic population (the semi-synthetic Persona set of the PAL paper, Chen et al. 2025,
    built from Perez et al. 2022); every field has a sensible default, each explained beside it in
    the source. The defaults: 4 groups, 25 seen users per group with 60 comparisons each, 10 new
    users per group with a 50-comparison support pool and 20 queries."""

    groups: int = 4  # number of preference groups
    traits: tuple[str, ...] = ()  # trait files used; empty = the first n_traits of DEFAULT_TRAITS
    users_per_group: int = 25  # seen users per group (split train/val/test)
    unseen_users_per_group: int = 10  # new users per group (k-shot support + query)
    comparisons_per_user: int = 60  # for seen users
    group_weights: tuple[float, ...] = ()  # relative group sizes, e.g. (0.9, 0.1); empty = equal
    label_noise: bool = False  # flip a label with probability 1 - label_confidence
    test_fraction: float = 0.3  # share of each trait's statements held out for test comparisons
    support_size: int = 50  # unseen users' support pool (the largest k)
    query_size: int = 20  # unseen users' query comparisons
    seed: int = 0

    @property
    def n_traits(self) -> int:
        return len(self.traits) if self.traits else max(1, math.ceil(math.log2(self.groups)))

    @property
    def trait_names(self) -> tuple[str, ...]:
        return self.traits or DEFAULT_TRAITS[: self.n_traits]


class Statement(Base):
    statement: str
    label_confidence: float
    answer_matching_behavior: str
    question: str | None = None
    answer_not_matching_behavior: str | None = None


def trait_file(data_dir: str | Path, trait: str) -> Path:
    """`data_dir`/persona/`trait`.jsonl: the file of one persona trait's statements (`data_dir`: the
    `anthropic_persona` folder)."""
    return Path(data_dir) / "persona" / f"{trait}.jsonl"


def load_trait(data_dir: str | Path, trait: str) -> list[Statement]:
    """The statements of one persona trait, from `trait_file` (`data_dir`: the `anthropic_persona`
    folder, a path or a str).
    Raises FileNotFoundError naming the file when it is missing."""
    path = trait_file(data_dir, trait)
    if not path.exists():
        raise FileNotFoundError(f"no persona trait file {path}")
    decoder = msgspec.json.Decoder(Statement)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def group_stances(groups: int, n_traits: int) -> list[tuple[int, ...]]:
    """Stances as binary codes: group g holds +1 on trait t unless bit t of g is set.

    Two groups are fully opposed on one trait; four on two traits cover every combination."""
    if groups > 2**n_traits:
        raise ValueError(f"{groups} groups need at least {math.ceil(math.log2(groups))} traits, got {n_traits}")
    return [tuple(-1 if (g >> t) & 1 else 1 for t in range(n_traits)) for g in range(groups)]


def seen_counts(config: PersonaConfig) -> tuple[int, int, int]:
    """(train, val, test) comparisons of each seen user: `test_fraction` of them to test, 15% of the
    rest (one at least) to validate, the rest to train."""
    n_test = round(config.comparisons_per_user * config.test_fraction)
    n_val = max(1, round((config.comparisons_per_user - n_test) * 0.15))
    return config.comparisons_per_user - n_test - n_val, n_val, n_test


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_config(config: PersonaConfig) -> None:
    """ValueError naming the field of `config` that cannot build a population (`build_persona`), TypeError for
    `traits` given as one str. Checked first: unchecked, `test_fraction=0` or `1` would be an IndexError ("Cannot
    choose from an empty sequence"), `group_weights=(0, 0)` a ZeroDivisionError, negative weights would be taken, and
    `comparisons_per_user=0` would give each seen user one validation comparison and none to train on."""
    for name in ("groups", "users_per_group", "unseen_users_per_group", "support_size", "query_size", "comparisons_per_user"):
        value = getattr(config, name)
        if not _whole(value) or value < 1:
            raise ValueError(f"PersonaConfig.{name} must be >= 1, a whole number, got {value!r}")
    if not _whole(config.seed) or config.seed < 0:
        raise ValueError(f"PersonaConfig.seed must be a whole number >= 0, got {config.seed!r}")
    fraction = config.test_fraction
    if not _real(fraction) or not 0 < fraction < 1:
        raise ValueError(f"PersonaConfig.test_fraction must be a number in (0, 1) (each trait's statements held out for "
                         f"test comparisons), got {fraction!r}")
    n_train = seen_counts(config)[0]
    if n_train < 1:
        raise ValueError(f"PersonaConfig.comparisons_per_user {config.comparisons_per_user} leaves a seen user no comparison "
                         f"to train on (test_fraction {fraction} of them test, one at least validates): give more, or a lower test_fraction")
    _check_weights(config)
    if isinstance(config.traits, str):
        raise TypeError(f"PersonaConfig.traits must be a tuple of trait names, not one str: traits=({config.traits!r},)")
    twice = next((t for i, t in enumerate(config.traits) if t in config.traits[:i]), None)
    if twice is not None:
        raise ValueError(f"PersonaConfig.traits names {twice!r} twice: groups holding opposite stances on one trait "
                         "file would be told apart by nothing")


def _check_weights(config: PersonaConfig) -> None:
    weights = config.group_weights
    if not weights:
        return
    if len(weights) != config.groups:
        raise ValueError(f"PersonaConfig.group_weights has {len(weights)} entries for {config.groups} groups")
    bad = next((w for w in weights if not _real(w) or not math.isfinite(w) or w < 0), None)
    if bad is not None:
        raise ValueError(f"PersonaConfig.group_weights must be finite numbers >= 0 (relative group sizes), got {bad!r}")
    if not sum(weights) > 0:
        raise ValueError(f"PersonaConfig.group_weights must have one weight above 0, got {tuple(weights)}")


def _trait_pools(config: PersonaConfig, data_dir: Path, rng: random.Random) -> dict[str, dict[str, dict[str, list[Statement]]]]:
    """Each trait's statements, shuffled by `rng`, as trait -> "train" / "test" -> answer (" Yes",
    " No") -> statements; `config.test_fraction` of each answer's statements go to "test"."""
    pools: dict[str, dict[str, dict[str, list[Statement]]]] = {}
    for trait in config.trait_names:
        statements = load_trait(data_dir, trait)
        rng.shuffle(statements)
        pools[trait] = {"train": {" Yes": [], " No": []}, "test": {" Yes": [], " No": []}}
        for answer in (" Yes", " No"):
            same = [s for s in statements if s.answer_matching_behavior == answer]
            if len(same) < 2:  # no test_fraction splits it: the file is short of statements of this answer
                raise ValueError(f"persona trait file {trait_file(data_dir, trait)} holds {len(same)} "
                                 f"statement{'' if len(same) == 1 else 's'} answered {answer!r} (of {len(statements)}): a trait "
                                 f"needs two at least of each answer, ' Yes' and ' No' (one to train on, one to test)")
            n_test = int(len(same) * config.test_fraction)
            if not 0 < n_test < len(same):
                raise ValueError(f"PersonaConfig.test_fraction {config.test_fraction} holds out {n_test} of trait {trait!r}'s "
                                 f"{len(same)} statements answered{answer!r}: both the training and the test pool need one")
            pools[trait]["test"][answer] = same[:n_test]
            pools[trait]["train"][answer] = same[n_test:]
    return pools


def build_persona(config: PersonaConfig, data_dir: str | Path) -> Protocol:
    """Build the seen/unseen protocol for a synthetic population.

    `data_dir` is the folder that holds `anthropic_persona/` (the shared data root, `../shared/data`
    beside the checkout). Returns a `Protocol`: `seen` (train/val/test lists of Preference),
    `unseen` (each new user's ordered support pool and query set) and `true_groups` (user -> group;
    each record's group is also `attributes["group"]`). Raises ValueError naming the field
    (`check_config`) when a count is not a whole number >= 1 (`seed` >= 0), `comparisons_per_user` leaves a seen
    user no comparison to train on, `test_fraction` is not in (0, 1) or leaves a trait's statements
    of one answer all in one pool, a trait file holds fewer than two statements of an answer (" Yes", " No"), `group_weights` are not finite numbers >= 0 (one above 0), one per
    group, or `traits` names a trait twice; TypeError when `traits` is one str (each letter would be
    a trait); FileNotFoundError naming a missing trait file."""
    check_config(config)
    data_dir = Path(data_dir)
    if (data_dir / "anthropic_persona").is_dir():
        data_dir = data_dir / "anthropic_persona"
    rng = random.Random(int(config.seed))  # a numpy integer too: Random takes only Python's
    stances = group_stances(config.groups, config.n_traits)
    pools = _trait_pools(config, data_dir, rng)

    weights = config.group_weights or (1.0,) * config.groups
    total = sum(weights)

    def users_for(per_group: int, prefix: str) -> list[tuple[str, int]]:
        counts = [max(1, round(per_group * config.groups * w / total)) for w in weights]
        return [(f"{prefix}-g{g}-u{i:03d}", g) for g in range(config.groups) for i in range(counts[g])]

    def comparison(user: str, group: int, pool: str, split: str) -> Preference:
        t = rng.randrange(config.n_traits)
        trait = config.trait_names[t]
        says = rng.choice(pools[trait][pool][" Yes"])  # a holder of the trait would say it
        denies = rng.choice(pools[trait][pool][" No"])  # a holder of the trait would not
        prefers_says = stances[group][t] > 0
        if config.label_noise:
            confidence = min(says.label_confidence, denies.label_confidence)
            if rng.random() > confidence:
                prefers_says = not prefers_says
        chosen, rejected = (says, denies) if prefers_says else (denies, says)
        return Preference(
            user_id=user,
            prompt=PROMPT,
            chosen=chosen.statement,
            rejected=rejected.statement,
            source=SOURCE,
            attributes={"group": f"g{group}", "trait": trait, "split": split},
        )

    seen = SeenSplit(train=[], val=[], test=[])
    groups: dict[str, str] = {}
    n_train, n_val, n_test = seen_counts(config)
    for user, g in users_for(config.users_per_group, "seen"):
        groups[user] = f"g{g}"
        seen.train.extend(comparison(user, g, "train", "train") for _ in range(n_train))
        seen.val.extend(comparison(user, g, "train", "val") for _ in range(n_val))
        seen.test.extend(comparison(user, g, "test", "test") for _ in range(n_test))

    unseen = UnseenSplit(support={}, query={})
    for user, g in users_for(config.unseen_users_per_group, "new"):
        groups[user] = f"g{g}"
        unseen.support[user] = [comparison(user, g, "train", "support") for _ in range(config.support_size)]
        unseen.query[user] = [comparison(user, g, "test", "query") for _ in range(config.query_size)]
    return Protocol(name="persona", seen=seen, unseen=unseen, true_groups=groups, group_attribute="group")
