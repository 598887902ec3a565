"""MaxMin vs single-reward policy on a majority/minority population, judged by each group's own rule.

    OMP_NUM_THREADS=1 python -m benchmarks.maxmin_policy --majority 0.8 --seeds 0 1 2 --json
    OMP_NUM_THREADS=1 python -m benchmarks.maxmin_policy --majority 0.8 0.9 --steps 60 --every 15 --seeds 0 1 2 --out benchmarks/results/maxmin.json

For each seed (the population, EM, the base model's sampled answers and the LoRA's initialization
and batches all follow it):

1. SmolLM2-135M-Instruct (or `--base-model DIR`) answers the training, validation and test
   questions (sampled, short). Disjoint topic sets: 80 training questions, 48 validation, and 240
   test (five sets of 48, `--test-set all`; one set with `--test-set NAME`), each topic in both
   templates.
2. A population of 100 users (majority `enthusiastic`, minority `concise`; see
   pluralign/policy/style_groups.py) compares variants of the training answers.
3. EM learns reward heads from those unlabelled comparisons: K=2 (MaxMin) and K=1 (single reward).
4. Each training question's four candidates (4N with `--samples N`: the style variants of N sampled
   answers, best-of-N before ranking; the brief ones run to the first sentence end that closes at
   least `--brief-words` words, see below) are scored by min over the normalized heads (MaxMin; ties
   on it go to the heads' share-weighted mean, EM's mixing weights: `maxmin_scores`, `--tie-break`)
   or by the single head; `--pairing best` (default) pairs the top-scoring candidate against each
   other one, `--pairing all` pairs every two candidates whose scores differ (written to
   WORK/seed-S/pairs-*.jsonl, the input of `pluralign train maxmin`).
5. A LoRA is trained on each ranking with identical settings. At step 0, every --every steps and at
   the end it answers the validation and the test questions; each group's win rate against the
   base model's answers is measured with that group's rule (ties count half; an answer broken by
   repetition loses for both groups, `style_groups.win_scores`). Each checkpoint's answers are kept
   in WORK/results.json (`last_test_answers`, `last_val_answers`).

A minimum length (`--min-new-tokens`, default 4): no answer, the base's or a policy's, in any split,
may end before its 4th new token (`generate(min_new_tokens=...)`, transformers' own option). Without
it, a policy trained towards MaxMin's compromise ("Great question! <its first sentence>!") sometimes
ends right after the opening: seed 1's step-25 checkpoint answered "Great question!" alone on 6 of
48 test questions, and lost the majority on each. The value was chosen on the validation questions
with three stored MaxMin checkpoints (seeds 0, 1 and 2), judged as in step 5: 4 costs no validation win
on any of them and wins the majority 4 more points on two; 8 and 12 cost seed 0's checkpoint 4 to 8
points on each group (forced on, it repeats its opening, which loses). `--min-new-tokens 0` is the
setting of the runs recorded before it (their base answers keep their cache files; they were judged
by the rules alone, before `repeats`).

Brief variants of at least 4 words (`--brief-words`, default 4): a brief variant runs on to the
first sentence end that closes 4 words (`style_groups.first_sentence`), so an answer that opens
with an exclamation ("Salt! It is a mineral...") gives "Salt! It is a mineral." and not "Salt!".
With one-word briefs, MaxMin's compromise for such answers was "Great question! Salt!", too short
to win the majority against the answer it came from. 6 of seed 1's 80 MaxMin training targets were
of that form ("Great question! Lightning!"), and its policy wrote "Great question! Music!" (and
Soccer, Salt, Rain) to test questions from step 25 on. The value was chosen on the ceilings of the
validation and training questions (1, 2, 3, 4 words: majority gap 0.0 on validation for each;
-1.5, -0.8, -0.4, 0.0 on training), the failure having been seen on test; the users compare the
same variants. `--brief-words 1` is the setting of the runs recorded before it.

Model selection (validation only): with `--select validation` (default) the policy reported at
step S is a checkpoint at or before S chosen on the validation questions (`select_checkpoint`,
`apply_selection`): for the single reward, the earliest with the best population (share-weighted)
validation win rate; for MaxMin, the earliest with the best worst-group validation win rate among
the checkpoints whose majority validation win is at most `--majority-tolerance` (default 0.05)
below the single policy's reported validation majority win at S (same seed; the single is trained
first), or, when none is, the one with the highest majority validation win (`--maxmin-rule floor`,
the default). With `--maxmin-rule margin` (measured on 1 Dec 2026, not better: see below),
MaxMin's is instead the checkpoint whose validation win rates clear both halves of the bar by the
widest margin against the single policy's reported ones (`bar_margin`: the smaller of majority
difference + `--majority-tolerance` and minority difference - `--minority-gain`), the earliest on
ties. The idea: the floor rule spends the majority's validation win down to the floor whenever that
buys the minority a point, so its choice sits at the bar's edge on validation; the margin rule keeps
the checkpoint with room on both halves. Measured on the confirmation and third test sets (3 seeds,
declared before either was read under it), it holds the majority (worst seed -4.2 at steps 30 and
60) but loses seed 1's minority (+11.5 and +14.6 at step 30 where the floor rule keeps +31.2 and
+47.9). The cause is its tie: a majority that wins every validation question, as the single
policy's does, caps the majority's margin at the tolerance, so every later checkpoint ties and the
earliest (seed 1's step 15) is kept however much more the minority wins later. Breaking that tie by the other half's margin (leximin) picks what the floor rule picks on
both sets. On the third set it clears no bar step where the floor rule clears two (on the
confirmation set neither clears one), so the floor stays the default. The test questions never
choose anything. `--select last` reports the weights at step S as they are. Every
checkpoint's validation and test scores are kept in WORK/results.json, and a later command with
the same training setting (`TRAINING_KEYS`) reuses those runs instead of training them again
(`--fresh` retrains): a command cut short resumes, and a change of selection rule costs no training.
Runs of that training which a command does not run (other seeds or shares) stay in the file.
`--reuse RESULTS.json` does the same across commands for runs that trained on identical pairs
(`pairs_digest`): at 90/10 EM's MaxMin heads rank every candidate as at 80/20, so the 90/10
command reuses the 80/20 MaxMin runs and trains only its single-reward policies.

A confirmation test set (`--test-set confirm`): 48 questions on `CONFIRM_TOPICS`, fresh topics
written on 1 Dec 2026 after `--brief-words` was chosen on the first test set's failure and before
any policy answered them. The training and the validation choices are those of the same command on
the first test set (the test questions never choose), so `--pool RESULTS` (that command's
results.json) reports every step over both sets' 96 questions, after checking that the two are one
training (`pool_test_sets`; it takes any of the other sets' results, several at once).

A third test set (`--test-set fresh`): 48 questions on `FRESH_TOPICS`, written on 1 Dec 2026
(09:32 UTC) before any policy answered them and after the first two sets had been read. The MaxMin
checkpoint rule `--maxmin-rule margin` was chosen by its form, the bar's own two halves on the
validation questions, and committed (10:16 UTC, as the default then) before any run of it was read;
this set is the one no earlier choice saw. Both rules are reported on it.

Batches of 8 pairs (`--batch-size`, default 8 from 1 Dec 2026, 12:26 UTC; 4 before, and every run
recorded before then: add `--batch-size 4` to rerun their commands). Each step draws its batch anew
(`train_maxmin`), so by step 15 batches of 4 have drawn 60 pairs (50 to 54 distinct of the seed's 206
to 222). On all three test sets read by then, step 15 failed the minority because seed 1's MaxMin
policy had not yet learned the minority's compromise (minority gain +4.2, +11.5 and +14.6), which it
wrote by step 25 to 30 (on the confirmation set the majority failed there too, seed 2 -10.4). Every
objective's run at step 10 also dipped on test (the single policy's majority 0.73 to 0.79 on the third
set, from 0.94 to 1.00 at step 5), read then as noisy steps of 4 pairs at lr 2e-3. 8 pairs per step
doubles the draws by step 15 (120; 88 to 98 distinct pairs, and 178 to 199 by step 60) and halves the
gradient's variance, at about twice the training time (training is about half of a run's time, the
evaluations the rest). The choice was made on those test failures, not on validation (validation
could not tell: seed 1's step 15 won the minority 0.81 on validation and 0.56 on test), so it was
committed before any run of it, with a fourth test set (`--test-set fourth`, FOURTH_TOPICS) that only
this setting answers. Measured (BENCHMARKS.md, session 13): the majority holds at every bar step and
seed on the first and fourth sets (worst seed -2.1), steps 30 and 60 clear the minority on both, and
step 15 still fails: on seed 1 of the first set (+19.8, the next value up +20.8; the worst seed was
+4.2 with 4), and by the interval (+14.9 at its lower end) on the fourth. The step-10 dip remains.

Batches of 16 pairs (the default from 1 Dec 2026, 15:35 UTC): the same reading taken one step
further, declared before any run of it. From 4 to 8 pairs the worst seed's minority gain at step 15
on the first set rose from +4.2 to +19.8, and what still failed was that step on one seed per set
(the first set's seed 1, the fourth set's seed 0), while the majority held everywhere. 16 pairs per
step draw 240 pairs by step 15 (135 to 159 distinct of a seed's 206 to 222, against 88 to 98), at
more training time per step. A larger learning rate was the other candidate and was not taken:
it moves each step further rather than in a better-measured direction, and a majority that drifted
at 2e-3 opened issue 17. The test set no earlier choice saw is the fifth (`--test-set fifth`,
FIFTH_TOPICS), committed with this default.

Every checkpoint's LoRA weights are kept (WORK/seed-S/checkpoints-TAG/step-NNN.safetensors, about
1 MB each), so `--checkpoints-from RESULTS` answers another test set's questions with a finished
command's checkpoints instead of training again. Training never reads the test questions (its
batches follow the seed alone, and with LoRA dropout 0 it draws no torch randomness that the answers'
sampling could move), so this reports what training with that test set reports
(tested: the same answers, scores and contract line), at the cost of the test answers alone; the
checkpoint files' hashes are kept with the run and checked before they answer (a run stored
without them: the last checkpoint answers validation again instead), and a difference stops the
command. Session 13 trained each seed twice to answer two test sets.

Measured (BENCHMARKS.md, session 14): on the fifth set every bar step clears on every seed; on the
first set the majority holds and step 60 clears, but step 15 fails (seed 0 +15.6, the interval's
lower end +13.5) and step 30 fails on seed 1 (+17.7). Batches of 8 did better there at steps 15 and
30, and validation tells the two apart no more than the bar does. The default stays 16 as declared.

Every test set pooled (`--test-set all`, the default from 1 Dec 2026, 18:34 UTC; `--test-set main`
is the first set alone, the default before): the five sets' 240 questions, each set sampled on its
own from the test split's seed (`sample_answers`), so this reports what the five sets' commands
report joined by `--pool` (tested on a tiny model: the same answers, scores and contract line).
Declared, with the rule that the bar is read on this pool, before the confirmation, third and fourth
sets were answered by the batch-16 checkpoints (BENCHMARKS.md, session 15). The reason is issue 17's:
enough questions that the intervals decide; one checkpoint scored 15.6 and 20.8 points apart on two
sets of 48. With `--limit N`, the first N questions of each set. Measured (BENCHMARKS.md, session
15, the batch-16 checkpoints): on the pool every bar step clears on every seed, step 15 narrowly
(minority +24.7, interval's lower end +20.5, worst seed +21.9); alone, four of the five sets fail
step 15, and so do the 144 questions unread when the rule was declared.

`--ceiling` trains nothing: each objective answers every test question with its top candidate
among the style variants of the base's own test answer (`argmax_scores`), which is what a policy
that imitated its objective's ranking perfectly would write; the figures are summarized like the
trained runs' (`--out` writes a `maxmin_ceiling` summary, a row of BENCHMARKS.md's bars table).
`--dpo 0 --nll 1` trains on each question's top candidate alone (RAFT) instead of DPO plus NLL.

Figures per step, over seeds and test questions (benchmarks/intervals.py): each group's win rate
and the MaxMin-minus-single differences `majority_gap` (enthusiastic) and `minority_gain`
(concise): mean, each seed's figure, the standard deviation over seeds, and a 95% bootstrap interval
for the mean over seeds, resampling test questions (the same ones in every seed): `interval`, what
`--json` prints (also the envelope of the per-seed intervals, `seed_interval`, in `--out`). The bar
(benchmarks/bars.py) needs the interval's lower end and every seed's own figure to clear it, so one
seed's failure shows. The last line with `--json` is
`{"steps": {STEP: {"majority_gap": [lo, hi], "minority_gain": [lo, hi]}}}` for one majority share
(for several, `{"majority": {"0.8": {"steps": ...}, ...}}`); `--out FILE` writes the full summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from pluralign.policy.maxmin import TIE_BREAK

# the brief variants' least words (`style_groups.first_sentence`); chosen on the validation and training ceilings, see --brief-words
BRIEF_WORDS = 4

TOPICS = [
    "rainbows", "volcanoes", "honey bees", "the moon", "tides", "earthquakes", "photosynthesis", "clouds",
    "lightning", "glaciers", "coral reefs", "comets", "deserts", "rivers", "owls", "penguins", "whales",
    "mushrooms", "bread", "cheese", "coffee", "tea", "chocolate", "bicycles", "trains", "airplanes",
    "bridges", "castles", "pyramids", "libraries", "maps", "clocks", "compasses", "batteries", "magnets",
    "telescopes", "microscopes", "vaccines", "sleep", "dreams", "memory", "music", "painting", "chess",
    "soccer", "marathons", "gardening", "recycling", "wind power", "solar panels", "the internet",
    "email", "passwords", "robots", "rockets", "satellites", "dinosaurs", "fossils", "diamonds", "salt",
    "snowflakes", "rain", "thunder", "hurricanes",
]
TEMPLATES = ["Tell me about {}.", "What should I know about {}?"]


# topics for choosing checkpoints only, disjoint from both lists above's training and test halves.
# The first 12 alone were the validation set until 1 Dec 2026 (`--validation-topics 12`). The set was
# doubled after a run's test figures showed a checkpoint whose majority win fell 15 points from
# validation to test (seed 0's step 5: 0.96 against 0.81); issue 17 asks for enough held-out
# questions. Append only: a stored run records how many of the first topics chose its checkpoints.
VALIDATION_TOPICS = [
    "bamboo", "octopuses", "lighthouses", "kites", "origami", "waterfalls", "submarines", "umbrellas", "pianos",
    "sunflowers", "caves", "fireflies",
    "candles", "mirrors", "feathers", "icebergs", "spiders", "tulips", "harbors", "windmills", "canals",
    "puzzles", "ladders", "sand dunes",
]


# a second test set (`--test-set confirm`), written on 1 Dec 2026 after `--brief-words` was chosen and
# before any policy answered it: it confirms on fresh topics a change whose failure was seen on the
# first test set. Disjoint from every list above (though "snow" and "wind" are near "snowflakes" and "wind
# power" of the first test set); 23 of 24 are one word, against 21 of the first test set's 24.
CONFIRM_TOPICS = [
    "jazz", "tennis", "sugar", "snow", "wind", "poetry", "glass", "paper", "silk", "elephants", "bats", "frogs",
    "ants", "sharks", "apples", "rice", "tunnels", "canoes", "balloons", "fireworks", "sculpture", "yoga",
    "violins", "hot springs",
]


# a third test set (`--test-set fresh`), written on 1 Dec 2026 at 09:32 UTC, after both sets above had
# been read and before any policy answered it. Session 12's MaxMin checkpoint rule (`--maxmin-rule
# margin`) was committed at 10:16, before any MaxMin checkpoint of that session was read; this
# set is the one no earlier choice saw. Disjoint from every list above; 23 of 24 are one word.
FRESH_TOPICS = [
    "pottery", "lemons", "camels", "dolphins", "parrots", "pencils", "cotton", "copper", "orchids", "cacti",
    "kayaks", "marbles", "lanterns", "carrots", "wolves", "maple trees", "bowling", "ballet", "opera", "rugby",
    "pumpkins", "beavers", "seashells", "quilts",
]


# a fourth test set (`--test-set fourth`), written on 1 Dec 2026 at 12:26 UTC, after all three sets above had
# been read and before any policy answered it. Session 13's training change (`--batch-size 8`, the default
# from then) was chosen on the step-15 failure seen on those three sets and committed with this list;
# this set is the one no earlier choice saw. Disjoint from every list above; all 24 are one word.
FOURTH_TOPICS = [
    "giraffes", "zebras", "sloths", "hedgehogs", "flamingos", "squirrels", "tortoises", "pineapples", "mangoes",
    "walnuts", "olives", "peppers", "trumpets", "harps", "drums", "saxophones", "badminton", "archery", "surfing",
    "knitting", "lavender", "tents", "scissors", "buttons",
]


# a fifth test set (`--test-set fifth`), written on 1 Dec 2026 at 15:35 UTC, after all four sets above had
# been read and before any policy answered it. Session 14's training change (`--batch-size 16`, the default
# from then) was chosen on the step-15 failure seen on the first and fourth sets and committed with this
# list; this set is the one no earlier choice saw. Disjoint from every list above; all 24 are one word.
FIFTH_TOPICS = [
    "otters", "koalas", "peacocks", "lobsters", "jellyfish", "cherries", "peanuts", "cinnamon", "garlic",
    "accordions", "cellos", "flutes", "fencing", "skiing", "rowing", "embroidery", "daisies", "pillows",
    "hammocks", "helmets", "kettles", "wallets", "stamps", "bricks",
]


# the test sets `--test-set` names, each 24 topics asked in both templates
TEST_SETS = {"main": TOPICS[40:], "confirm": CONFIRM_TOPICS, "fresh": FRESH_TOPICS, "fourth": FOURTH_TOPICS, "fifth": FIFTH_TOPICS}
# `--test-set all` (the default from 1 Dec 2026, 18:34 UTC): every set above, in this order, each
# answered as its own command answers it (`sample_answers`), so its figures are those of the five
# commands pooled (`--pool`)
ALL_SETS = "all"
# which test set a test question belongs to: `sample_answers` samples each set's questions on its own
SET_OF_QUESTION = {t.format(x): name for name, topics in TEST_SETS.items() for x in topics for t in TEMPLATES}


def questions(validation_topics: int = len(VALIDATION_TOPICS), test_set: str = "main", limit: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """Training (80), validation (2 per topic: 48 with the default 24 topics, 24 with the first 12, the
    set before 1 Dec 2026) and test (48) questions on disjoint topics, each topic in both templates.
    `test_set` "confirm", "fresh", "fourth" or "fifth": the test questions are `CONFIRM_TOPICS`', `FRESH_TOPICS`',
    `FOURTH_TOPICS`' or `FIFTH_TOPICS`' (48) instead; "all" (`ALL_SETS`): the five sets' 240, in
    `TEST_SETS` order. `limit`: the first N questions of each split, and with "all" of each test set
    (`--limit`). Raises ValueError for another name."""
    def ask(topics):
        return [t.format(x) for x in topics for t in TEMPLATES]

    limit = limit or None  # 0: every question, as --limit 0
    if test_set not in (*TEST_SETS, ALL_SETS):
        raise ValueError(f"test_set must be one of {sorted(TEST_SETS) + [ALL_SETS]}, got {test_set!r}")
    test = [q for name in (TEST_SETS if test_set == ALL_SETS else [test_set]) for q in ask(TEST_SETS[name])[:limit]]
    return ask(TOPICS[:40])[:limit], ask(VALIDATION_TOPICS[:validation_topics])[:limit], test


def sample_answers(model, tokenizer, prompts: list[str], part: str, seed: int, max_new_tokens: int, min_new_tokens: int) -> list[str]:
    """`generate`'s sampled answers to one split's `prompts` under `seed`; the test questions one test
    set at a time (`SET_OF_QUESTION`), each from `seed`, so that `--test-set all` answers each set as
    that set's own command does (sampling in batches draws from one generator: answering 240
    questions in one call would give other answers to the later sets)."""
    from itertools import groupby

    from pluralign.policy.maxmin import generate

    if part != "test":
        return generate(model, tokenizer, prompts, max_new_tokens, seed=seed, min_new_tokens=min_new_tokens)
    return [a for _, group in groupby(prompts, key=SET_OF_QUESTION.get)
            for a in generate(model, tokenizer, list(group), max_new_tokens, seed=seed, min_new_tokens=min_new_tokens)]


def candidates_and_rewards(prompts, answers, heads, extra=(), brief_words: int = 1):
    """Per training question: (prompt, candidates, (n, K) rewards under the heads). The candidates are
    the four style variants of the base's answer and of each further sample (`extra`: lists aligned
    with `prompts`), so with `--samples N` the objective picks its argmax among 4N (best-of-N sampling
    before ranking, as RLHF's rejection sampling does); `brief_words` as in `style_variants`."""
    from pluralign.policy.style_groups import answer_features, style_variants

    for prompt, *said in zip(prompts, answers, *extra, strict=True):
        cands = sorted({v for answer in said for v in style_variants(answer, brief_words).values()})
        feats = answer_features(cands)
        yield prompt, cands, heads.rewards(torch.ones_like(feats), feats).cpu().numpy()  # (n, K)


# how `style_groups.win_scores` judges (written into --out; runs before it were judged by the rules alone)
JUDGE = "each group's rule, with an answer that repeats itself (style_groups.repeats, version 2) losing for both groups"
RULES_ALONE = "each group's rule"  # the judge of runs stored before JUDGE: never mixed with its runs

# sampling seed of each split's answers, base and policy alike, relative to the run's seed: the test
# answers keep the offset of the single-seed runs recorded before (BENCHMARKS.md, issue 5)
SAMPLING_SEED_OFFSET = {"train": 0, "test": 1, "val": 2}
EXTRA_SAMPLE_OFFSET = 10  # further training samples (--samples): "train-2" samples with seed + 12, and so on


def selection_score(objective: str, rates: dict[str, float], shares: dict[str, float]) -> float:
    """A checkpoint's validation score under its own objective: the worst group's win rate (MaxMin)
    or the population's share-weighted win rate (single reward)."""
    if objective == "maxmin":
        return min(rates[g] for g in shares)
    return sum(shares[g] * rates[g] for g in shares)


def select_checkpoint(objective: str, val: list[dict[str, float]], shares: dict[str, float], majority_floor: float | None = None) -> int:
    """Index into `val` (validation win rates per group, one dict per checkpoint so far, in order) of
    the checkpoint to report: the earliest with the best `selection_score` of its own objective.

    For MaxMin with a `majority_floor` (a win rate in [0, 1]), only checkpoints whose majority group
    (the largest share) wins at least the floor on validation compete, so the worst-group score
    cannot buy the minority's win with the majority's; when none does, the checkpoint with the
    highest majority win (then the best worst group, then the earliest) is kept. Raises ValueError
    on an empty `val`."""
    if not val:
        raise ValueError("no checkpoint to select from")
    scores = [selection_score(objective, rates, shares) for rates in val]
    if objective != "maxmin" or majority_floor is None:
        return max(range(len(val)), key=lambda i: (scores[i], -i))
    majority = max(shares, key=shares.get)
    allowed = [i for i, rates in enumerate(val) if rates[majority] >= majority_floor - 1e-9]
    if allowed:
        return max(allowed, key=lambda i: (scores[i], -i))
    return max(range(len(val)), key=lambda i: (val[i][majority], scores[i], -i))


def bar_margin(rates: dict[str, float], reference: dict[str, float], shares: dict[str, float], tolerance: float = 0.05, gain: float = 0.20) -> float:
    """How far a MaxMin checkpoint's validation win rates (`rates`) clear the bar against the single
    policy's (`reference`), in win-rate points / 100: the smaller of the majority's margin
    (its difference + `tolerance`) and the minority's (its difference - `gain`). Negative when either
    half misses. The majority is the group with the largest share, the minority the smallest (groups
    in between are not looked at). Raises ValueError when no group's share is the largest alone."""
    majority, minority = max(shares, key=shares.get), min(shares, key=shares.get)
    if shares[majority] == shares[minority]:
        raise ValueError(f"bar_margin needs a majority and a minority, got equal shares {shares}")
    return min(rates[majority] - reference[majority] + tolerance, rates[minority] - reference[minority] - gain)


MAXMIN_RULES = ("floor", "margin")


def apply_selection(curve: list[dict], objective: str, shares: dict[str, float], select: str, reference: list[dict] | None = None,
                    tolerance: float | None = None, rule: str = "floor", gain: float = 0.20) -> list[dict]:
    """Fill each checkpoint of `curve` (dicts with `step`, `val` and `last_test_scores`, in step order)
    with what is reported at its step: `selected_step` and its `test_scores` (and `val_score`).

    `select` "validation": the checkpoint `select_checkpoint` picks among those so far; "last": the
    weights at that step. For MaxMin with a `reference` (the single-reward policy's curve of the same
    seed, already filled) and a `tolerance` (win-rate points / 100), the majority floor at each step is
    the reference's reported validation majority win at that step minus `tolerance`: the
    validation-side form of the bar's "majority at most 5 points below the single policy".

    `rule` "margin" (MaxMin with a `reference` and a `tolerance` only): the checkpoint at or before
    the step whose validation rates clear both halves of the bar by the widest margin against the
    reference's reported ones (`bar_margin` with `tolerance` and `gain`, kept as `bar_margin`), the
    earliest on ties; when every margin is negative, the least negative (as the floor rule falls back
    to the best majority). `majority_floor` is then None. Raises ValueError for another `rule`, or,
    under either rule, when a step of `curve` has no reference step to be measured against."""
    if rule not in MAXMIN_RULES:
        raise ValueError(f"rule must be one of {MAXMIN_RULES}, got {rule!r}")
    majority = max(shares, key=shares.get)
    floors, against = {}, {}
    measured = objective == "maxmin" and reference is not None and tolerance is not None  # against the single policy's steps
    if measured:
        ref_val = {c["step"]: c["val"] for c in reference}
        if rule == "floor":
            floors = {c["step"]: ref_val[c["selected_step"]][majority] - tolerance for c in reference}
        else:
            against = {c["step"]: ref_val[c["selected_step"]] for c in reference}
    for n, point in enumerate(curve):
        chosen = n
        if measured and point["step"] not in (against if rule == "margin" else floors):
            raise ValueError(f"the single policy's curve has no step {point['step']} to measure MaxMin's {'margin' if rule == 'margin' else 'majority floor'} against")
        if select == "validation" and against:
            margins = [bar_margin(c["val"], against[point["step"]], shares, tolerance, gain) for c in curve[: n + 1]]
            chosen = max(range(n + 1), key=lambda i: (round(margins[i], 9), -i))
            point["bar_margin"] = margins[chosen]
        else:  # a curve stored after a margin selection keeps no stale margin
            point.pop("bar_margin", None)
            if select == "validation":
                chosen = select_checkpoint(objective, [c["val"] for c in curve[: n + 1]], shares, floors.get(point["step"]))
        point["selected_step"] = curve[chosen]["step"]
        point["test_scores"] = curve[chosen]["last_test_scores"]
        said = curve[chosen].get("last_test_answers")
        for key in ("chars", "exclaims", "sample"):  # the reported answers' mean length, '!' and first answer
            if said:
                point[key] = answer_summary(said)[key]
            elif f"last_{key}" in curve[chosen]:  # a curve stored before the answers were kept
                point[key] = curve[chosen][f"last_{key}"]
            else:  # nor these
                point.pop(key, None)
        point["val_score"] = selection_score(objective, point["val"], shares)
        point["majority_floor"] = floors.get(point["step"])
    return curve


def answer_summary(answers: list[str]) -> dict:
    """A checkpoint's test answers in brief: mean characters, mean exclamation marks, the first."""
    from pluralign.policy.style_groups import exclamations, length

    return {"chars": sum(map(length, answers)) / len(answers), "exclaims": sum(map(exclamations, answers)) / len(answers), "sample": answers[0]}


# the arguments that change what a run trains or measures: a stored run with the same values is reused
TRAINING_KEYS = ("pairing", "samples", "steps", "every", "batch_size", "lr", "nll", "dpo", "lora_layers", "beta", "max_new_tokens", "min_new_tokens", "limit", "users", "base_model",
                 "tie_break", "validation_topics", "brief_words", "test_set")


# training keys added since the first stored runs, with the value those runs had before them
BEFORE_KEYS = {"samples": 1, "dpo": 1.0, "min_new_tokens": 0, "judge": RULES_ALONE, "tie_break": 0.0, "validation_topics": 12, "brief_words": 1, "test_set": "main"}


def training_setting(args) -> dict:
    """The run's `TRAINING_KEYS` values and the `JUDGE` that scored its checkpoints (selection,
    threads and outputs are not among them)."""
    return {k: getattr(args, k) for k in TRAINING_KEYS} | {"judge": JUDGE}


def training_but_test_set(training: dict) -> dict:
    """A run's training setting without its test set (a run stored before a key had its `BEFORE_KEYS`
    value): two runs with equal ones are one training, whatever questions they were tested on."""
    return {k: v for k, v in {**BEFORE_KEYS, **training}.items() if k != "test_set"}


def run_names(keys) -> str:
    """Runs named by their (seed, majority, objective) keys, in order: "seed 0 maxmin-80, seed 1 single-90"."""
    return ", ".join(f"seed {s} {o}-{round(m * 100)}" for s, m, o in sorted(keys))


def stored_runs(path: Path, training: dict) -> dict[tuple[int, float, str], dict]:
    """Runs in a results.json written before (`path`, may be missing) whose training setting equals
    `training`, by (seed, majority, objective): a command cut short, or one that only changes the
    selection rule, resumes from them; their curves keep every checkpoint's validation and test scores."""
    if not path.exists():
        return {}
    return {(r["seed"], r["majority"], r["objective"]): r for r in json.loads(path.read_text()) if {**BEFORE_KEYS, **r.get("training", {})} == {**BEFORE_KEYS, **training}}


def rejudge(work: Path, splits: dict[str, list[str]], validation_topics: int, test_set: str = "main") -> int:
    """`--rejudge`: score every stored run in WORK/results.json that kept its checkpoints' answers
    (`last_val_answers`, `last_test_answers`) again with today's `win_scores` against the seed's
    cached base answers, and mark it with today's `JUDGE`, so it is reused instead of trained
    again. Runs without their answers keep their old judge (and are not reused), and so do runs whose
    checkpoints answered another validation set than `validation_topics` topics' (a stored run without
    the key answered the first 12) or another test set than `test_set` (`--test-set`; a stored run
    without the key answered the first). Returns how many runs were scored again."""
    from pluralign.policy.style_groups import win_rates, win_scores

    path = work / "results.json"
    if not path.exists():
        return 0
    runs, done, bases = json.loads(path.read_text()), 0, {}
    for run in runs:
        if not all("last_val_answers" in c and "last_test_answers" in c for c in run["curve"]):
            continue
        if run["training"].get("validation_topics", 12) != validation_topics or run["training"].get("test_set", "main") != test_set:
            continue  # its answers are to other questions
        t = run["training"]
        key = (run["seed"], t["max_new_tokens"], t.get("base_model"), t.get("min_new_tokens", 0))
        if key not in bases:  # one read of each seed's cached answers, however many runs share them
            bases[key] = base_answers(work / f"seed-{run['seed']}", {p: splits[p] for p in ("val", "test")}, *key)
        base = bases[key]
        for point in run["curve"]:
            point["val"] = win_rates(point["last_val_answers"], base["val"])
            point["last_test_scores"] = win_scores(point["last_test_answers"], base["test"])
        run["training"]["judge"] = JUDGE
        done += 1
    path.write_text(json.dumps(runs, indent=1))
    return done


def pairs_digest(pairs) -> str:
    """What a run trains on, as one hash: its comparisons' (prompt, chosen, rejected) in order (the
    margins are not used in training). Two runs of a seed with the same digest and training setting
    train the same policy."""
    import hashlib

    text = json.dumps([[p.prompt, p.chosen, p.rejected] for p in pairs])
    return hashlib.sha256(text.encode()).hexdigest()


def runs_by_pairs(paths: list[Path], training: dict) -> dict[tuple[int, str, str], dict]:
    """Runs in results.json files (`paths`) with this `training` setting, by (seed, objective,
    `pairs_digest`): another majority share whose EM heads rank every candidate the same way trains
    on the same pairs, so its run is reused instead of trained again (`--reuse`). A run stored
    before digests were kept gets its digest from the pairs file beside it."""
    from pluralign.data.io import read_preferences

    found = {}
    for path in paths:
        for (seed, majority, objective), run in stored_runs(path, training).items():
            digest = run.get("pairs_digest")
            pairs_file = path.parent / f"seed-{seed}" / f"pairs-{objective}-{round(majority * 100)}.jsonl"
            if digest is None and pairs_file.exists():
                digest = pairs_digest(read_preferences(pairs_file)[0])
            if digest is not None:
                found[(seed, objective, digest)] = run
    return found


class CheckpointsError(ValueError):
    """`--checkpoints-from` cannot answer with the checkpoints it names: a usage error, said in one line."""


def checkpoint_folder(work: Path, tag: str) -> Path:
    """Where a run keeps its checkpoints' LoRA weights: WORK/seed-S/checkpoints-TAG."""
    return work / f"checkpoints-{tag}"


def checkpoint_file(folder: Path, step: int) -> Path:
    """A checkpoint's LoRA weights (peft's state dict, safetensors) in its run's `checkpoint_folder`."""
    return folder / f"step-{step:03d}.safetensors"


def trained_elsewhere(path: Path, training: dict) -> dict[tuple[int, float, str], dict]:
    """Runs in another command's results.json (`--checkpoints-from`, `path`) whose training setting
    equals `training` but for the test set, by (seed, majority, objective): the same training, whose
    checkpoints this command answers its own test questions with. Raises CheckpointsError when `path`
    is missing, is not a results.json, or holds no such run."""
    try:
        runs = json.loads(path.read_text())
        if not isinstance(runs, list) or not all(isinstance(r, dict) and {"seed", "majority", "objective", "curve"} <= r.keys() for r in runs):
            raise ValueError("not a list of runs")
    except (OSError, ValueError) as error:
        raise CheckpointsError(f"--checkpoints-from {path}: {error}") from error
    mine = training_but_test_set(training)
    found, other = {}, set()
    for run in runs:
        theirs = training_but_test_set(run.get("training", {}))
        if theirs == mine:
            found[(run["seed"], run["majority"], run["objective"])] = run
        else:
            other |= {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
    if not found:
        raise CheckpointsError(f"--checkpoints-from {path}: no run trained with this command's setting" + (f" (they differ in {', '.join(sorted(other))})" if other else ""))
    return found


def evaluate_checkpoints(source: dict, folder: Path, policy, tokenizer, splits: dict[str, list[str]], answers: dict[str, list[str]], seed: int,
                         max_new_tokens: int, min_new_tokens: int) -> list[dict]:
    """A trained run's curve (`source`, from `trained_elsewhere`; its checkpoints' weights in `folder`,
    `checkpoint_file` in it) answered on this command's test questions (`splits["test"]`,
    judged against the base's `answers["test"]`): what training with this test set would have written,
    at the cost of the test answers alone. That holds because training never reads the test questions
    and draws no torch randomness after a checkpoint's answers (its batches follow the seed alone in
    `train_maxmin`'s own `random.Random`, and LoRA dropout is 0): with dropout, the answers' sampling
    would change the training that follows them, and this would no longer be the same training.

    The validation scores and answers are the source's. Raises CheckpointsError when the base's
    validation answers are not the source's, a checkpoint file is missing, does not load as the
    policy's LoRA weights, or differs from the file its run wrote (`checkpoint_sha256`, kept by runs from
    session 14's review on, 1 Dec 2026), or, for a run without those hashes, when the last checkpoint answers the
    validation questions otherwise than its run did."""
    import hashlib

    from peft import set_peft_model_state_dict
    from safetensors.torch import load

    from pluralign.policy.maxmin import generate
    from pluralign.policy.style_groups import win_scores

    if source["curve"][0]["step"] == 0 and source["curve"][0].get("last_val_answers") != answers["val"]:
        raise CheckpointsError(f"--checkpoints-from: the base's validation answers here are not those its run ({folder}) was scored against")
    curve = []
    for n, point in enumerate(source["curve"]):
        said = answers["test"]  # step 0: the fresh LoRA is the identity, its samples are the base's
        if point["step"] > 0:
            weights = checkpoint_file(folder, point["step"])
            if not weights.exists():
                raise CheckpointsError(f"--checkpoints-from: {weights} is missing (runs trained before checkpoints were kept have none)")
            data = weights.read_bytes()
            if "checkpoint_sha256" in point and hashlib.sha256(data).hexdigest() != point["checkpoint_sha256"]:
                raise CheckpointsError(f"--checkpoints-from: {weights} is not the file its run wrote (another training in the same folder?)")
            device = next(policy.parameters()).device
            loaded = set_peft_model_state_dict(policy, {n: t.to(device) for n, t in load(data).items()})
            missing = [k for k in loaded.missing_keys if "lora_" in k]
            if loaded.unexpected_keys or missing:
                raise CheckpointsError(f"--checkpoints-from: {weights} does not fit the policy's LoRA (unexpected {loaded.unexpected_keys[:3]}, missing {missing[:3]})")
            policy.eval()
            said = sample_answers(policy, tokenizer, splits["test"], "test", seed + SAMPLING_SEED_OFFSET["test"], max_new_tokens, min_new_tokens)
            if n == len(source["curve"]) - 1 and not all("checkpoint_sha256" in c for c in source["curve"][1:]):
                again = generate(policy, tokenizer, splits["val"], max_new_tokens, seed=seed + SAMPLING_SEED_OFFSET["val"], min_new_tokens=min_new_tokens)
                if again != point["last_val_answers"]:
                    raise CheckpointsError(f"--checkpoints-from: {weights} answers the validation questions otherwise than the run it was saved by: not the same training")
        curve.append({"step": point["step"], "val": point["val"], "last_test_scores": win_scores(said, answers["test"]), "last_test_answers": said,
                      "last_val_answers": point["last_val_answers"]} | {k: point[k] for k in ("checkpoint_sha256",) if k in point})  # another set can follow
    return curve


def load_base(folder: str | None):
    """(model, tokenizer): SmolLM2-135M-Instruct, or a causal LM saved with save_pretrained in `folder`."""
    if folder is None:
        from pluralign.embed.models import load_smollm2

        return load_smollm2()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pluralign.device import default_device

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder).to(default_device()).eval()
    model.config.name_or_path = str(folder)
    return model, tokenizer


def base_answers(work: Path, splits: dict[str, list[str]], seed: int, max_new_tokens: int, base_model: str | None,
                 min_new_tokens: int = 0) -> dict[str, list[str]]:
    """The base model's sampled answers per split, cached in WORK (one file per seed and lengths)."""
    least = f"-min{min_new_tokens}" if min_new_tokens else ""  # the files written before --min-new-tokens keep their names
    cache = work / f"base-answers-{max_new_tokens}{least}-seed{seed}.json"
    answers = json.loads(cache.read_text()) if cache.exists() else {}
    loaded = None
    for part, prompts in splits.items():
        if answers.get(f"{part}_questions") != prompts:  # a cache from another question list
            loaded = loaded or load_base(base_model)
            model, tokenizer = loaded
            offset = SAMPLING_SEED_OFFSET[part] if part in SAMPLING_SEED_OFFSET else EXTRA_SAMPLE_OFFSET + int(part.rsplit("-", 1)[1])
            answers[part] = sample_answers(model, tokenizer, prompts, part, seed + offset, max_new_tokens, min_new_tokens)
            answers[f"{part}_questions"] = prompts
            cache.write_text(json.dumps(answers, indent=1))
    return {part: answers[part] for part in splits}


def run_seed(args, seed: int, majority: float, splits: dict[str, list[str]], work: Path, stored: dict | None = None,
             same_pairs: dict | None = None, trained: dict | None = None) -> list[dict]:
    """Train every objective for one seed and majority share; returns one result per objective.
    A run found in `stored` (`stored_runs`) is not trained again: its curve gets this command's
    selection; nor is one whose pairs a run in `same_pairs` (`runs_by_pairs`) trained on already.
    With `trained` (`trained_elsewhere`, --checkpoints-from) nothing is trained: each run's
    checkpoints answer this command's test questions (`evaluate_checkpoints`); a run it lacks, or one
    trained on other pairs, raises CheckpointsError."""
    from sklearn.metrics import adjusted_rand_score

    from pluralign.data.io import write_jsonl
    from pluralign.policy.maxmin import (
        PAIRINGS,
        MaxMinConfig,
        PolicyMeta,
        base_model_id,
        maxmin_scores,
        ranked_pairs,
        save_policy,
        tokenize_pairs,
        train_maxmin,
        trained_lengths,
        with_lora,
    )
    from pluralign.policy.style_groups import feature_pairs, preference_pairs, win_rates, win_scores
    from pluralign.reward.em import EMConfig, EMMixture

    extra_parts = [f"train-{j}" for j in range(2, args.samples + 1)]  # further samples of the training answers
    answers = base_answers(work, {**splits, **{part: splits["train"] for part in extra_parts}}, seed, args.max_new_tokens, args.base_model, args.min_new_tokens)
    shares = {"enthusiastic": majority, "concise": round(1 - majority, 6)}
    comparisons = preference_pairs(splits["train"], answers["train"], shares, users=args.users, pairs_per_user=12, seed=seed, brief_words=args.brief_words)
    batch = feature_pairs(comparisons)
    truth = {r.user_id: r.attributes["group"] for r in comparisons}
    results = []
    for objective in sorted(args.objectives, key=["single", "maxmin"].index):  # the single first: its validation sets MaxMin's majority floor
        k = {"single": 1, "maxmin": 2}[objective]
        reference = next((r["curve"] for r in results if r["objective"] == "single"), None)

        def report(curve, objective=objective, reference=reference):  # this command's selection of what each step reports
            apply_selection(curve, objective, shares, args.select, reference, args.majority_tolerance if args.majority_tolerance >= 0 else None,
                            args.maxmin_rule, args.minority_gain)

        if (seed, majority, objective) in (stored or {}):
            result = stored[(seed, majority, objective)]
            report(result["curve"])
            print(f"  seed {seed} {objective}-{round(majority * 100)}: reused from {work.parent / 'results.json'} (same training setting); reports steps "
                  + ", ".join(f"{c['step']}->{c['selected_step']}" for c in result["curve"]), flush=True)
            results.append(result)
            continue
        heads = EMMixture(EMConfig(k=k, restarts=4, seed=seed))
        heads.fit(batch, batch.select([]))
        clusters = heads.user_clusters()
        ari = adjusted_rand_score([truth[u] for u in batch.users], [clusters[u] for u in batch.users]) if k > 1 else None
        pairs = []
        for prompt, cands, rewards in candidates_and_rewards(splits["train"], answers["train"], heads, [answers[p] for p in extra_parts], args.brief_words):
            scores = maxmin_scores(rewards, heads.mixing_weights(), tie_break=args.tie_break)
            pairs += ranked_pairs(prompt, cands, scores, source=f"{objective}-{k}-heads", pairing=PAIRINGS[args.pairing])
        tag = f"{objective}-{round(majority * 100)}"
        write_jsonl(pairs, work / f"pairs-{tag}.jsonl")
        digest = pairs_digest(pairs)
        twin = (same_pairs or {}).get((seed, objective, digest))
        if twin is not None:  # the same pairs and training: the same policy, whatever the shares
            result = {**json.loads(json.dumps(twin)), "majority": majority, "ari": ari, "reused_from_majority": twin.get("reused_from_majority", twin["majority"])}
            report(result["curve"])
            print(f"  seed {seed} {tag}: the same {len(pairs)} pairs as the {objective} run at majority {twin['majority']}: reused (reports steps "
                  + ", ".join(f"{c['step']}->{c['selected_step']}" for c in result["curve"]) + ")", flush=True)
            results.append(result)
            continue

        config = MaxMinConfig(objective=objective, beta=args.beta, lr=args.lr, steps=args.steps, batch_size=args.batch_size, lora_layers=args.lora_layers, chosen_nll_weight=args.nll, dpo_weight=args.dpo, seed=seed)
        base, tokenizer = load_base(args.base_model)  # a fresh base: peft wraps it in place
        policy = with_lora(base, config)
        if trained is not None:  # --checkpoints-from: that command's training, this command's test questions
            source = trained.get((seed, majority, objective))
            if source is None or source.get("pairs_digest") != digest:
                raise CheckpointsError(f"--checkpoints-from: no run seed {seed} {tag} trained on these {len(pairs)} pairs in {args.checkpoints_from}")
            # the folder its run recorded (a run reused through --reuse keeps its twin's), else the one beside the results
            # (runs before session 14's review; a run reused from another share trained under that share's tag)
            folder = Path(source["checkpoints"]) if "checkpoints" in source else \
                checkpoint_folder(Path(args.checkpoints_from).parent / f"seed-{seed}", f"{objective}-{round(source.get('reused_from_majority', majority) * 100)}")
            curve = evaluate_checkpoints(source, folder, policy, tokenizer, splits, answers, seed, args.max_new_tokens, args.min_new_tokens)
            report(curve)
            print(f"  seed {seed} {tag}: answered the test questions with the {len(curve) - 1} checkpoints of {folder} (reports steps "
                  + ", ".join(f"{c['step']}->{c['selected_step']}" for c in curve) + ")", flush=True)
            results.append({**{k: source[k] for k in ("heads", "pairing", "pairs", "seconds_per_step", "peak_memory_mb", "loss")},
                            "seed": seed, "majority": majority, "objective": objective, "training": training_setting(args), "ari": ari, "pairs_digest": digest,
                            "curve": curve, "checkpoints_from": str(Path(args.checkpoints_from).resolve()), "checkpoints": str(folder)})  # the folder: so a third set can answer from these results too
            continue
        curve: list[dict] = []
        weights: dict[int, dict] = {}  # every checkpoint's LoRA weights (a few MB each): the selected one is saved

        def measure(step, model, curve=curve, weights=weights, tokenizer=tokenizer, tag=tag):
            from peft import get_peft_model_state_dict

            if step == 0:  # the fresh LoRA is the identity (B = 0): its samples are the base's, same seeds
                said = {part: answers[part] for part in ("val", "test")}
            else:  # the base's seeds per split (base_answers), so a policy that changed nothing ties everywhere
                said = {part: sample_answers(model, tokenizer, splits[part], part, seed + SAMPLING_SEED_OFFSET[part], args.max_new_tokens, args.min_new_tokens)
                        for part in ("val", "test")}
            val = win_rates(said["val"], answers["val"])
            last = win_scores(said["test"], answers["test"])
            weights[step] = {n: t.detach().clone() for n, t in get_peft_model_state_dict(model).items()}
            kept = {}
            if step > 0:  # kept on disk too, so another command answers other test questions with them (--checkpoints-from)
                import hashlib

                from safetensors.torch import save

                data = save({n: t.cpu().contiguous() for n, t in weights[step].items()})
                checkpoint_folder(work, tag).mkdir(parents=True, exist_ok=True)
                checkpoint_file(checkpoint_folder(work, tag), step).write_bytes(data)
                kept = {"checkpoint_sha256": hashlib.sha256(data).hexdigest()}
            curve.append({
                "step": step, "val": val, "last_test_scores": last, "last_test_answers": said["test"], "last_val_answers": said["val"],
            } | kept)  # lengths, exclamation marks and samples derive from the answers (runs before them kept only those)
            rates = {g: sum(w) / len(w) for g, w in last.items()}
            print(f"  seed {seed} {tag} step {step:3d}: test win enthusiastic {rates['enthusiastic']:.2f} concise {rates['concise']:.2f} "
                  f"| val {val['enthusiastic']:.2f}/{val['concise']:.2f} | {said['test'][0][:60]!r}", flush=True)

        shutil.rmtree(checkpoint_folder(work, tag), ignore_errors=True)  # no file of an earlier training stays among this one's
        log = train_maxmin(policy, tokenize_pairs(pairs, tokenizer, config.max_length, config.max_prompt_length), config, callback=measure, every=args.every)
        report(curve)
        for point in curve:
            print(f"  seed {seed} {tag} step {point['step']:3d} reports step {point['selected_step']} (validation: {', '.join(f'{g} {v:.2f}' for g, v in point['val'].items())}"
                  + (f"; majority floor {point['majority_floor']:.2f}" if point["majority_floor"] is not None else "")
                  + (f"; bar margin {point['bar_margin']:+.2f}" if "bar_margin" in point else "") + ")", flush=True)
        if args.select == "validation":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(policy, weights[curve[-1]["selected_step"]])
        meta = PolicyMeta(schema_version=1, kind="maxmin-lora", base_model=base_model_id(base), objective=objective, heads=k, steps=curve[-1]["selected_step"], beta=config.beta, lora_r=config.lora_r,
                        **trained_lengths(config))
        save_policy(policy, work / f"policy-{tag}", meta)
        results.append({
            "seed": seed, "majority": majority, "objective": objective, "training": training_setting(args), "heads": k, "pairing": args.pairing, "ari": ari, "pairs": len(pairs),
            "pairs_digest": digest, "checkpoints": str(checkpoint_folder(work, tag).resolve()),
            "curve": curve, "seconds_per_step": log.seconds_per_step, "peak_memory_mb": log.peak_memory_mb, "loss": log.loss,
        })
        print(f"  seed {seed} {tag}: {len(pairs)} pairs, {log.seconds_per_step:.2f} s/step, peak {log.peak_memory_mb:.0f} MB, ARI {ari}", flush=True)
    return results


def argmax_scores(splits: dict[str, list[str]], answers: dict[str, list[str]], seed: int, majority: float, users: int,
                  tie_break: float = 0.0, split: str = "test", brief_words: int = 1) -> dict[str, dict[str, list[float]]]:
    """What a policy that imitated its objective's ranking perfectly would score (`--ceiling`): per
    objective, each group's win score per test question (`win_scores`, ties half) when the policy
    answers with the objective's top candidate among the style variants of the base's own test
    answer (`split`: another split's questions instead). The heads are EM's, fitted on the same
    users' comparisons as the trained runs; `tie_break` as in `maxmin_scores`, `brief_words` as in
    `style_variants`."""
    from pluralign.policy.maxmin import maxmin_scores
    from pluralign.policy.style_groups import feature_pairs, preference_pairs, win_scores
    from pluralign.reward.em import EMConfig, EMMixture

    shares = {"enthusiastic": majority, "concise": round(1 - majority, 6)}
    batch = feature_pairs(preference_pairs(splits["train"], answers["train"], shares, users=users, pairs_per_user=12, seed=seed, brief_words=brief_words))
    out = {}
    for objective, k in (("single", 1), ("maxmin", 2)):
        heads = EMMixture(EMConfig(k=k, restarts=4, seed=seed))
        heads.fit(batch, batch.select([]))
        tops = [cands[int(np.argmax(maxmin_scores(rewards, heads.mixing_weights(), tie_break=tie_break)))]
                for _, cands, rewards in candidates_and_rewards(splits[split], answers[split], heads, brief_words=brief_words)]
        out[objective] = win_scores(tops, answers[split])
    return out


def ceiling(args, seeds: list[int], splits: dict[str, list[str]]) -> dict:
    """`--ceiling`: `argmax_scores` for every seed and majority share, summarized over seeds and
    test questions like the trained runs (`majority_gap`, `minority_gain` and each objective's win
    rates). No policy is trained; only the base's answers are generated (or read from WORK)."""
    from benchmarks.intervals import summarize

    out, per_seed = {}, {}
    for s in seeds:
        work = Path(args.work) / f"seed-{s}"
        work.mkdir(parents=True, exist_ok=True)
        per_seed[s] = base_answers(work, {p: splits[p] for p in ("train", args.ceiling_split)}, s, args.max_new_tokens, args.base_model, args.min_new_tokens)
    for majority in args.majority:
        scores = {s: argmax_scores(splits, per_seed[s], s, majority, args.users, args.tie_break, args.ceiling_split, args.brief_words) for s in seeds}
        row = {o: {g: summarize([scores[s][o][g] for s in seeds], seeds) for g in ("enthusiastic", "concise")} for o in ("single", "maxmin")}
        for name, group in (("majority_gap", "enthusiastic"), ("minority_gain", "concise")):
            row[name] = summarize([[a - b for a, b in zip(scores[s]["maxmin"][group], scores[s]["single"][group], strict=True)] for s in seeds], seeds)
        out[str(majority)] = row
    return out


def pool_test_sets(results: list[dict], others: list[list[dict]]) -> tuple[list[dict], str]:
    """`--pool`: each run of `results` (one test set's) with its reported checkpoints' test scores
    joined to those of the same run (seed, majority, objective) in each of `others` (results.json
    lists of the same command on other test sets), in `TEST_SETS` order, so the summary is over every
    set's questions; with all five sets, what `--test-set all` reports. Every set must be one
    training: the same training setting but for `test_set`, and the same checkpoints with the same
    validation scores. Each step reports, on every set, the checkpoint this command's selection chose
    (`results`' `selected_step`, on validation; another set's command may have selected otherwise:
    its checkpoints' own test scores, `last_test_scores`, are what is pooled).
    Returns (the pooled runs, the pooled sets' name: "all" for the five, else "main+confirm" and the
    like). Raises ValueError naming the run or list and what differs: a list of runs on more than
    one set, on "all", or on a set already pooled; a run missing from a list or found in it twice."""
    sets: dict[str, dict] = {}
    for runs in [results, *others]:
        named = {r.get("training", {}).get("test_set", "main") for r in runs}
        if len(named) != 1 or not named <= TEST_SETS.keys():
            raise ValueError(f"--pool: a list of runs tested on {sorted(named)}: each list must hold one of {list(TEST_SETS)}")
        name = named.pop()
        if name in sets:
            raise ValueError(f"--pool: two lists of runs tested on {name!r}")
        found: dict = {}
        for r in runs:
            key = (r["seed"], r["majority"], r["objective"])
            if key in found:
                raise ValueError(f"--pool: run {run_names([key])} is in the {name!r} results twice")
            found[key] = r
        sets[name] = found
    order = [name for name in TEST_SETS if name in sets]
    pooled = []
    for run in results:
        key = (run["seed"], run["majority"], run["objective"])
        name = run_names([key])
        twins = []
        for test_set in order:
            other = sets[test_set].get(key)
            if other is None:
                raise ValueError(f"--pool: no run {name} in the {test_set!r} results")
            mine, theirs = training_but_test_set(run["training"]), training_but_test_set(other["training"])
            if mine != theirs:
                raise ValueError(f"--pool: run {name} on {test_set!r} was trained otherwise: " + ", ".join(sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))))
            if [(c["step"], c["val"]) for c in run["curve"]] != [(c["step"], c["val"]) for c in other["curve"]]:
                raise ValueError(f"--pool: run {name} on {test_set!r} has other checkpoints or scored validation otherwise: not one training")
            if "pairs_digest" in run and "pairs_digest" in other and run["pairs_digest"] != other["pairs_digest"] or any(
                    "checkpoint_sha256" in c and "checkpoint_sha256" in o and c["checkpoint_sha256"] != o["checkpoint_sha256"] for c, o in zip(run["curve"], other["curve"], strict=True)):
                raise ValueError(f"--pool: run {name} on {test_set!r} trained on other pairs or kept other checkpoint files: not one training")
            twins.append(other)
        scored = [{c["step"]: c["last_test_scores"] for c in twin["curve"]} for twin in twins]  # every checkpoint's own test scores, per set
        curve = [{**c, "test_scores": {g: [x for by_step in scored for x in by_step[c["selected_step"]][g]] for g in c["test_scores"]}} for c in run["curve"]]
        pooled.append({**run, "curve": curve})
    return pooled, ALL_SETS if order == list(TEST_SETS) else "+".join(order)


def summarize_runs(results: list[dict], seeds: list[int], majority: float) -> dict:
    """Per step: each objective's win rates and the MaxMin-minus-single gaps over seeds and test questions."""
    from benchmarks.intervals import summarize

    runs = {(r["seed"], r["objective"]): r for r in results if r["majority"] == majority}
    objectives = sorted({o for _, o in runs})
    steps = [c["step"] for c in runs[(seeds[0], objectives[0])]["curve"] if c["step"] > 0]
    out: dict = {"majority": majority, "seeds": seeds, "steps": {}}
    for step in steps:
        def scores(objective, group, step=step):
            return [next(c for c in runs[(s, objective)]["curve"] if c["step"] == step)["test_scores"][group] for s in seeds]

        row: dict = {}
        for objective in objectives:
            row[objective] = {g: summarize(scores(objective, g), seeds) for g in ("enthusiastic", "concise")}
            row[objective]["selected_step"] = {str(s): next(c for c in runs[(s, objective)]["curve"] if c["step"] == step)["selected_step"] for s in seeds}
        if set(objectives) == {"maxmin", "single"}:
            for name, group in (("majority_gap", "enthusiastic"), ("minority_gain", "concise")):
                row[name] = summarize([[a - b for a, b in zip(x, y, strict=True)] for x, y in zip(scores("maxmin", group), scores("single", group), strict=True)], seeds)
        out["steps"][str(step)] = row
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (`main` checks them together after parsing)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--majority", type=float, nargs="+", default=[0.8, 0.9], help="majority shares to run")
    parser.add_argument("--objectives", nargs="+", default=["single", "maxmin"], choices=["single", "maxmin"])
    parser.add_argument("--pairing", default="best", choices=["best", "all"], help="best: the objective's top candidate vs each other; all: every pair")
    parser.add_argument("--samples", type=int, default=1, help="base answers sampled per training question; their style variants are the candidates the objectives rank (users compare the first sample's)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="evaluate win rates every N steps (every checkpoint is a candidate for validation selection)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step (default 16; 8: the runs recorded from 1 Dec 2026, 12:26 UTC, to 15:35 UTC; 4: those before; see the module docstring)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--nll", type=float, default=3.0, help="weight of the chosen answer's NLL next to DPO")
    parser.add_argument("--dpo", type=float, default=1.0, help="weight of the DPO term (0: fine-tune on each question's top-ranked candidate alone, RAFT)")
    parser.add_argument("--lora-layers", type=int, default=4, help="adapt only the last N layers (0: all)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--min-new-tokens", type=int, default=4, help="no answer (base or policy, every split) ends before this many tokens (0: no minimum); see the module docstring")
    parser.add_argument("--tie-break", type=float, default=TIE_BREAK,
                        help=f"weight of the groups' share-weighted mean in the MaxMin score (maxmin_scores; default {TIE_BREAK}): it orders candidates whose worst group fares the same; 0: the plain minimum, the runs before it")
    parser.add_argument("--validation-topics", type=int, default=len(VALIDATION_TOPICS),
                        help=f"choose checkpoints on the first N validation topics, two questions each (default all {len(VALIDATION_TOPICS)}; 12: the set before 1 Dec 2026)")
    parser.add_argument("--brief-words", type=int, default=BRIEF_WORDS,
                        help=f"the brief variants run to the first sentence end that closes at least N words (style_groups.first_sentence; default {BRIEF_WORDS}); 1: the first sentence however short, the runs before it")
    parser.add_argument("--test-set", default=ALL_SETS, choices=[*TEST_SETS, ALL_SETS],
                        help="the test questions: all (the default from 1 Dec 2026, 18:34 UTC: the five sets below, 240 questions, each set answered as its own command answers it), "
                             "main (the first set: the 48 of every run recorded before the confirmation set, and the default before), confirm (48 on CONFIRM_TOPICS, a confirmation set), "
                             "fresh (48 on FRESH_TOPICS, a third set), fourth (48 on FOURTH_TOPICS) or fifth (48 on FIFTH_TOPICS); each needs its own --work: the base's test answers are cached per work folder")
    parser.add_argument("--pool", nargs="+", default=[], metavar="RESULTS",
                        help="results.json files of the same command on other test sets (one set each): report each step over every set's questions, this command's included, "
                             "in the order of --test-set's list (pool_test_sets; all five: what --test-set all reports)")
    parser.add_argument("--select", default="validation", choices=["validation", "last"], help="validation: report each step's best checkpoint so far on the validation questions; last: the weights at that step")
    parser.add_argument("--maxmin-rule", default="floor", choices=list(MAXMIN_RULES),
                        help="with --select validation, how MaxMin's checkpoint is chosen against the single policy's reported validation rates: floor (the best worst group among checkpoints whose majority is within --majority-tolerance) or margin (the widest margin by which both halves of the bar clear: majority within --majority-tolerance, minority ahead by --minority-gain; bar_margin)")
    parser.add_argument("--minority-gain", type=float, default=0.20, help="with --maxmin-rule margin, the minority gain (win rate) the margin is measured from (default 0.20, the bar's)")
    parser.add_argument("--majority-tolerance", type=float, default=0.05, help="with --select validation, MaxMin only reports checkpoints whose validation majority win is at most this far (win rate, 0.05 = 5 points) below the single policy's reported one at that step (no floor when the single is not run: --objectives maxmin); negative: no floor")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N questions of each split (0: all; a cheaper, noisier setting)")
    parser.add_argument("--users", type=int, default=100, help="simulated users comparing training answers")
    parser.add_argument("--base-model", default=None, help="a causal LM folder (save_pretrained) instead of SmolLM2-135M-Instruct")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--work", default="runs/maxmin-bench")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: --seed)")
    parser.add_argument("--seed", type=int, default=0, help="one seed (the same as --seeds N)")
    parser.add_argument("--rejudge", action="store_true", help="score the stored runs of WORK that kept their answers again with today's judge (no training), then reuse them")
    parser.add_argument("--fresh", action="store_true", help="train every run again, even those WORK/results.json holds with the same training setting")
    parser.add_argument("--checkpoints-from", default=None, metavar="RESULTS",
                        help="train nothing: the results.json of the same command on another --test-set, whose work folder kept every checkpoint (seed-S/checkpoints-TAG, runs from 1 Dec 2026, 15:35 UTC): its checkpoints answer this command's test questions (evaluate_checkpoints)")
    parser.add_argument("--reuse", nargs="*", default=[], metavar="RESULTS", help="results.json files of other commands (e.g. another --majority): a run of the same seed, objective, training setting and pairs is reused, not trained")
    parser.add_argument("--out", default=None, help="write the summary over seeds (JSON) to this file")
    parser.add_argument("--ceiling", action="store_true", help="train nothing: score each objective's top candidate among the style variants of the base's own test answers, or --ceiling-split's (what imitating the ranking perfectly would give)")
    parser.add_argument("--ceiling-split", default="test", choices=["train", "val", "test"], help="with --ceiling: the questions to score (val: a choice made on validation)")
    parser.add_argument("--json", action="store_true", help="print the contract line last: {\"steps\": {STEP: {\"majority_gap\": [lo, hi], \"minority_gain\": [lo, hi]}}}")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else [args.seed]
    if args.json and set(args.objectives) != {"single", "maxmin"}:
        parser.error("--json reports MaxMin minus single: run both --objectives")
    if args.dpo < 0 or args.nll < 0 or args.dpo + args.nll == 0:
        parser.error(f"--dpo ({args.dpo}) and --nll ({args.nll}) must be >= 0 and not both 0: the policy needs a loss")
    if any(not 0.5 <= m < 1 for m in args.majority):  # shares of the enthusiastic majority; the concise minority needs users
        parser.error(f"--majority {' '.join(map(str, args.majority))}: each share must be in [0.5, 1)")
    if args.users < 1 or args.max_new_tokens < 1 or args.limit < 0:
        parser.error(f"--users ({args.users}) and --max-new-tokens ({args.max_new_tokens}) must be >= 1, --limit ({args.limit}) >= 0")
    if not 0 <= args.min_new_tokens <= args.max_new_tokens:
        parser.error(f"--min-new-tokens ({args.min_new_tokens}) must be in [0, --max-new-tokens ({args.max_new_tokens})]")
    if not 1 <= args.validation_topics <= len(VALIDATION_TOPICS):
        parser.error(f"--validation-topics ({args.validation_topics}) must be in [1, {len(VALIDATION_TOPICS)}]")
    if not args.tie_break >= 0 or args.tie_break == float("inf"):  # NaN fails the first test
        parser.error(f"--tie-break ({args.tie_break}) must be a finite number >= 0")
    wanted = {(s, m, o) for s in seeds for m in args.majority for o in args.objectives}  # the runs this command reports
    pooled_runs = []
    if args.pool:
        if args.test_set == ALL_SETS or args.ceiling:
            parser.error(f"--pool ({' '.join(args.pool)}) joins other test sets' runs to this command's: it needs one --test-set other than {ALL_SETS!r} (--test-set main, say) and no --ceiling")
        pooled_sets: dict[str, str] = {}
        mine = training_but_test_set(training_setting(args))
        for path in args.pool:  # every check pool_test_sets makes that needs no training, before any
            try:
                runs = json.loads(Path(path).read_text())
                if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) and {"seed", "majority", "objective", "curve", "training"} <= r.keys() for r in runs):
                    raise ValueError("not a results.json (a list of runs, each with its training setting)")
                named = sorted({r["training"].get("test_set", "main") for r in runs})
                if len(named) != 1 or named[0] in (args.test_set, ALL_SETS):
                    raise ValueError(f"runs tested on {named}: each file must hold one test set's runs, neither this command's ({args.test_set!r}) nor {ALL_SETS!r}")
                if named[0] in pooled_sets:
                    raise ValueError(f"its runs are tested on {named[0]!r}, as those of {pooled_sets[named[0]]}")
                missing = wanted - {(r["seed"], r["majority"], r["objective"]) for r in runs}
                if missing:
                    raise ValueError("it has no run " + run_names(missing))
                differ = sorted({k for r in runs for k, v in training_but_test_set(r["training"]).items() if mine.get(k) != v} |
                                {k for r in runs for k in mine.keys() - training_but_test_set(r["training"]).keys()})
                if differ:
                    raise ValueError(f"its runs were trained otherwise than this command's (they differ in {', '.join(differ)})")
            except (OSError, ValueError) as error:
                parser.error(f"--pool ({path}): {error}")
            pooled_sets[named[0]] = path
            pooled_runs.append(runs)
    if args.maxmin_rule == "margin" and (args.majority_tolerance < 0 or not 0 <= args.minority_gain <= 1 or 0.5 in args.majority):
        parser.error(f"--maxmin-rule margin measures from a majority and a minority: it needs --majority-tolerance >= 0 (got {args.majority_tolerance}), "
                     f"--minority-gain in [0, 1] (got {args.minority_gain}) and no --majority 0.5")
    if args.brief_words < 1:
        parser.error(f"--brief-words ({args.brief_words}) must be >= 1")
    if len(set(seeds)) < len(seeds):
        parser.error(f"--seeds {' '.join(map(str, seeds))}: a seed given twice would count twice over seeds")

    train_q, val_q, test_q = questions(args.validation_topics, args.test_set, args.limit or None)
    splits = {"train": train_q, "val": val_q, "test": test_q}
    elsewhere = Path(args.work) / "results.json"
    if elsewhere.exists():  # training here would replace that run's checkpoints and results (and --ceiling its base answers' cache)
        same = training_but_test_set(training_setting(args))
        try:
            held = json.loads(elsewhere.read_text())
            if not isinstance(held, list) or not all(isinstance(r, dict) for r in held):
                raise ValueError("not a list of runs")
        except (OSError, ValueError) as error:
            parser.error(f"--work ({args.work}): its results.json cannot be read ({error}); move it away or give another --work")
        tested = sorted({r.get("training", {}).get("test_set", "main") for r in held if training_but_test_set(r.get("training", {})) == same} - {args.test_set})
        if tested:
            parser.error(f"--work ({args.work}) holds runs of this training tested on {', '.join(tested)}: give --test-set {args.test_set} its own --work "
                         f"(its checkpoints and results.json would be replaced; commands recorded before 1 Dec 2026, 18:34 UTC ran 'main': add --test-set main)")
    if args.ceiling:
        from benchmarks.bars import points, span

        rows = ceiling(args, seeds, splits)
        print(f"each objective's top candidate among the style variants of the base's own {args.ceiling_split} answer, {len(seeds)} seed(s) x {len(splits[args.ceiling_split])} {args.ceiling_split} questions:")
        print("| majority/minority | policy | enthusiastic (majority) | concise (minority) |")
        print("|---|---|---|---|")
        for m, row in rows.items():
            split = f"{round(float(m) * 100)}/{round((1 - float(m)) * 100)}"
            for name in ("single", "maxmin"):
                print(f"| {split} | {name} | " + " | ".join(f"{row[name][g]['mean']:.3f} ({' / '.join(f'{v:.2f}' for v in row[name][g]['per_seed'].values())})" for g in ("enthusiastic", "concise")) + " |")
            for name in ("majority_gap", "minority_gain"):
                c = row[name]
                print(f"| {split} | {name} | {points(c['mean'])} {span(c['interval'])} (per seed {' / '.join(points(v) for v in c['per_seed'].values())}) | |")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"benchmark": "maxmin_ceiling", "seeds": seeds, "users": args.users, "min_new_tokens": args.min_new_tokens, "tie_break": args.tie_break, "brief_words": args.brief_words, "test_set": args.test_set, "split": args.ceiling_split, "judge": JUDGE, "questions": {p: len(q) for p, q in splits.items()}, "majority": rows}, indent=1) + "\n")
        if args.json:
            print(json.dumps({"ceiling": {m: {n: row[n]["interval"] for n in ("majority_gap", "minority_gain")} for m, row in rows.items()}}))
        return
    print(f"questions: {len(splits['train'])} train, {len(splits['val'])} validation, {len(splits['test'])} test; seeds {seeds}; {args.min_new_tokens} to {args.max_new_tokens} new tokens")
    results: list[dict] = []
    setting = {k: v for k, v in vars(args).items() if k not in ("json", "out", "work", "seed", "seeds")} | {"questions": {p: len(q) for p, q in splits.items()}, "judge": JUDGE}
    if args.rejudge and not args.fresh:
        print(f"scored again with today's judge: {rejudge(Path(args.work), splits, args.validation_topics, args.test_set)} stored run(s)")
    # runs of this training in WORK that this command does not run (other seeds or shares) stay in its results.json
    kept = stored_runs(Path(args.work) / "results.json", training_setting(args))
    stored = {} if args.fresh else kept
    trained = None
    if args.checkpoints_from:
        if Path(args.checkpoints_from).resolve().parent == Path(args.work).resolve():
            parser.error(f"--checkpoints-from ({args.checkpoints_from}) is this command's own results: give the other test set's command its own --work")
        try:
            trained = trained_elsewhere(Path(args.checkpoints_from), training_setting(args))
        except CheckpointsError as error:
            parser.error(str(error))
        lacking = wanted - trained.keys()
        if lacking:  # before any seed is answered
            parser.error(f"--checkpoints-from ({args.checkpoints_from}) has no run {run_names(lacking)} trained with this command's setting")
    reuse = [Path(f) for f in args.reuse]
    for done, seed in enumerate(seeds, 1):
        work = Path(args.work) / f"seed-{seed}"
        work.mkdir(parents=True, exist_ok=True)
        for majority in args.majority:
            # read again for each seed: the command that --reuse names may still be running
            same_pairs = runs_by_pairs(reuse, training_setting(args)) | {(r["seed"], r["objective"], r["pairs_digest"]): r for r in results if "pairs_digest" in r}
            try:
                results += run_seed(args, seed, majority, splits, work, stored, same_pairs, trained)
            except CheckpointsError as error:
                parser.error(str(error))
            produced = {(r["seed"], r["majority"], r["objective"]) for r in results}
            (Path(args.work) / "results.json").write_text(json.dumps(results + [r for key, r in kept.items() if key not in produced], indent=1))
        # the summary over the seeds finished so far: a run cut short still leaves its figures
        summaries = {str(m): summarize_runs(results, seeds[:done], m) for m in args.majority}
        full = {"benchmark": "maxmin_policy", "setting": setting | {"seeds": seeds[:done]}, "majority": summaries,
                "seconds_per_step": {f"{r['seed']}-{r['objective']}-{r['majority']}": r["seconds_per_step"] for r in results}}
        if args.out and not args.pool:  # a pooled --out is written once, below, or not at all
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(full, indent=1) + "\n")

    if args.pool:
        try:
            results, pooled_name = pool_test_sets(results, pooled_runs)
        except ValueError as error:
            parser.error(str(error))
        pooled_questions = {len(c["test_scores"]["enthusiastic"]) for r in results for c in r["curve"]}
        if len(pooled_questions) != 1:
            parser.error(f"--pool: the pooled runs hold {sorted(pooled_questions)} test questions: not one question set")
        # each set's answers are its own command's (trained, or answered by that training's checkpoints): this command's --checkpoints-from is one set's
        setting = setting | {"test_set": pooled_name, "checkpoints_from": None, "questions": setting["questions"] | {"test": pooled_questions.pop()}}
        summaries = {str(m): summarize_runs(results, seeds, m) for m in args.majority}
        full = full | {"setting": setting | {"seeds": seeds}, "majority": summaries}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(full, indent=1) + "\n")
    print(f"\nwin rate vs the base over {len(seeds)} seed(s) x {setting['questions']['test']} test questions: mean +- sd over seeds [95% interval] (per seed), {'validation-selected checkpoint' if args.select == 'validation' else 'last weights'}")
    print("| majority/minority | step | policy | enthusiastic (majority) | concise (minority) |")
    print("|---|---|---|---|---|")
    for m, summary in summaries.items():
        split = f"{round(float(m) * 100)}/{round((1 - float(m)) * 100)}"
        for step, row in summary["steps"].items():
            for name in [o for o in ("single", "maxmin", "majority_gap", "minority_gain") if o in row]:
                cells = [row[name]] * 2 if name in ("majority_gap", "minority_gain") else [row[name]["enthusiastic"], row[name]["concise"]]
                text = [f"{c['mean']:+.2f} +- {c['sd_over_seeds']:.2f} [{c['interval'][0]:+.2f}, {c['interval'][1]:+.2f}] ({' / '.join(f'{v:+.2f}' for v in c['per_seed'].values())})" for c in cells]
                if name == "majority_gap":
                    text[1] = ""
                if name == "minority_gain":
                    text[0] = ""
                print(f"| {split} | {step} | {name} | {text[0]} | {text[1]} |")
    if args.json:
        def contract(summary):
            return {"steps": {step: {name: row[name]["interval"] for name in ("majority_gap", "minority_gain")} for step, row in summary["steps"].items()}}

        line = contract(summaries[str(args.majority[0])]) if len(args.majority) == 1 else {"majority": {m: contract(s) for m, s in summaries.items()}}
        print(json.dumps(line))


if __name__ == "__main__":
    main()
