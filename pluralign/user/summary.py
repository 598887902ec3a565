"""What the user model believes about a user (or a prototype), in words a person can check.

- `feature_beliefs`: for each named feature, the sign, size and confidence of the user's weight,
  read off the Laplace posterior (mean / sd): "prefers shorter answers (confident)".
- `describe_prototypes`: each prototype described by the stored answers it scores highest and
  lowest, from the service's own data (never generated text).

Confidence is the posterior's z = |mean| / sd of the feature's weight: `confident` at z >= 2 (the
sign is wrong with posterior probability below ~2%), `likely` at z >= 1 (below ~16%), else
`uncertain` (the sign is shown, but the data do not settle it). Below z = 0.25 (a sign the
posterior gives less than 60%, such as the prior's 0 +- 5 of a feature nothing has informed) no
direction is shown at all: "no preference learned yet between longer answers and shorter answers".

- `joint_beliefs`: named features the user's comparisons moved together (`pluralign.user.collinear`)
  cannot be told apart, so each one's marginal is wide however plain the user's direction along them
  is. For each such group the summary names the features and gives the posterior probability of the
  user's direction along them jointly, labelled on the same scale: `confident` at probability >=
  Phi(2) (~0.977), `likely` at >= Phi(1) (~0.841), `uncertain` below, and no direction below
  Phi(0.25) (~0.599). Each feature of a group keeps its own marginal (and says it cannot be told apart).
  A group each of whose features the comparisons settle on their own (`likely` or more; for a stated
  feature, what the comparisons alone say) is one they did tell apart, however nearly the features
  moved together: it is not shown, and each feature speaks for itself (`unresolved_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist

import msgspec
import numpy as np

from pluralign.data.text import answer_key, shorten
from pluralign.user.collinear import CollinearFeatures
from pluralign.user.features import FEATURE_DESCRIPTIONS, FEATURE_NAMES
from pluralign.user.model import UserState

CONFIDENT_Z = 2.0
LIKELY_Z = 1.0
LEANING_Z = 0.25  # below it the posterior gives either sign under 60%: no direction is claimed
_PHI = NormalDist().cdf


class FeatureBelief(msgspec.Struct, kw_only=True):
    """One named feature: the user's weight on it and what that means."""

    feature: str
    direction: str | None  # "more" or "less": the sign of the weight; None below z = 0.25 (no preference learned)
    weight: float  # posterior mean (reward per unit of the feature; features move ~1 between answers)
    sd: float  # posterior standard deviation
    confidence: str  # "confident" (z >= 2), "likely" (z >= 1) or "uncertain"
    stated: str | None = None  # the user's own stated direction on this feature, if any
    # for a stated feature: what the user's comparisons alone say ("more (likely)"), so a statement
    # their choices contradict is visible even where the strong prior still holds the weight
    from_comparisons: str | None = None
    text: str  # e.g. "prefers shorter answers (confident)", "no preference learned yet between ..."
    # the named features the user's comparisons moved together with this one, so they cannot tell
    # which of them the user cares about (`joint` in the summary has their direction jointly)
    collinear_with: list[str] = []


class JointBelief(msgspec.Struct, kw_only=True):
    """Named features the user's comparisons moved together, and the user's direction along them jointly."""

    features: list[str]  # two or more named features, in FEATURE_NAMES order
    direction: dict[str, str] | None  # feature -> "more" / "less" along the user's joint direction; None if the posterior hardly leans
    probability: float  # posterior probability of that joint direction (of the likelier side when `direction` is None)
    confidence: str  # "confident" (probability >= Phi(2)), "likely" (>= Phi(1)) or "uncertain"
    cosine: float  # how nearly the comparisons moved the features in proportion (smallest |cosine| of two features' differences)
    text: str  # e.g. "prefers shorter answers with shorter, plainer words (confident): length and word length moved together ..."


def z_score(weight: float, sd: float) -> float:
    """|weight| / sd; infinite for a point mass away from 0, 0 for one at 0."""
    return abs(weight) / sd if sd > 0 else float("inf") if weight else 0.0


def confidence(weight: float, sd: float) -> str:
    z = z_score(weight, sd)
    return "confident" if z >= CONFIDENT_Z else "likely" if z >= LIKELY_Z else "uncertain"


def direction(weight: float, sd: float) -> str | None:
    """"more" or "less" by the weight's sign, or None where the posterior hardly leans (z < LEANING_Z)."""
    return None if z_score(weight, sd) < LEANING_Z else "more" if weight > 0 else "less"


def spoken(name: str) -> str:
    return name.replace("_", " ")


def _comparisons(n: int, verb: str = "") -> str:
    """ "1 comparison", "400 comparisons"; with a verb, agreeing: "1 comparison points", "2 comparisons point"."""
    counted = f"{n} comparison" if n == 1 else f"{n} comparisons"
    return counted if not verb else f"{counted} {verb}s" if n == 1 else f"{counted} {verb}"


def _together(names: Sequence[str]) -> str:
    words = [spoken(n) for n in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def settled_by_comparisons(state: UserState, name: str) -> bool:
    """Whether the user's comparisons settle the named feature's direction on their own (`likely` or
    more): for a stated feature what they alone say (`state.from_comparisons`), else its posterior."""
    weight, sd = state.from_comparisons.get(name) or state.coefficient(name)
    return confidence(weight, sd) != "uncertain"


def unresolved_groups(state: UserState) -> list[CollinearFeatures]:
    """The groups of `state.collinear` whose features the comparisons cannot tell apart: all but those
    each of whose features they settle on its own (`settled_by_comparisons`). Nearly proportional
    differences (|cosine| >= 0.9) still leave the features apart when the comparisons are many and
    varied enough: a user who likes longer answers with plainer words, over answers whose length and
    word length rose together, is confident on each (tests/service/test_elicitation.py)."""
    return [g for g in state.collinear if not all(settled_by_comparisons(state, f) for f in g.features)]


def _group_contradicts(state: UserState, name: str, said: str) -> bool:
    """Whether the comparisons alone, along the joint direction of the group holding `name`, lean
    against the stated direction `said` at least `likely` (probability >= Phi(1))."""
    for group in state.collinear:
        if name in group.features and group.p_more_from_comparisons is not None:
            component = group.direction[group.features.index(name)]
            p_more = group.p_more_from_comparisons if component > 0 else 1.0 - group.p_more_from_comparisons
            return (p_more if said == "less" else 1.0 - p_more) >= _PHI(LIKELY_Z)
    return False


def joint_beliefs(state: UserState) -> list[JointBelief]:
    """Each group of named features the user's comparisons moved together and cannot tell apart
    (`unresolved_groups` of `state.collinear`, fitted with the state), with the posterior probability
    of the user's direction along them jointly."""
    out = []
    for group in unresolved_groups(state):
        p = max(group.p_more, 1.0 - group.p_more)
        level = "confident" if p >= _PHI(CONFIDENT_Z) else "likely" if p >= _PHI(LIKELY_Z) else "uncertain"
        sign = 1.0 if group.p_more >= 0.5 else -1.0
        among = f"{group.moved_in} of your {_comparisons(state.n)}" if 0 < group.moved_in < state.n else f"your {_comparisons(state.n)}"
        why = (f"{_together(group.features)} moved together in {among}, "
               f"so they cannot tell which of {'the two' if len(group.features) == 2 else 'these'} you care about")
        if p < _PHI(LEANING_Z):
            direction, text = None, f"no preference learned yet along {_together(group.features)} together: {why}"
        else:
            direction = {f: "more" if sign * v > 0 else "less" for f, v in zip(group.features, group.direction, strict=True)}
            said = [FEATURE_DESCRIPTIONS[f][0 if d == "more" else 1] for f, d in direction.items()]
            text = f"prefers {said[0]} with {' and '.join(said[1:])} ({level}): {why}"
        out.append(JointBelief(features=list(group.features), direction=direction, probability=round(p, 4),
                               confidence=level, cosine=group.cosine, text=text))
    return out


def written_sentences(beliefs: Sequence[FeatureBelief], joint: Sequence[JointBelief]) -> list[str]:
    """The summary's sentences on how answers are written: each joint belief's that is not `uncertain`
    first, then each feature's that is stated or not `uncertain`, save one that a joint sentence said
    gives the feature's own direction (it speaks for it). A settled feature of a group whose sentence is
    not said, or gives it the other direction, keeps its own."""
    said = [j for j in joint if j.confidence != "uncertain"]
    covered = {f: d for j in said for f, d in (j.direction or {}).items()}  # feature -> its direction in a said sentence
    return [j.text for j in said] + [b.text for b in beliefs
                                     if b.stated or (b.confidence != "uncertain" and covered.get(b.feature) != b.direction)]


def feature_beliefs(state: UserState, stated: Mapping[str, str] | None = None) -> list[FeatureBelief]:
    """The F named features' beliefs, most certain first (by z = |mean| / sd). On each stated
    feature it also reports what the user's comparisons alone say (`state.from_comparisons`, fitted
    with the state: reading a summary fits nothing); on a feature the comparisons moved together with
    others and cannot tell apart from them (`unresolved_groups`), which ones."""
    out = []
    stated = stated or {}
    together = {f: [g for g in group.features if g != f] for group in unresolved_groups(state) for f in group.features}
    for name in FEATURE_NAMES:
        weight, sd = state.coefficient(name)
        sign, level = direction(weight, sd), confidence(weight, sd)
        more, less = FEATURE_DESCRIPTIONS[name]
        text = f"no preference learned yet between {more} and {less}" if sign is None else \
            f"prefers {more if sign == 'more' else less} ({level})"
        own = None
        if name in stated and state.n and name in state.from_comparisons:
            w, s_ = state.from_comparisons[name]
            own = f"{direction(w, s_) or 'none'} ({confidence(w, s_)})"
            said = FEATURE_DESCRIPTIONS[name][0 if stated[name] == "more" else 1]
            if (w >= 0) != (stated[name] == "more") and confidence(w, s_) != "uncertain":
                text += f"; you said you prefer {said}, but your {_comparisons(state.n, 'point')} the other way"
            else:
                text += f"; you said you prefer {said}"
        elif name in stated:
            text += f"; you said you prefer {FEATURE_DESCRIPTIONS[name][0 if stated[name] == 'more' else 1]}"
        if name in together:
            text += f"; your comparisons moved it together with {_together(together[name])}, so they cannot tell them apart"
            if name in stated and "point the other way" not in text and _group_contradicts(state, name, stated[name]):
                text += f", and along them together your {_comparisons(state.n, 'point')} the other way"
        out.append(FeatureBelief(
            feature=name, direction=sign, weight=round(weight, 4), sd=round(sd, 4), confidence=level,
            stated=stated.get(name), from_comparisons=own, text=text, collinear_with=together.get(name, []),
        ))
    return sorted(out, key=lambda b: -abs(b.weight) / max(b.sd, 1e-12))


class Example(msgspec.Struct, kw_only=True):
    prompt: str
    answer: str  # cut to `max_chars`
    score: float  # the prototype's reward of the answer


class PrototypeDescription(msgspec.Struct, kw_only=True):
    prototype: int
    highest: list[Example]  # the stored answers it scores highest, best first
    lowest: list[Example]  # and lowest, worst first


def describe_prototypes(
    scores: np.ndarray, prompts: Sequence[str], answers: Sequence[str], per_side: int = 2, max_chars: int = 240
) -> list[PrototypeDescription]:
    """scores (M, K): each of M stored answers (with its prompt) scored by each prototype's reward.
    Prototype k is described by its `per_side` highest- and lowest-scored answers, among answers
    whose text differs. Rewards are compared within a prototype only (each prototype's scale is its
    own). Raises ValueError on mismatched lengths."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or len(prompts) != len(scores) or len(answers) != len(scores):
        raise ValueError(f"scores {scores.shape} for {len(prompts)} prompts and {len(answers)} answers")
    keep = list({answer_key(a): i for i, a in enumerate(answers)}.values())  # one row per distinct answer (NFC = NFD)
    cut = lambda t: shorten(t, max_chars)  # noqa: E731  (between graphemes)
    out = []
    for k in range(scores.shape[1]):
        order = sorted(keep, key=lambda i: -scores[i, k])
        n = min(per_side, len(order) // 2)
        ex = lambda i: Example(prompt=cut(prompts[i]), answer=cut(answers[i]), score=round(float(scores[i, k]), 4))  # noqa: E731, B023
        out.append(PrototypeDescription(prototype=k, highest=[ex(i) for i in order[:n]],
                                        lowest=[ex(i) for i in reversed(order[len(order) - n :])]))
    return out
