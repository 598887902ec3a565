"""What the user model believes about a user (or a prototype), in words a person can check.

- `feature_beliefs`: for each named feature, the sign, size and confidence of the user's weight:
  "prefers shorter answers (confident)". Size is the Laplace posterior's mean and sd.
- `describe_prototypes`: each prototype described by the stored answers it scores highest and
  lowest, from the service's own data (never generated text).
- `nearest_prototype`: the prototype the user weighs most, with the posterior probability that it is
  the one (labelled on the features' scale); None for a user nothing was learned from, whose
  posterior is the prior and so places them nowhere.

Confidence is the posterior probability p of the weight's sign, integrated along the feature's axis at
the fit (`pluralign.user.collinear.feature_signs`): `confident` at p >= Phi(2) (~0.977: the sign is wrong
with posterior probability below ~2%), `likely` at p >= Phi(1) (~0.841), else `uncertain` (the sign is
shown, but the data do not settle it). Below Phi(0.25) (~0.599, such as the prior's 0 +- 5 of a feature
nothing has informed) no direction is shown at all: "no preference learned yet between longer answers and
shorter answers". For a Gaussian posterior these are the Laplace z = |mean| / sd >= 2, >= 1, >= 0.25 (a
state fitted before p was kept reads them so); for a user whose comparisons all agree the Laplace z stays
near 1 however many there are, while p goes to 1 (a feature of a collinear group keeps the Laplace p:
`feature_signs`). Under the wide prior (sd 5: it expects strong
preferences) one or two agreeing comparisons already make p `likely`: a feature's sentence then says how
few comparisons moved it (fewer than FEW_COMPARISONS), as a group's says how many moved its features.

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
from pluralign.user.active import posterior_samples
from pluralign.user.collinear import CollinearFeatures
from pluralign.user.features import FEATURE_DESCRIPTIONS, FEATURE_NAMES, FEATURE_TRAITS
from pluralign.user.model import UserState, is_probability

CONFIDENT_Z = 2.0
LIKELY_Z = 1.0
LEANING_Z = 0.25  # below it the posterior gives either sign under 60%: no direction is claimed
_PHI = NormalDist().cdf


class FeatureBelief(msgspec.Struct, kw_only=True):
    """One named feature: the user's weight on it and what that means."""

    feature: str
    direction: str | None  # "more" or "less": the likelier sign of the weight; None where `probability` < Phi(0.25) (no preference learned)
    weight: float  # posterior mean (reward per unit of the feature; features move ~1 between answers)
    sd: float  # posterior standard deviation
    confidence: str  # "confident" (probability >= Phi(2)), "likely" (>= Phi(1)) or "uncertain"
    stated: str | None = None  # the user's own stated direction on this feature, if any
    # for a stated feature: what the user's comparisons alone say ("more (likely)"), so a statement
    # their choices contradict is visible even where the strong prior still holds the weight
    from_comparisons: str | None = None
    text: str  # e.g. "prefers shorter answers (confident)", "no preference learned yet between ..."
    # the named features the user's comparisons moved together with this one, so they cannot tell
    # which of them the user cares about (`joint` in the summary has their direction jointly)
    collinear_with: list[str] = []
    # posterior probability of `direction` (of the likelier sign when it is None), integrated along the
    # feature's axis at the fit (`UserState.p_more`); a state fitted before it was kept: Phi(|weight| / sd)
    probability: float = 0.5
    # how many of the user's comparisons (and ties) moved this feature (None: a state fitted before it was kept)
    moved_in: int | None = None
    # the user's answers that differ in this feature, ties among them (`UserState.tied_in`), show no direction (`direction`
    # null): they showed no preference on it, which is not the same as nothing learned (`no_preference_shown`)
    no_preference_shown: bool = False


class JointBelief(msgspec.Struct, kw_only=True):
    """Named features the user's comparisons moved together, and the user's direction along them jointly."""

    features: list[str]  # two or more named features, in FEATURE_NAMES order
    direction: dict[str, str] | None  # feature -> "more" / "less" along the user's joint direction; None if the posterior hardly leans
    probability: float  # posterior probability of that joint direction (of the likelier side when `direction` is None)
    confidence: str  # "confident" (probability >= Phi(2)), "likely" (>= Phi(1)) or "uncertain"
    cosine: float  # how nearly the comparisons moved the features in proportion (smallest |cosine| of two features' differences)
    text: str  # e.g. "prefers shorter answers with shorter, plainer words (confident): length and word length moved together ..."


FEW_COMPARISONS = 5  # a feature's sentence says how many comparisons moved it when fewer did (`feature_beliefs`)


def _probability(name: str, p: float) -> float:
    """`p` when it is a probability in [0, 1] (`pluralign.user.model.PROBABILITY_ROUNDING` past either end is taken as that end: an
    integrated probability can land an ulp past 1); else a ValueError naming `name`: a NaN read as "less"
    (`leaning`) and 2.0 as "confident" (`level`), said of a user whose state held no probability at all."""
    if not is_probability(p):
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {p!r}")
    return min(max(float(p), 0.0), 1.0)


def level(p: float) -> str:
    """The confidence of a direction whose posterior probability is p (of the likelier side): `confident`
    at p >= Phi(2) (~0.977), `likely` at >= Phi(1) (~0.841), else `uncertain` (a Gaussian's z >= 2, >= 1).
    Raises ValueError naming `p` when it is not a probability (`_probability`)."""
    p = _probability("p", p)
    return "confident" if p >= _PHI(CONFIDENT_Z) else "likely" if p >= _PHI(LIKELY_Z) else "uncertain"


def leaning(p_more: float) -> str | None:
    """"more" or "less" by the likelier sign, or None where the posterior hardly leans (either sign below Phi(0.25), ~0.6).
    Raises ValueError naming `p_more` when it is not a probability (`_probability`)."""
    p_more = _probability("p_more", p_more)
    return None if max(p_more, 1.0 - p_more) < _PHI(LEANING_Z) else "more" if p_more >= 0.5 else "less"


def feature_p_more(state: UserState, name: str) -> float:
    """The posterior probability that the user's weight on the named feature is positive: integrated at the
    fit (`UserState.p_more`), or for a state fitted before it was kept the Laplace Phi(mean / sd)."""
    if name in state.p_more:
        return state.p_more[name]
    return _gaussian_p_more(*state.coefficient(name))


def _gaussian_p_more(weight: float, sd: float) -> float:
    """P(weight > 0) under a Gaussian of that mean and sd (the Laplace posterior's); a point mass at 0: 0.5."""
    return _PHI(weight / sd) if sd > 0 else 0.5 if weight == 0 else float(weight > 0)


def p_more_from_comparisons(state: UserState, name: str) -> float | None:
    """For a stated feature, and for every feature of a user who stated a preference, what the
    comparisons alone say: P(weight > 0) fitted without the stated prior (`UserState.p_more_from_comparisons`; for a
    state fitted before it was kept, the Laplace one of `UserState.from_comparisons`); None without comparisons, and
    for a feature of a user who stated nothing (their posterior is the comparisons' own)."""
    if name in state.p_more_from_comparisons:
        return state.p_more_from_comparisons[name]
    if name not in state.from_comparisons:
        return None
    return _gaussian_p_more(*state.from_comparisons[name])


def spoken(name: str) -> str:
    return name.replace("_", " ")


def _comparisons(n: int, verb: str = "", ties: int = 0) -> str:
    """ "1 comparison", "400 comparisons"; with a verb, agreeing: "1 comparison points", "2 comparisons point". With
    `ties` (fitted beside the comparisons, `UserState.ties`), those too: "2 comparisons and 1 tie",
    "5 ties" (none with a winner), "1 comparison and 1 tie point"."""
    counted = f"{n} comparison" if n == 1 else f"{n} comparisons"
    if ties:
        tied = f"{ties} tie" if ties == 1 else f"{ties} ties"
        counted = f"{counted} and {tied}" if n else tied
    return counted if not verb else f"{counted} {verb}s" if n + ties == 1 else f"{counted} {verb}"


def _answers(state: UserState, verb: str = "") -> str:
    """The user's fitted answers in words, `_comparisons` of the state's comparisons and ties: "your" reads before it."""
    return _comparisons(state.n, verb, state.ties)


def _answer_kinds(state: UserState) -> str:
    """ "comparisons", "comparisons and ties" or "ties": what the state was fitted on, without numbers, each kind
    agreeing with its count ("comparison" after one comparison, "comparison and ties", never "your comparisons
    moved it" of one)."""
    kinds = [word if count == 1 else f"{word}s" for word, count in (("comparison", state.n), ("tie", state.ties)) if count]
    return " and ".join(kinds) or "comparisons"


def _they(state: UserState) -> str:
    """The pronoun of the user's fitted answers: "it" for one, "they" for more."""
    return "it" if state.answers == 1 else "they"


def _together(names: Sequence[str]) -> str:
    return _listed([spoken(n) for n in names])


def settled_by_comparisons(state: UserState, name: str) -> bool:
    """Whether the user's comparisons settle the named feature's direction on their own (`likely` or
    more): what they alone say (`p_more_from_comparisons`: every feature's, once the user stated a preference, so a
    feature that took the evidence a pinned stated feature left is not settled by it), else its posterior."""
    p = p_more_from_comparisons(state, name)
    p = feature_p_more(state, name) if p is None else p
    return level(max(p, 1.0 - p)) != "uncertain"


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


def joint_beliefs(state: UserState, stated: Mapping[str, str] | None = None) -> list[JointBelief]:
    """Each group of named features the user's comparisons moved together and cannot tell apart
    (`unresolved_groups` of `state.collinear`, fitted with the state), with the posterior probability
    of the user's direction along them jointly. A group none of whose features is `stated`, while the user stated a
    preference on another, claims no more than the comparisons alone give that direction along it, as a single feature
    does (`_borrowed`): stated "longer" after 15 comparisons that chose the shorter answer, exclamations and contractions
    read "likely" (0.86) where the comparisons alone read 0.75 (trial16_52). A capped belief, a group's or a feature's, reports the
    comparisons' own side: none where they give either under Phi(0.25), the other one where they lean against the
    posterior, so `direction` and `probability` (the likelier side's) agree."""
    stated = stated or {}
    out = []
    for group in unresolved_groups(state):
        p = max(group.p_more, 1.0 - group.p_more)
        sign = 1.0 if group.p_more >= 0.5 else -1.0
        borrowed = _group_borrowed(group, stated, sign, p)
        if borrowed is not None:  # the comparisons' own side along the group: perhaps the other one
            p, sign = max(borrowed, 1.0 - borrowed), sign if borrowed >= 0.5 else -sign
        said_level = level(p)
        # `moved_in` counts the ties that moved the features too (`pluralign.user.collinear.joint_beliefs`)
        among = f"{group.moved_in} of your {_answers(state)}" if 0 < group.moved_in < state.n + state.ties else f"your {_answers(state)}"
        why = (f"{_together(group.features)} moved together in {among}, "
               f"so {_they(state)} cannot tell which of {'the two' if len(group.features) == 2 else 'these'} you care about")
        if p < _PHI(LEANING_Z):
            direction, text = None, f"no preference learned yet along {_together(group.features)} together: {why}"
        else:
            direction = {f: "more" if sign * v > 0 else "less" for f, v in zip(group.features, group.direction, strict=True)}
            text = f"prefers {_answers_with(direction)} ({said_level}): {why}"
        if borrowed is not None:
            text += _borrowed_clause(state, stated, "these features", direction is None, borrowed < 0.5)
        out.append(JointBelief(features=list(group.features), direction=direction, probability=round(p, 4),
                               confidence=said_level, cosine=group.cosine, text=text))
    return out


def _group_borrowed(group: CollinearFeatures, stated: Mapping[str, str], sign: float, p: float) -> float | None:
    """`_borrowed` for a collinear group (`pluralign.user.collinear.CollinearFeatures`) whose posterior leans `sign`
    along its direction with probability `p`: what the comparisons alone give that side, when none of its features is
    stated, another is, and that is of a lower level than `p`; else None."""
    alone = group.p_more_from_comparisons
    if not stated or alone is None or any(f in stated for f in group.features):
        return None
    agree = alone if sign > 0 else 1.0 - alone
    return agree if _capped(agree, p) else None


def _answers_with(direction: Mapping[str, str]) -> str:
    """The answers a joint belief prefers, in words: "shorter answers with no exclamation marks", or "answers
    with list formatting and exclamation marks" where `length` is not one of its features. What the answers
    have comes before what they lack ("longer answers with exclamation marks and no lists"): after a "no" the
    list reads as lacked too ("with no lists and exclamation marks" says no exclamation marks either)."""
    side = {f: 0 if d == "more" else 1 for f, d in direction.items()}
    head = FEATURE_DESCRIPTIONS["length"][side.pop("length")] if "length" in side else "answers"
    traits = [FEATURE_TRAITS[f][s] for f, s in side.items()]
    return f"{head} with {_listed(sorted(traits, key=lambda t: t.startswith('no ')))}"  # stable: FEATURE_NAMES order within each


def _listed(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def written_sentences(beliefs: Sequence[FeatureBelief], joint: Sequence[JointBelief]) -> list[str]:
    """The summary's sentences on how answers are written: each joint belief's that is not `uncertain`
    first, then each feature's that is stated, not `uncertain`, or on which the user's answers, ties among them,
    showed no preference (`no_preference_shown`), save one that a joint sentence said
    gives the feature's own direction (it speaks for it). A settled feature of a group whose sentence is
    not said, or gives it the other direction, keeps its own."""
    said = [j for j in joint if j.confidence != "uncertain"]
    covered = {f: d for j in said for f, d in (j.direction or {}).items()}  # feature -> its direction in a said sentence
    return [j.text for j in said] + [b.text for b in beliefs if b.stated or b.no_preference_shown
                                     or (b.confidence != "uncertain" and covered.get(b.feature) != b.direction)]


def feature_beliefs(state: UserState, stated: Mapping[str, str] | None = None) -> list[FeatureBelief]:
    """The F named features' beliefs, most certain first (by the probability of their direction, then
    z = |mean| / sd). Direction and confidence read the posterior probability of the weight's sign
    integrated at the fit (`feature_p_more`), not the Laplace z alone, which stays near 1 for a user whose
    comparisons all agree. On each stated feature it also reports what the user's comparisons alone say
    (`p_more_from_comparisons`, fitted with the state: reading a summary fits nothing); on a feature the
    comparisons moved together with others and cannot tell apart from them (`unresolved_groups`), which
    ones; on a feature fewer than FEW_COMPARISONS comparisons moved, that the belief rests on them (a wide
    prior expects strong preferences, so one or two agreeing comparisons already read `likely`); on a feature the user's
    answers, ties among them, moved without a direction, that they showed no preference on it (`no_preference_shown`),
    save one of a group whose joint belief leans at least `likely` (`joint_beliefs`: the user did show one, along the group)."""
    stated = stated or {}
    together = {f: [g for g in group.features if g != f] for group in unresolved_groups(state) for f in group.features}
    # a feature leaning neither way alone only because it moved with others along which the user's answers lean at least
    # `likely` (the joint sentence said, `written_sentences`): they showed a preference along them
    leaning_along = {f for joint in joint_beliefs(state, stated) if joint.direction is not None and joint.confidence != "uncertain"
                     for f in joint.features}
    out = [_feature_belief(state, name, stated, together.get(name, []), name in leaning_along) for name in FEATURE_NAMES]
    return sorted(out, key=lambda b: (-b.probability, -abs(b.weight) / max(b.sd, 1e-12)))


def _feature_belief(state: UserState, name: str, stated: Mapping[str, str], together: list[str],
                    leaning_along: bool = False) -> FeatureBelief:
    weight, sd = state.coefficient(name)
    p_more = feature_p_more(state, name)
    p, sign = max(p_more, 1.0 - p_more), leaning(p_more)
    borrowed = _borrowed(state, name, stated, sign, p)
    if borrowed is not None:  # the comparisons' own side: none below Phi(0.25), perhaps the other one
        alone = borrowed if sign == "more" else 1.0 - borrowed
        p, sign = max(alone, 1.0 - alone), leaning(alone)
    said_level, moved = level(p), state.moved_in.get(name)
    more, less = FEATURE_DESCRIPTIONS[name]
    rests_on = ""
    if sign is not None and said_level != "uncertain" and name not in stated and moved is not None and 0 < moved < FEW_COMPARISONS:
        # `moved` counts the ties that moved it too (`pluralign.user.collinear.feature_signs`)
        rests_on = f", from your {_answers(state)}" if moved >= state.n + state.ties else f", from {moved} of your {_answers(state)}"
    # the ties that moved it (`tied_in`; a state stored before it was kept: any tie, so one tie that moved none of them
    # makes every feature the comparisons moved without a direction read so)
    tied = state.tied_in.get(name, 0) if state.tied_in else state.ties
    shown_none = sign is None and borrowed is None and bool(tied) and bool(moved) and not leaning_along
    if shown_none:
        text = no_preference_shown(state, more, less, moved)
    else:
        text = f"no preference learned yet between {more} and {less}" if sign is None else \
            f"prefers {more if sign == 'more' else less} ({said_level}{rests_on})"
    own = None
    alone = p_more_from_comparisons(state, name) if state.n or state.ties else None
    if name in stated and alone is not None:
        own = f"{leaning(alone) or 'none'} ({level(max(alone, 1.0 - alone))})"
        said = FEATURE_DESCRIPTIONS[name][0 if stated[name] == "more" else 1]
        against = alone if stated[name] == "less" else 1.0 - alone  # the comparisons' probability of the other sign
        if against >= _PHI(LIKELY_Z):
            text += f"; you said you prefer {said}, but your {_answers(state, 'point')} the other way"
        else:
            text += f"; you said you prefer {said}"
    elif name in stated:
        text += f"; you said you prefer {FEATURE_DESCRIPTIONS[name][0 if stated[name] == 'more' else 1]}"
    if borrowed is not None:
        text += _borrowed_clause(state, stated, "this feature", sign is None, borrowed < 0.5)
    if together:
        text += f"; your {_answer_kinds(state)} moved it together with {_together(together)}, so {_they(state)} cannot tell them apart"
        if name in stated and "point the other way" not in text and _group_contradicts(state, name, stated[name]):
            text += f", and along them together your {_answers(state, 'point')} the other way"
    return FeatureBelief(
        feature=name, direction=sign, weight=round(weight, 4), sd=round(sd, 4), confidence=said_level,
        stated=stated.get(name), from_comparisons=own, text=text, collinear_with=together,
        probability=round(p, 4), moved_in=moved, no_preference_shown=shown_none,
    )


def no_preference_shown(state: UserState, more: str, less: str, moved: int) -> str:
    """The sentence of a feature the user's answers moved (`moved` of them, ties among them: `state.ties` > 0) without
    showing a direction: "no preference shown between longer answers and shorter answers: the answers of your 8 ties
    differ in it, and you found neither better". A tie is information (the user is indifferent on what its two answers
    differ in: Davidson's tie term pulls the weight towards 0), so a user of ties alone does not read "no
    preference learned yet" on every feature, as one the model knows nothing about."""
    where = f"your {_answers(state)}" if moved >= state.answers else f"{moved} of your {_answers(state)}"
    if not state.n:  # ties alone
        return f"no preference shown between {more} and {less}: the answers of {where} differ in it, and you found neither better"
    return f"no preference shown between {more} and {less}: the answers of {where} differ in it, and {'it leans' if moved == 1 else 'they lean'} neither way"


def _borrowed(state: UserState, name: str, stated: Mapping[str, str], sign: str | None, p: float) -> float | None:
    """For a feature the user stated nothing on, while they stated a preference on another: the probability the
    comparisons alone (fitted without the statement, `UserState.p_more_from_comparisons`) give the posterior's
    direction `sign`, when it is lower than the posterior's `p`; else None. A stated prior pins its feature (sd 0.5
    against the others' 5), so comparisons against the statement are explained by a feature that moved with it: stated
    "longer", then 10 comparisons picking the shorter, `second_person` read -5.95 +- 2.10 "confident" (the long answers
    said "you"), -0.89 +- 4.60 without the statement (trial16_51). The summary then says no more than the comparisons do."""
    if sign is None or name in stated or not stated or name not in state.p_more_from_comparisons:
        return None
    alone = state.p_more_from_comparisons[name]
    agree = alone if sign == "more" else 1.0 - alone
    return agree if _capped(agree, p) else None


def _capped(agree: float, p: float) -> bool:
    """Whether a belief whose posterior gives its side probability `p` claims more than the comparisons alone, which
    give that side `agree`: a lower probability of another level, or one under Φ(0.25), where they give the side no
    direction, or give the other (the first alone would read 0.05 beside 0.7 both `uncertain`, and the belief would
    keep a side the comparisons put 0.95 against). Never for a posterior that claims no side."""
    return _PHI(LEANING_Z) <= p and agree < p and (level(agree) != level(p) or agree < _PHI(LEANING_Z))


def _borrowed_clause(state: UserState, stated: Mapping[str, str], to: str, none: bool, other_way: bool) -> str:
    """The clause a capped belief (`_borrowed`, `_group_borrowed`) ends with, `to` naming what took the evidence: the
    comparisons alone show no direction ("do not show one"), the other one than the posterior's ("lean this way"), or
    the posterior's, less surely ("do not show it"); a belief capped to no direction never reads "no preference
    learned yet ...; your 15 comparisons alone do not show it"."""
    one = state.answers == 1
    if none:
        shows = f"{'does' if one else 'do'} not show one"
    elif other_way:
        shows = f"{'leans' if one else 'lean'} this way, though the weight your answers are ranked by leans the other"
    else:
        shows = f"{'does' if one else 'do'} not show it"
    return f"; your {_answers(state)} alone {shows}: your stated preference on {_together(sorted(stated))} leaves their evidence to {to}"


NEAREST_SAMPLES = 4096  # posterior draws for `nearest_prototype`'s probability: sd <= 0.008 (binomial at p = 0.5)


class PrototypeBelief(msgspec.Struct, kw_only=True):
    """The prototype the user weighs most (`prototype`, of `k`), its posterior mean weight, and the
    posterior probability that it is the one weighed most, with that probability's `level`."""

    prototype: int
    k: int
    weight: float
    probability: float
    confidence: str


def nearest_prototype(state: UserState, samples: int = NEAREST_SAMPLES) -> PrototypeBelief | None:
    """The prototype with the user's largest posterior mean weight (`prototype_0`..`prototype_{K-1}` of
    `state.names`) and P(argmax_k w_k = it) under the Laplace posterior's (K, K) marginal, from `samples`
    fixed-seed draws (`posterior_samples`: the same state always reads the same). None when the state was
    fitted on no answer of the user's (`state.answers` == 0: a user with only stated preferences), whose
    prototype weights are the prior's (the population's mixture, or the tenant's pooled prior): naming its
    largest as the user's closest would say of them what is said of everyone. Raises ValueError (from
    `posterior_samples`) on a covariance that is not positive definite."""
    at = [i for i, name in enumerate(state.names) if name.startswith("prototype_")]
    if not at or state.answers == 0:
        return None
    mean = state.mean_array()[at]  # (K,)
    cov = state.cov_array()[np.ix_(at, at)]  # (K, K)
    best = int(mean.argmax())
    p = float((posterior_samples(mean, cov, samples).argmax(1) == best).mean())
    return PrototypeBelief(prototype=best, k=len(at), weight=float(mean[best]), probability=round(p, 4), confidence=level(p))


class Example(msgspec.Struct, kw_only=True, omit_defaults=True):
    prompt: str
    answer: str  # cut to `max_chars`
    score: float  # the prototype's reward of the answer
    tenant: str | None = None  # whose answer it is, where answers of several tenants describe the prototypes (else left out)


class PrototypeDescription(msgspec.Struct, kw_only=True):
    prototype: int
    highest: list[Example]  # the stored answers it scores highest, best first
    lowest: list[Example]  # and lowest, worst first


def describe_prototypes(
    scores: np.ndarray, prompts: Sequence[str], answers: Sequence[str], per_side: int = 2, max_chars: int = 240,
    tenants: Sequence[str] | None = None,
) -> list[PrototypeDescription]:
    """scores (M, K): each of M stored answers (with its prompt) scored by each prototype's reward.
    Prototype k is described by its `per_side` highest- and lowest-scored answers, among answers
    whose text differs; `tenants` (M,), where given, names each example's tenant. Rewards are compared within a prototype only (each prototype's scale is its
    own), and an answer a prototype scores NaN or +-inf (a reward that overflowed) does not describe it:
    it cannot be ranked (a NaN scrambled the order of the rest) and JSON has no such number (it was
    written as null). Raises ValueError on mismatched lengths."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or len(prompts) != len(scores) or len(answers) != len(scores):
        raise ValueError(f"scores {scores.shape} for {len(prompts)} prompts and {len(answers)} answers")
    keep = list({answer_key(a): i for i, a in enumerate(answers)}.values())  # one row per distinct answer (NFC = NFD)
    cut = lambda t: shorten(t, max_chars)  # noqa: E731  (between graphemes)
    out = []
    for k in range(scores.shape[1]):
        order = sorted((i for i in keep if np.isfinite(scores[i, k])), key=lambda i: -scores[i, k])
        n = min(per_side, len(order) // 2)
        ex = lambda i: Example(prompt=cut(prompts[i]), answer=cut(answers[i]), score=round(float(scores[i, k]), 4),  # noqa: E731, B023
                               tenant=tenants[i] if tenants is not None else None)
        out.append(PrototypeDescription(prototype=k, highest=[ex(i) for i in order[:n]],
                                        lowest=[ex(i) for i in reversed(order[len(order) - n :])]))
    return out
