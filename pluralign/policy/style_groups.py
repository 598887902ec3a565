"""Two groups with conflicting tastes and transparent rewards, for judging MaxMin policies.

Like the paper's small-scale study (a majority that wants positive sentiment, a minority that wants
concise answers), with rules anyone can check instead of classifiers:

- `enthusiastic`: reward = exclamation marks + characters / 50 (excited, and full rather than curt);
- `concise`: reward = minus the number of characters (shorter is better; characters rather than
  words, so that punctuation-heavy text earns nothing).

Judging generated answers (`win_scores`), both groups first refuse broken text (`repeats`: a
sentence said twice, a word or a two-word phrase three times), which the rules alone would reward.

Candidates come from the base model's own answers: each answer y gives four variants, `detailed`
(y itself), `brief` (its first sentence, or with `brief_words` N its first sentences up to one
that closes N words), and both `excited` ("Great question!" in front, periods
turned into exclamation marks). The two groups disagree: enthusiasts rank detailed_excited first,
concise users rank brief first. brief_excited is second for both, the compromise a MaxMin policy
can find; a policy fit to the majority writes long excited answers, which the minority dislikes. A population of users, a share of them in each group, labels random pairs
of variants by its group's rule (ties are skipped).
"""

from __future__ import annotations

import collections
import math
import random
import re
from collections.abc import Callable, Sequence

import torch

from pluralign.data.record import Preference
from pluralign.reward.features import PairBatch

EXCITED_PREFIX = "Great question! "


def exclamations(text: str) -> float:
    return float(text.count("!"))


def word_count(text: str) -> int:
    return len(text.split())


def length(text: str) -> int:
    return len(text.strip())


GROUP_REWARDS: dict[str, Callable[[str], float]] = {
    "enthusiastic": lambda text: exclamations(text) + length(text) / 50.0,
    "concise": lambda text: -float(length(text)),
}


def answer_features(texts: Sequence[str]) -> torch.Tensor:
    """What the groups' reward heads see of an answer: [exclamation marks, -characters / 50]: (n, 2)."""
    return torch.tensor([[exclamations(t), -length(t) / 50.0] for t in texts], dtype=torch.float32)


def feature_pairs(records: Sequence[Preference]) -> PairBatch:
    """Users' comparisons as a PairBatch over `answer_features` (the prompt embedding is all ones)."""
    users = list(dict.fromkeys(r.user_id for r in records))
    index = {u: i for i, u in enumerate(users)}
    chosen = answer_features([r.chosen for r in records])
    return PairBatch(
        prompt=torch.ones_like(chosen), chosen=chosen, rejected=answer_features([r.rejected for r in records]),
        user=torch.tensor([index[r.user_id] for r in records], dtype=torch.long), users=users,
        group=[r.attributes.get("group", "unknown") for r in records],
    )


_SENTENCE_STOP = re.compile(r"[.!?](?=\s|$)")


def first_sentence(text: str, min_words: int = 1) -> str:
    """The answer up to its first sentence end (., ! or ? before a space or the end) that closes at
    least `min_words` words; the whole answer when no end does. With `min_words` 1 it is the first
    sentence; with 4, an opening exclamation such as "Salt!" or "The moon!" runs on into the next
    sentence ("Salt! It is a mineral."). Raises ValueError when `min_words` < 1."""
    if min_words < 1:
        raise ValueError(f"min_words must be at least 1, got {min_words}")
    text = text.strip()
    for stop in _SENTENCE_STOP.finditer(text):
        if stop.start() == 0:  # a stray "!" or "." in front ends no sentence
            continue
        head = text[: stop.end()]
        if len(head.split()) >= min_words:
            return head
    return text


def excite(text: str) -> str:
    body = re.sub(r"\.(\s|$)", r"!\1", text.strip())
    return EXCITED_PREFIX + body


def style_variants(answer: str, brief_words: int = 1) -> dict[str, str]:
    """The four candidates built from one base answer; `brief` is `first_sentence(answer,
    brief_words)` (1: the first sentence, however short)."""
    brief = first_sentence(answer, brief_words)
    return {"detailed": answer.strip(), "brief": brief, "detailed_excited": excite(answer), "brief_excited": excite(brief)}


def preference_pairs(
    prompts: Sequence[str],
    answers: Sequence[str],
    shares: dict[str, float],
    users: int = 100,
    pairs_per_user: int = 12,
    seed: int = 0,
    brief_words: int = 1,
) -> list[Preference]:
    """Users split by `shares` (group -> fraction), each labelling random variant pairs by its group's
    rule; the variants are `style_variants(answer, brief_words)`."""
    rng = random.Random(seed)
    variants = [style_variants(a, brief_words) for a in answers]
    total = sum(shares.values())
    counts = {g: round(users * s / total) for g, s in shares.items()}
    records: list[Preference] = []
    user_no = 0
    for group, n in counts.items():
        reward = GROUP_REWARDS[group]
        for _ in range(n):
            user = f"user-{user_no:03d}"
            user_no += 1
            made = 0
            while made < pairs_per_user:
                i = rng.randrange(len(prompts))
                a, b = rng.sample(sorted(variants[i].values()), 2)
                ra, rb = reward(a), reward(b)
                if ra == rb:
                    continue
                chosen, rejected = (a, b) if ra > rb else (b, a)
                records.append(Preference(user_id=user, prompt=prompts[i], chosen=chosen, rejected=rejected, source="style-groups", attributes={"group": group}))
                made += 1
    return records


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")  # "a.m." or "2.5" inside a sentence does not end it
_WORD_THRICE = re.compile(r"\b([^\W\d_]{3,})(?:[\s,.!?;:]+\1){2}\b", re.IGNORECASE)  # not "no, no, no" or "great-great-great"


def repeats(text: str) -> bool:
    """Whether an answer is broken by repetition:

    - it says a sentence of two or more words twice (case and punctuation aside: "Great question!
      Great Question!");
    - it says a word of three or more letters three times running ("rockets! rockets! rockets!");
    - or it says a two-word phrase three times ("great question, great question, great question"),
      unless both words are short (three letters or fewer: "of the", "in a").

    Numbers, abbreviations ("a.m.", "e.g.") and a one-word fragment said twice do not count."""
    sentences = [" ".join(re.findall(r"[^\W_]+", s.lower())) for s in _SENTENCE_END.split(text.strip())]
    sentences = [s for s in sentences if len(s.split()) >= 2]
    if len(sentences) != len(set(sentences)) or _WORD_THRICE.search(text):
        return True
    words = re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)?", text.lower())  # "they're" is one word
    bigrams = [(a, b) for a, b in zip(words, words[1:], strict=False) if max(len(a), len(b)) > 3]
    return any(n >= 3 for n in collections.Counter(bigrams).values())


def win_scores(policy_answers: Sequence[str], base_answers: Sequence[str], groups: Sequence[str] = tuple(GROUP_REWARDS)) -> dict[str, list[float]]:
    """Per group and prompt: 1 if the policy's answer beats the base's under the group's rule, 0.5 on a tie, else 0.

    Both groups refuse broken text first: an answer that `repeats` loses to one that does not,
    whatever the group's rule says. The rules alone are easy to game ("Great question! Great
    question! Great question!" has three exclamation marks and is shorter than most answers). The
    users' comparisons (`preference_pairs`) are labelled by the rules alone."""
    pairs = list(zip(policy_answers, base_answers, strict=True))
    broken = [(repeats(p), repeats(b)) for p, b in pairs]  # once per pair, not per group
    out = {}
    for group in groups:
        reward = GROUP_REWARDS[group]
        out[group] = [
            (0.0 if bp else 1.0) if bp != bb else 1.0 if reward(p) > reward(b) else 0.5 if reward(p) == reward(b) else 0.0
            for (p, b), (bp, bb) in zip(pairs, broken, strict=True)
        ]
    return out


def win_rates(policy_answers: Sequence[str], base_answers: Sequence[str], groups: Sequence[str] = tuple(GROUP_REWARDS)) -> dict[str, float]:
    """Per group: the share of prompts where the policy's answer beats the base's (ties count half)."""
    return {g: sum(w) / len(w) if w else float("nan") for g, w in win_scores(policy_answers, base_answers, groups).items()}


def win_rate_errors(policy_answers: Sequence[str], base_answers: Sequence[str], groups: Sequence[str] = tuple(GROUP_REWARDS)) -> dict[str, float]:
    """Per group: the standard error of `win_rates` over prompts (sample standard deviation / sqrt(n))."""
    out = {}
    for group, wins in win_scores(policy_answers, base_answers, groups).items():
        n = len(wins)
        mean = sum(wins) / n if n else float("nan")
        out[group] = math.sqrt(sum((w - mean) ** 2 for w in wins) / (n - 1) / n) if n > 1 else float("nan")
    return out
