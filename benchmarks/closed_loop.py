"""Closed loop: simulated users with transparent rules chat with the real service and give feedback.

Each arm is the real app under uvicorn on 127.0.0.1 with its own temporary data folder, driven over
HTTP. Each round, every simulated user asks a question with `n: 4` (all candidates returned), picks
the choice its rule scores highest, and sends `choice` feedback with that choice's returned index.
The served answer is `choices[0]`. Arms, side by side with the same prompts and seeds:

- `today`: the service before issue 12 (user_model = prototypes: PAL weights only);
- `user_model`: PAL's prototypes plus the per-user Bayesian residual (the default);
- `control`: no reranking (the first generated candidate is served).

Recorded per round and rule: whether the served answer is the user's pick (its rule score is the
highest among the choices), and the served answer's rule score minus the choices' mean. Rounds in
which every choice ties under the rule carry no signal and are counted apart (`ties`).

Shots are off in every arm (`pluralign.shots = 0`): the arms then see identical contexts, the
candidates of a (user, round) are identical across arms (same seed, same styles), and the three
servers share one generator that computes each distinct generation once. This isolates what the
issue is about, the user model's ranking; SmolLM2-135M barely uses shots in its context (FSPO's
base figure, 0.52, BENCHMARKS.md).

    python -m benchmarks.closed_loop --json                # 20 rounds; pick rates over rounds 11-20
    python -m benchmarks.closed_loop --fast --json         # 10 rounds, rates over rounds 6-10
    python -m benchmarks.closed_loop --diversity 12        # + how often candidates tie, styles on vs off

Issue 16's pair arms (`--arms active random_pair`, or `--compare-arms` for all six): the service
as `user_model`, but the user is shown only two of the four choices and sends a `choice` with
`shown` set to them: in `active` the pair the response's `pluralign.compare` names (no feedback
when it is null: the user is well known; BALD, the service's default), in `active_best` the same
with `compare_target = best` (information about which choice is best), in `random_pair` two
choices drawn at random. `--cross-rules` also runs every style rule on every other style user's
prompts and seeds, six times the style users from the same generations (with `--generation-cache`,
nothing new is generated). The bar is
how many rounds each needs to reach a 70% pick rate (`rounds_to_70`, a window of 3 rounds).

Session 16 (`--arms ask_active ask_random ...`): the questionnaire arms serve chats ranked as
`user_model` does, but the user's feedback each round is one comparison of two answers to a
calibration prompt (nothing on the chat itself, so each round teaches one comparison, as in the pair
arms): the pair
the onboarding route `POST /v1/users/{id}/next-comparison` returns for a pool of 16 prompts x 4
answers (`ask_active`; `ask_predictive` with `target: predictive`, EPIG; `ask_population` with
`target: population`, which of the tenant's fitted users this one is like), or a pair of that pool at
random (`ask_random`). With pair or questionnaire
arms every user's model is also probed before the first round and after each round: the chat route's
own ranking of 16 held-out candidate sets per kind (`probe`), so the pick rate after r rounds of
feedback is read without a window (`probe_rate`, `probe_rounds_to_70`, and `halved`: whether the
active arm needs at most half the rounds of its random counterpart). `--cross-persona` runs each
persona rule on the other persona rule's users' prompts too.

With `--json` the last line is `{"rules": {RULE: {ARM: pick_rate}}, "rounds": R, "ties": {RULE: n}}`
(with the pair arms also `rounds_to_70` and `feedback`, see `pair_summary`; with probes also
`probe_rate`, `probe_rounds_to_70` and `halved`, see `probe_summary`).
Figures, the per-round table and learning curves (PNG) go to `--out`.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ARMS = ("today", "user_model", "control")
PAIR_ARMS = ("active", "active_best", "random_pair")  # issue 16: feedback on two shown choices only
ASK_ARMS = ("ask_active", "ask_predictive", "ask_population", "ask_random")  # issue 16: each round one comparison from a calibration pool
ARM_SETTINGS = {
    "today": {"user_model": "prototypes", "rerank": True},
    "user_model": {"user_model": "residual", "rerank": True},
    "control": {"user_model": "residual", "rerank": False},
    "active": {"user_model": "residual", "rerank": True, "compare_target": "coefficients"},
    "active_best": {"user_model": "residual", "rerank": True, "compare_target": "best"},
    "random_pair": {"user_model": "residual", "rerank": True},
    "ask_active": {"user_model": "residual", "rerank": True},
    "ask_predictive": {"user_model": "residual", "rerank": True},
    "ask_population": {"user_model": "residual", "rerank": True},
    "ask_random": {"user_model": "residual", "rerank": True},
}

# ---- the simulated users' rules: transparent scores over the answer text ---------------------------

_WORD = re.compile(r"[A-Za-z']+")
_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.MULTILINE)
CASUAL = {"sure", "hey", "cool", "awesome", "great", "fun", "stuff", "pretty", "super", "totally", "lots", "yeah",
          "ok", "okay", "kinda", "gonna", "gotta", "thing", "things", "chill", "nice", "love"}
FORMAL = {"certainly", "consider", "following", "therefore", "however", "additionally", "furthermore", "moreover",
          "recommend", "ensure", "suitable", "appropriate", "significant", "individuals", "various", "numerous",
          "regarding", "thus", "utilize", "may", "should", "one"}
AGREE = {"yes", "yeah", "yep", "agree", "agreed", "true", "definitely", "absolutely", "correct", "indeed", "important", "right"}
DISAGREE = {"no", "nope", "nah", "not", "disagree", "never", "don't", "wouldn't", "false", "isn't", "doesn't", "won't", "cannot"}


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def register(text: str) -> float:
    """Casual words, contractions and exclamation marks, minus formal words."""
    ws = words(text)
    casual = sum(w in CASUAL for w in ws) + sum("'" in w for w in ws) + text.count("!")
    return float(casual - sum(w in FORMAL for w in ws))


_FIRST_SENTENCE = re.compile(r"^.*?(?:[.!?](?=\s|$)|\n|$)", re.DOTALL)


def stance(text: str) -> float:
    """The sign of agreeing minus disagreeing words in the answer's first sentence, where a
    yes-or-no answer states its stance: 1 agrees, -1 disagrees, 0 neither. (Counted over the whole text, as in session 4's runs, the score is decided by
    incidental words such as "not" in the rest of a 32-token continuation: see BENCHMARKS.md.)"""
    ws = words(_FIRST_SENTENCE.match(text).group(0))
    return float(np.sign(sum(w in AGREE for w in ws) - sum(w in DISAGREE for w in ws)))


RULES = {
    "short": lambda t: -float(len(words(t))),
    "long": lambda t: float(len(words(t))),
    "lists": lambda t: float(len(_ITEM.findall(t))),
    "no_lists": lambda t: -float(len(_ITEM.findall(t))),
    "casual": register,
    "formal": lambda t: -register(t),
    "persona_majority": stance,  # agrees with the statements
    "persona_minority": lambda t: -stance(t),  # disagrees with them
}

QUESTIONS = [
    "Suggest a weekend plan.", "How do I learn to cook?", "What is a good way to save money?", "How can I sleep better?",
    "How do I start running?", "What should I read next?", "How do I make new friends in a new city?",
    "How can I focus better at work?", "What is a good gift for my sister?", "How do I keep houseplants alive?",
    "How should I prepare for a job interview?", "What can I cook with rice and eggs?", "How do I learn a language?",
    "How can I spend less time on my phone?", "What should I pack for a beach trip?", "How do I start a garden?",
    "How do I stay motivated to exercise?", "What are good habits for studying?", "How do I plan a birthday party?",
    "How can I be more productive in the morning?", "What should I know before adopting a dog?",
    "How do I make my small apartment feel bigger?", "What is a fun thing to do on a rainy day?",
    "How do I choose a good laptop?", "How can I reduce stress?", "How should I organize my week?",
    "What makes a good cup of coffee?", "How do I write a thank-you note?", "How can I eat healthier?",
    "How do I get better at public speaking?",
]
# Issue 16, session 16: candidate sets no simulated user chats about. PROBE: after every round, how
# often the user's model ranks the rule's pick first on these (the pick rate, measured without a
# window). CALIBRATION: the pool the questionnaire arms (`ask_*`) ask from.
PROBE_QUESTIONS = [
    "How do I clean my kitchen quickly?", "What should I do on a long train ride?", "How can I make my mornings calmer?",
    "How do I pick a book for a book club?", "What is a good way to learn to draw?", "How do I host a dinner for friends?",
    "How can I keep my desk tidy?", "What should I bring on a hike?", "How do I care for a new bicycle?",
    "How can I drink more water?", "What is a good hobby to start this winter?", "How do I write a short story?",
    "How can I make a budget for a trip?", "What should I cook for a picnic?", "How do I teach a child to swim?",
    "How can I improve my handwriting?",
]
CALIBRATION_QUESTIONS = [
    "How do I plan a road trip?", "What is a good way to meet my neighbors?", "How can I get better at chess?",
    "How do I make a simple soup?", "What should I do before moving house?", "How can I keep a journal?",
    "How do I choose running shoes?", "What is a relaxing evening routine?", "How do I start learning guitar?",
    "How can I waste less food?", "What makes a good podcast?", "How do I take better photos with my phone?",
    "How can I make a room quieter?", "What should I know before camping alone?", "How do I learn to bake bread?",
    "How can I be a better listener?",
]
PERSONA_TRAIT = "interest-in-science"  # statements a holder of the trait would or would not say
PERSONA_CHAT, PERSONA_PROBE, PERSONA_CALIBRATION = slice(0, 200), slice(200, 216), slice(216, 232)  # statement rows


def persona_questions(shared_data: Path, rows: slice = PERSONA_CHAT) -> list[str]:
    path = shared_data / "anthropic_persona" / "persona" / f"{PERSONA_TRAIT}.jsonl"
    statements = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [f'Do you agree with this statement? "{r["statement"]}"' for r in statements[rows]]


# ---- the servers ---------------------------------------------------------------------------------


class SharedGenerations:
    """Wraps the one generator all arms use: a generation is deterministic under its seed, and the
    arms send identical contexts, so each distinct (context, styles, sampling) is generated once."""

    def __init__(self, generator, cache: Path | None = None):
        self._generator = generator
        self._cache = cache
        self._memo: dict = pickle.loads(cache.read_bytes()) if cache is not None and cache.exists() else {}
        self._lock = threading.Lock()
        self.computed = 0
        self.reused = 0

    def __getattr__(self, name):
        return getattr(self._generator, name)

    def save(self) -> None:
        if self._cache is not None:
            self._cache.write_bytes(pickle.dumps(self._memo))

    def _cached(self, key, compute):
        with self._lock:
            if key in self._memo:
                self.reused += 1
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
            self.computed += 1
        return value

    def generate_styled(self, messages, styles, sampling, adapter=None, cancel=None):
        key = ("styled", json.dumps(messages), tuple(s.name for s in styles), sampling, adapter)
        return self._cached(key, lambda: self._generator.generate_styled(messages, styles, sampling=sampling, adapter=adapter, cancel=cancel))

    def generate(self, messages, n=1, sampling=None, adapter=None, cancel=None):
        key = ("plain", json.dumps(messages), n, sampling, adapter)
        return self._cached(key, lambda: self._generator.generate(messages, n=n, sampling=sampling, adapter=adapter, cancel=cancel))


class SharedEncodings:
    """Wraps the encoder all arms use: the same texts in the same order encode to the same vectors,
    so each distinct batch is encoded once (the probes re-rank the same candidate sets every round,
    and the questionnaire sends the same pool with every request)."""

    def __init__(self, encoder):
        self._encoder = encoder
        self._memo: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode(self, texts):
        key = tuple(texts)
        with self._lock:
            hit = self._memo.get(key)
        if hit is None:
            hit = self._encoder.encode(list(texts))
            with self._lock:
                self._memo[key] = hit
        return hit.copy()


def candidate_sets(generator, prompts: list[str], first_seed: int, args) -> list[tuple[str, list[str]]]:
    """(prompt, 4 answers) per prompt, generated as the chat route does with `n: 4` (balanced answer
    styles, stances for yes-or-no questions), seeds `first_seed`, `first_seed + 1`, ..."""
    from pluralign.policy.generator import Sampling
    from pluralign.policy.styles import asks_judgement, choose_styles

    out = []
    for i, prompt in enumerate(prompts):
        sampling = Sampling(temperature=args.temperature, max_tokens=args.max_tokens, seed=first_seed + i)
        messages = [{"role": "user", "content": prompt}]
        styles = choose_styles(4, sampling.seed, stances=asks_judgement(messages))
        answers = [c.text for c in generator.generate_styled(messages, styles, sampling)[0]]
        answers = [a for a in answers if a.strip()]  # a blank answer can be neither asked about nor sent
        if len(answers) >= 2:
            out.append((prompt, answers))
    return out


class Server:
    """The real app under uvicorn on 127.0.0.1 in a thread of this process."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # a client waits on the other arms between its requests: keep its connection open meanwhile
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_keep_alive=900))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=300)  # on a loaded machine a last request can take minutes to answer


def arm_settings(root: Path, arm: str, args):
    """The service's settings for one arm: its own data folder under `root`, the PAL checkpoint
    `args.pal` (else bootstrapped into `root / "pal"` by the first runtime built)."""
    from service.settings import Settings

    pooled = {"pooled_prior_users": COHORT_PRIOR_USERS} if getattr(args, "cohort_users", 0) and arm in ASK_ARMS else {}
    return Settings(
        data_dir=str(root / arm), pal_dir=str(args.pal or root / "pal"), shared_data=str(args.shared_data), candidates=4,
        shots=0, max_tokens=args.max_tokens, adapter_every=10**9, **ARM_SETTINGS[arm], **pooled,
    )


def build_arms(root: Path, generator, encoder, args, names=ARMS) -> dict:
    from service.app import create_app
    from service.runtime import Runtime

    arms = {}
    for arm in names:
        runtime = Runtime.build(arm_settings(root, arm, args), generator=generator, encoder=encoder)  # the first bootstraps PAL
        arms[arm] = (Server(create_app(runtime=runtime)), runtime.keys.issue("bench"), runtime)
    return arms


# ---- the loop --------------------------------------------------------------------------------------


def make_users(args) -> list[tuple[str, str, int]]:
    """(user id, rule, sequence) triples: `users_per_rule` per style rule, then the persona
    population. `sequence` is the index of the user whose prompts and generation seeds this user
    gets (their own index, except with `--cross-rules`)."""
    base = [(f"{rule}-{i}", rule) for rule in RULES if not rule.startswith("persona") for i in range(args.users_per_rule)]
    minority = max(1, round(args.persona_users * 0.2))
    base += [(f"persona_majority-{i}", "persona_majority") for i in range(args.persona_users - minority)]
    base += [(f"persona_minority-{i}", "persona_minority") for i in range(minority)]
    users = [(user, rule, u) for u, (user, rule) in enumerate(base)]
    if args.cross_persona:  # each persona rule also on the other persona rule's users' prompts and seeds
        personas = [(u, user, rule) for u, (user, rule) in enumerate(base) if rule.startswith("persona")]
        users += [(f"{rule}-on-{other}", rule, u) for rule in ("persona_majority", "persona_minority")
                  for u, other, other_rule in personas if other_rule != rule]
    if args.cross_rules:  # every style rule also on every other style user's prompts and seeds
        styles = [(u, user, rule) for u, (user, rule) in enumerate(base) if not rule.startswith("persona")]
        users += [(f"{rule}-on-{other}", rule, u) for rule in dict.fromkeys(r for _, _, r in styles)
                  for u, other, other_rule in styles if other_rule != rule]
    return users


TENANT = "bench"  # the tenant of the key each arm issues
COHORT_PRIOR_USERS = 16  # with --cohort-users: the questionnaire arms' PLURALIGN_POOLED_PRIOR_USERS


def fitted_under_pooled(runtime, users: list[str]) -> int:
    """How many of `users` the arm's service last fitted under its tenant's pooled prior."""
    from service.users.services import stored_state

    states = [stored_state(runtime.store.get_user(TENANT, u)) for u in users]
    return sum(1 for s in states if s is not None and s.pooled_users > 0)


def cohort_answers(sets: list[tuple[str, list[str]]], rule: str, user: int, seed: int, answers: int) -> list[tuple[int, int, int]]:
    """The `answers` random comparisons earlier user number `user` of `rule` answered among the pairs
    of different answers of `sets`, as (set, chosen answer, rejected answer) indices, ties left out:
    the same draw wherever a cohort is simulated (`seed_cohort`, `questionnaire_bound --prior population`)."""
    from pluralign.user.active import all_pairs

    pairs = [(s, int(i), int(j)) for s, (_, texts) in enumerate(sets) for i, j in zip(*all_pairs(len(texts)), strict=True)
             if texts[i].strip() != texts[j].strip()]
    out = []
    for s, i, j in random.Random(f"cohort-{seed}-{rule}-{user}").sample(pairs, min(answers, len(pairs))):
        a, b = RULES[rule](sets[s][1][i]), RULES[rule](sets[s][1][j])
        if a != b:
            out.append((s, i, j) if a > b else (s, j, i))
    return out


def seed_cohort(arms: dict, cohort_sets: dict[str, list[tuple[str, list[str]]]], args) -> int:
    """`--cohort-users`: before the first round, each questionnaire arm's tenant gets
    `cohort_users` earlier users per rule (of both kinds), each having answered `cohort_answers`
    random comparisons of their kind's `cohort_sets` (the chat questions' fresh candidate sets:
    neither the pool nor the probe), imported over HTTP and fitted by a profile read, so the arm's
    pooled prior (`PLURALIGN_POOLED_PRIOR_USERS`) is estimated from them. The same users and
    answers as `benchmarks.questionnaire_bound --prior population` (same seeds); ties are not sent.
    The tenant's cached prior, estimated while the cohort was being fitted, is then dropped, as its
    TTL would drop it. Returns the users per arm."""
    made = 0
    for arm, (server, key, runtime) in arms.items():
        if arm not in ASK_ARMS:
            continue
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=600)
        made = 0
        for kind, sets in cohort_sets.items():
            for rule in (r for r in RULES if kind_of(r) == kind):
                for u in range(args.cohort_users):
                    lines = [json.dumps({"prompt": sets[s][0], "chosen": sets[s][1][c], "rejected": sets[s][1][r]})
                             for s, c, r in cohort_answers(sets, rule, u, args.seed, args.cohort_answers)]
                    user = f"cohort-{rule}-{u}"
                    if lines:
                        client.post(f"/v1/users/{user}/import", content="\n".join(lines) + "\n",
                                    headers={"Content-Type": "application/x-ndjson"}).raise_for_status()
                        client.get(f"/v1/users/{user}").raise_for_status()  # fitted now, under the model's own prior
                        made += 1
        runtime.wait_for_background()
        runtime.pooled_priors.clear()
        client.close()
    return made


def run_loop(arms: dict, users, prompts_for, args, probe_sets=None, pools=None) -> tuple[list[dict], list[dict]]:
    """The rounds, every user and arm in turn. With `probe_sets` ({"style" | "persona": sets}) every
    user's model is also probed before the first round and after each round's feedback (`probe`);
    `pools` (same keys) are the questionnaire arms' calibration pools. Returns (records, probes)."""
    records, probes = [], []
    clients = {arm: httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=600)
               for arm, (server, key, _) in arms.items()}
    asked = {(arm, user): set() for arm in arms for user, _, _ in users}  # ask_random: pool pairs already asked

    def probe_all(after: int) -> None:
        for arm, (_, _, runtime) in arms.items():
            for user, rule, _ in users:
                hits, scored = probe(runtime, user, rule, probe_sets[kind_of(rule)])
                probes.append({"after": after, "user": user, "rule": rule, "arm": arm, "hits": hits, "scored": scored})

    if probe_sets:
        probe_all(0)
    for rnd in range(args.rounds):
        for user, rule, u in users:
            prompt = prompts_for(user)[rnd]
            seed = args.seed * 100_000 + u * 100 + rnd
            for arm in arms:
                body = {"model": "pluralign", "user": user, "n": 4, "seed": seed, "temperature": args.temperature,
                        "max_tokens": args.max_tokens, "messages": [{"role": "user", "content": prompt}],
                        "pluralign": {"shots": 0}}
                r = clients[arm].post("/v1/chat/completions", json=body)
                r.raise_for_status()
                out = r.json()
                texts = [c["message"]["content"] for c in out["choices"]]
                scores = [RULES[rule](t) for t in texts]
                best = max(scores)
                pick = scores.index(best)
                tie = all(s == best for s in scores)
                records.append({
                    "round": rnd + 1, "user": user, "rule": rule, "arm": arm, "tie": tie, "hit": scores[0] == best,
                    "advantage": scores[0] - float(np.mean(scores)), "styles": out["pluralign"].get("styles"),
                    "served": texts[0], "prior": out["pluralign"]["prior"], "choices": texts, "scores": scores,
                })
                if arm in PAIR_ARMS:
                    records[-1]["feedback"] = pair_feedback(clients[arm], arm, out, scores, random.Random(f"{seed}-pair"))
                elif arm in ASK_ARMS:
                    records[-1]["feedback"] = ask_feedback(clients[arm], arm, user, rule, pools[kind_of(rule)], asked[arm, user],
                                                           random.Random(f"{seed}-ask"))
                elif not tie:
                    fb = clients[arm].post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": pick})
                    fb.raise_for_status()
        done = [r for r in records if r["round"] == rnd + 1 and not r["tie"]]
        rates = {arm: np.mean([r["hit"] for r in done if r["arm"] == arm]) if done else float("nan") for arm in arms}
        if probe_sets:
            probe_all(rnd + 1)
            mine = [p for p in probes if p["after"] == rnd + 1]
            rates = {arm: sum(p["hits"] for p in mine if p["arm"] == arm) / max(1, sum(p["scored"] for p in mine if p["arm"] == arm))
                     for arm in arms}
        print(f"round {rnd + 1:2d}{' (probes)' if probe_sets else ''}: " + "  ".join(f"{a} {v:.2f}" for a, v in rates.items()),
              file=sys.stderr, flush=True)
    return records, probes


def kind_of(rule: str) -> str:
    return "persona" if rule.startswith("persona") else "style"


def probe(rt, user: str, rule: str, sets: list[tuple[str, list[str]]]) -> tuple[int, int]:
    """(hits, scored): over candidate sets the user never chats about, how many times the chat route's
    own ranking (`plan`, then `score_candidates`, in process; no interaction is stored, though a stale
    user model is refitted and written as a chat's read would) puts first a choice
    the user's rule scores highest; sets whose four choices tie under the rule are left out. Reading
    the model this way after every round gives the pick rate without a window over rounds."""
    from dataclasses import replace

    from service.chat.schemas import Timings
    from service.chat.services import plan, score_candidates

    hits = scored = 0
    base = None
    for prompt, texts in sets:
        scores = [RULES[rule](t) for t in texts]
        if max(scores) == min(scores):
            continue
        messages = [{"role": "user", "content": prompt}]
        if base is None:  # the user's model is read once per probe
            p = base = plan(rt, TENANT, user, messages, 4, rt.settings.rerank, 0, returned=4, styles=True)
        else:
            p = replace(base, prompt=prompt, messages=messages, context=messages, prompt_vec=rt.encoder.encode([prompt])[0],
                        candidate_vectors=None, candidate_x=None, timings=Timings())
        _, order = score_candidates(rt, p, texts)
        hits += scores[order[0]] == max(scores)
        scored += 1
    return hits, scored


def pair_feedback(client, arm: str, out: dict, scores: list[float], rng: random.Random) -> list[int] | None:
    """Issue 16's arms: show the user two choices, `compare`'s pair (`active`) or two at random
    (`random_pair`), and send their pick among those two as a `choice` with `shown`; two the user's rule
    scores alike get "no preference" (`tie`, as docs/api.md has a client send it). Returns the pair shown, or None when nothing was sent (no pair offered,
    or two choices of the same text)."""
    pair = rng.sample(range(len(scores)), 2) if arm == "random_pair" else out["pluralign"].get("compare")
    texts = [c["message"]["content"] for c in out["choices"]]
    if not pair or texts[pair[0]] == texts[pair[1]]:
        return None
    tie = scores[pair[0]] == scores[pair[1]]
    pick = pair[0] if scores[pair[0]] > scores[pair[1]] else pair[1]
    fb = client.post("/v1/feedback", json={"type": "choice", "response_id": out["id"], "chosen_index": pick, "shown": pair,
                                           "tie": tie})
    fb.raise_for_status()
    return pair


ASK_TARGETS = {"ask_active": None, "ask_predictive": "predictive", "ask_population": "population"}  # next-comparison's `target`


def ask_feedback(client, arm: str, user: str, rule: str, pool: list[tuple[str, list[str]]], asked: set,
                 rng: random.Random) -> dict | None:
    """The questionnaire arms: besides the round's chat, the user answers one comparison of two
    answers to a calibration prompt, sent as `comparison` feedback (`tie` when the rule scores them
    alike, so the pair is not asked again). `ask_active`: the pair `POST /v1/users/{id}/next-comparison`
    returns for the pool (BALD on the user's posterior; nothing once `worth_asking` is false);
    `ask_predictive`: the same route with `target: predictive` (EPIG over the pool's pairs);
    `ask_population` with `target: population` (which of the tenant's fitted users this one is like,
    BALD when they cannot tell); `ask_random`:
    a pair of the pool drawn at random among those not asked yet. Returns what was sent, or None."""
    if arm in ASK_TARGETS:
        body = {"pool": [{"prompt": q, "answers": a} for q, a in pool], **({"target": ASK_TARGETS[arm]} if ASK_TARGETS[arm] else {})}
        r = client.post(f"/v1/users/{user}/next-comparison", json=body)
        if r.status_code == 400 and r.json().get("error", {}).get("param") == "pool" and "no pair" in r.text:
            return None  # every pair of the pool asked already
        r.raise_for_status()
        out = r.json()
        if not out["worth_asking"]:
            return None
        prompt, (a, b) = out["prompt"], out["answers"]
        key = (prompt, *sorted((a, b)))
        repeat = key in asked
        asked.add(key)
        criterion = out["criterion"]  # what the route asked by (`population` falls back to BALD)
    else:
        left = [(q, a[i], a[j]) for q, a in pool for i in range(len(a)) for j in range(i + 1, len(a))
                if a[i].strip() != a[j].strip() and (q, *sorted((a[i], a[j]))) not in asked]
        if not left:
            return None
        prompt, a, b = rng.choice(left)
        asked.add((prompt, *sorted((a, b))))
        repeat, criterion = False, "random"
    sa, sb = RULES[rule](a), RULES[rule](b)
    chosen, rejected = (a, b) if sa >= sb else (b, a)
    fb = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": prompt, "chosen": chosen,
                                           "rejected": rejected, "tie": sa == sb})
    fb.raise_for_status()
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "tie": sa == sb, "repeat": repeat, "criterion": criterion}


def rounds_to(records: list[dict], rule: str, arm: str, rounds: int, bar: float = 0.7, window: int = 3) -> int | None:
    """The first round r at which the rule's users' pick rate over rounds r - window + 1 .. r (ties
    left out) reaches `bar`; None if it never does."""
    for rnd in range(window, rounds + 1):
        hits = [r["hit"] for r in records if r["rule"] == rule and r["arm"] == arm and rnd - window < r["round"] <= rnd and not r["tie"]]
        if hits and np.mean(hits) >= bar:
            return rnd
    return None


def pair_summary(records: list[dict], rounds: int) -> dict:
    """For the pair arms: per rule and arm, the rounds to a 70% pick rate (window of 3) and how many
    feedbacks were sent before it (all rounds when never reached); and feedbacks sent per arm."""
    out = {"rounds_to_70": {}, "feedback_to_70": {}, "feedback": {}}
    arms = [a for a in (*PAIR_ARMS, *ASK_ARMS) if any(r["arm"] == a for r in records)]
    for rule in RULES:
        out["rounds_to_70"][rule], out["feedback_to_70"][rule] = {}, {}
        for arm in arms:
            reached = rounds_to(records, rule, arm, rounds)
            out["rounds_to_70"][rule][arm] = reached
            out["feedback_to_70"][rule][arm] = sum(
                1 for r in records if r["rule"] == rule and r["arm"] == arm and r.get("feedback") and r["round"] <= (reached or rounds))
    for arm in arms:
        out["feedback"][arm] = sum(1 for r in records if r["arm"] == arm and r.get("feedback"))
    return out


def summarize(records: list[dict], rounds: int) -> dict:
    first = rounds // 2 + 1  # rounds 11-20 of 20; the second half with --fast
    window = [r for r in records if r["round"] >= first]
    arms = list(dict.fromkeys(r["arm"] for r in records))
    out = {"rules": {}, "rounds": rounds, "ties": {}}
    for rule in RULES:
        mine = [r for r in window if r["rule"] == rule]
        out["ties"][rule] = sum(r["tie"] for r in mine if r["arm"] == arms[0])
        out["rules"][rule] = {
            arm: round(float(np.mean([r["hit"] for r in mine if r["arm"] == arm and not r["tie"]])), 4)
            if any(r["arm"] == arm and not r["tie"] for r in mine) else None
            for arm in arms
        }
    if any(a in arms for a in (*PAIR_ARMS, *ASK_ARMS)):
        out.update(pair_summary(records, rounds))
    return out


VERDICT_PAIRS = (("ask_active", "ask_random"), ("ask_predictive", "ask_random"), ("ask_population", "ask_random"), ("active", "random_pair"))  # (active, its random counterpart)


def probe_summary(probes: list[dict], rounds: int, bar: float = 0.7) -> dict:
    """From the probes: per rule and arm the pick rate after 0, 1, ..., `rounds` rounds of feedback
    (hits over scored sets, pooled over the rule's users), the first round count at which it reaches
    `bar` (None: never within `rounds`), and per (active, random) pair of arms whether the active arm
    needs at most half the rounds the random one does (`halved`; when the random arm never reaches
    the bar, the active one must by `rounds` / 2). Issue 16's closed-loop bar read `halved` for
    `ask_active` against `ask_random` in session 16's first run, and for `ask_predictive` against it in
    the second (each declared in BENCHMARKS.md before its run)."""
    arms = list(dict.fromkeys(p["arm"] for p in probes))
    rate, reached = {}, {}
    for rule in RULES:
        rate[rule], reached[rule] = {}, {}
        for arm in arms:
            curve = []
            for after in range(rounds + 1):
                mine = [p for p in probes if p["rule"] == rule and p["arm"] == arm and p["after"] == after]
                scored = sum(p["scored"] for p in mine)
                curve.append(round(sum(p["hits"] for p in mine) / scored, 4) if scored else None)
            rate[rule][arm] = curve
            reached[rule][arm] = next((r for r, v in enumerate(curve) if v is not None and v >= bar), None)
    halved = {}
    for active, rand in VERDICT_PAIRS:
        if active in arms and rand in arms:
            halved[active] = {rule: reached[rule][active] is not None
                              and reached[rule][active] <= (rounds if reached[rule][rand] is None else reached[rule][rand]) / 2
                              for rule in RULES}
    return {"probe_rate": rate, "probe_rounds_to_70": reached, "halved": halved}


def advantage_table(records: list[dict], rounds: int) -> dict:
    first = rounds // 2 + 1
    arms = list(dict.fromkeys(r["arm"] for r in records))
    return {
        rule: {arm: round(float(np.mean([r["advantage"] for r in records if r["rule"] == rule and r["arm"] == arm
                                          and r["round"] >= first and not r["tie"]] or [np.nan])), 3) for arm in arms}
        for rule in RULES
    }


COLOURS = {"today": "tab:orange", "user_model": "tab:blue", "control": "tab:grey", "active": "tab:green",
           "active_best": "tab:olive", "random_pair": "tab:red", "ask_active": "tab:purple", "ask_random": "tab:brown",
           "ask_predictive": "tab:pink", "ask_population": "tab:cyan"}


def curves_figure(panels: dict[str, dict[str, tuple[list, list]]], line: float, xlabel: str, ylabel: str, title: str,
                  path: Path) -> None:
    """One panel per rule ({rule: {arm: (xs, ys)}}), a dotted horizontal line at `line`, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True, sharey=True)
    for ax, (rule, curves) in zip(axes.flat, panels.items(), strict=False):
        for arm, (xs, ys) in curves.items():
            ax.plot(xs, ys, label=arm, color=COLOURS[arm], marker="o", markersize=3)
        ax.axhline(line, color="black", linestyle=":", linewidth=1)
        ax.set_title(rule)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    axes.flat[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def plot(records: list[dict], rounds: int, path: Path) -> None:
    """The served answer's pick rate per round, a running window of 3 rounds over the rule's users
    (tie rounds left out)."""
    arms = list(dict.fromkeys(r["arm"] for r in records))
    panels = {}
    for rule in RULES:
        panels[rule] = {}
        for arm in arms:
            xs, ys = [], []
            for rnd in range(1, rounds + 1):
                hits = [r["hit"] for r in records if r["rule"] == rule and r["arm"] == arm and abs(r["round"] - rnd) <= 1 and not r["tie"]]
                if hits:
                    xs.append(rnd)
                    ys.append(np.mean(hits))
            panels[rule][arm] = (xs, ys)
    curves_figure(panels, 0.25, "round", "served = user's pick",
                  "Closed loop: pick rate per round (window of 3 rounds; dotted: chance with 4 candidates)", path)


def plot_probes(summary: dict, path: Path) -> None:
    """The probes' pick rate after r rounds of feedback, per rule and arm, with the 70% line."""
    panels = {rule: {arm: ([r for r, v in enumerate(curve) if v is not None], [v for v in curve if v is not None])
                     for arm, curve in curves.items()} for rule, curves in summary["probe_rate"].items()}
    curves_figure(panels, 0.7, "rounds of feedback", "held-out pick rate",
                  "Closed loop: the user's model on held-out candidate sets after each round (dotted: 70%)", path)


def diversity(generator, prompts: dict[str, list[str]], args) -> dict:
    """How often the 4 candidates all tie under each rule, and their mean spread (max - min score),
    with balanced answer styles against plain sampling, on the same prompts and seeds. `prompts`
    maps "style" and "persona" to the prompts the style rules and the persona rules are scored on."""
    from pluralign.policy.generator import Sampling
    from pluralign.policy.styles import asks_judgement, choose_styles

    out = {"styles": {}, "plain": {}}
    for pool, questions in prompts.items():
        sets = {"styles": [], "plain": []}
        for i, prompt in enumerate(questions):
            sampling = Sampling(temperature=args.temperature, max_tokens=args.max_tokens, seed=10_000 + i)
            messages = [{"role": "user", "content": prompt}]
            styles = choose_styles(4, sampling.seed, stances=asks_judgement(messages))
            sets["styles"].append([c.text for c in generator.generate_styled(messages, styles, sampling)[0]])
            sets["plain"].append([c.text for c in generator.generate(messages, n=4, sampling=sampling)[0]])
        for kind, candidate_sets in sets.items():
            for rule, score in RULES.items():
                if rule.startswith("persona") != (pool == "persona"):
                    continue
                table = np.array([[score(t) for t in texts] for texts in candidate_sets])  # (P, 4)
                out[kind][rule] = {"all_tie": round(float((table.max(1) == table.min(1)).mean()), 3),
                                   "spread": round(float((table.max(1) - table.min(1)).mean()), 2)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 20; 10 with --fast)")
    parser.add_argument("--fast", action="store_true", help="10 rounds, one user per style rule, 5 persona users")
    parser.add_argument("--users-per-rule", type=int, default=None, help="users per style rule (default 2; 1 with --fast)")
    parser.add_argument("--persona-users", type=int, default=5, help="persona users: 80%% majority, 20%% minority")
    parser.add_argument("--cross-rules", action="store_true",
                        help="also run every style rule on every other style user's prompts and seeds: "
                             "(rules - 1) times more style users from the same generations")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diversity", type=int, default=0, help="prompts for the styles-vs-plain tie measurement (0: skip)")
    parser.add_argument("--generator", default="smollm2", help="`smollm2` or a saved causal LM folder")
    parser.add_argument("--pal", type=Path, default=None, help="a PAL checkpoint folder (default: bootstrapped on persona data)")
    parser.add_argument("--shared-data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/closed_loop"))
    parser.add_argument("--generation-cache", type=Path, default=None,
                        help="keep generations in this file across runs (same prompts and seeds, same candidates): "
                             "for re-measuring the ranking without generating again")
    parser.add_argument("--cross-persona", action="store_true",
                        help="also run each persona rule on the other persona rule's users' prompts and seeds")
    parser.add_argument("--probes", type=int, default=None,
                        help="held-out prompts per kind (style, persona; at most 16) whose candidate sets probe every "
                             "user's model after each round (default 16 with pair or questionnaire arms, else 0)")
    parser.add_argument("--pool", type=int, default=16,
                        help="calibration prompts per kind (4 answers each, at most 16) the questionnaire arms ask from")
    parser.add_argument("--arms", nargs="+", choices=[*ARMS, *PAIR_ARMS, *ASK_ARMS], default=None,
                        help=f"arms to run (default: {' '.join(ARMS)})")
    parser.add_argument("--compare-arms", action="store_true",
                        help="issue 16: also the pair arms (active: the response's `compare` pair; active_best: the same "
                             "with compare_target=best; random_pair: two at random)")
    parser.add_argument("--cohort-users", type=int, default=0,
                        help="issue 16: earlier users per rule seeded into the questionnaire arms' tenants before the first "
                             "round, whose pooled prior (PLURALIGN_POOLED_PRIOR_USERS) then starts every new user (0: none)")
    parser.add_argument("--cohort-answers", type=int, default=40, help="random comparisons each earlier user answered")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.arms = tuple(args.arms or (ARMS + PAIR_ARMS if args.compare_arms else ARMS))
    args.rounds = args.rounds or (10 if args.fast else 20)
    args.users_per_rule = args.users_per_rule or (1 if args.fast else 2)
    if args.probes is None:
        args.probes = 16 if any(a in (*PAIR_ARMS, *ASK_ARMS) for a in args.arms) else 0
    if not 0 <= args.probes <= len(PROBE_QUESTIONS):
        parser.error(f"--probes: between 0 and {len(PROBE_QUESTIONS)}")
    if args.cohort_users < 0 or args.cohort_answers < 1:
        parser.error("--cohort-users must be >= 0 and --cohort-answers >= 1")
    if args.cohort_users and not any(a in ASK_ARMS for a in args.arms):
        parser.error("--cohort-users seeds the questionnaire arms (ask_*); none was chosen")
    if not 1 <= args.pool <= len(CALIBRATION_QUESTIONS):
        parser.error(f"--pool: between 1 and {len(CALIBRATION_QUESTIONS)} (4 answers each; the route takes 64 answers)")
    args.out.mkdir(parents=True, exist_ok=True)

    from pluralign.embed.encoders import SentenceEncoder
    from service.runtime import make_generator

    start = time.time()
    generator = SharedGenerations(make_generator(args.generator), args.generation_cache)
    encoder = SharedEncodings(SentenceEncoder())
    persona = persona_questions(args.shared_data)
    users = make_users(args)
    probe_sets = pools = None
    if args.probes:
        probe_sets = {"style": candidate_sets(generator, PROBE_QUESTIONS[: args.probes], 20_000, args),
                      "persona": candidate_sets(generator, persona_questions(args.shared_data, PERSONA_PROBE)[: args.probes], 21_000, args)}
    if any(a in ASK_ARMS for a in args.arms):
        pools = {"style": candidate_sets(generator, CALIBRATION_QUESTIONS[: args.pool], 30_000, args),
                 "persona": candidate_sets(generator, persona_questions(args.shared_data, PERSONA_CALIBRATION)[: args.pool], 31_000, args)}

    cohort_sets = None
    if args.cohort_users:  # the sets questionnaire_bound's fresh target reads: the chat questions', other seeds
        cohort_sets = {"style": candidate_sets(generator, QUESTIONS, 40_000, args),
                       "persona": candidate_sets(generator, persona_questions(args.shared_data, slice(0, 30)), 41_000, args)}
    sequence_of = {user: users[u][0] for user, _, u in users}  # whose prompt order each user gets

    def prompts_for(user: str) -> list[str]:
        user = sequence_of[user]
        pool = persona if user.startswith("persona") else QUESTIONS
        order = random.Random(f"{args.seed}-{user}").sample(range(len(pool)), len(pool))
        return [pool[order[i % len(pool)]] for i in range(args.rounds)]

    with tempfile.TemporaryDirectory(prefix="closed-loop-") as tmp:
        arms = build_arms(Path(tmp), generator, encoder, args, args.arms)
        servers = [server for server, _, _ in arms.values()]
        for s in servers:
            s.__enter__()
        try:
            cohort = seed_cohort(arms, cohort_sets, args) if cohort_sets else 0
            records, probes = run_loop(arms, users, prompts_for, args, probe_sets, pools)
            pooled = {arm: fitted_under_pooled(runtime, [u for u, _, _ in users]) for arm, (_, _, runtime) in arms.items() if cohort}
        finally:
            for s in servers:
                s.__exit__(None, None, None)
            # refits queued by the last feedback still run torch and LanceDB work in the runtimes'
            # threads: let them end before the interpreter does (it aborted at exit under load)
            for _, _, runtime in arms.values():
                runtime.wait_for_background()
    summary = summarize(records, args.rounds)
    if probes:
        summary.update(probe_summary(probes, args.rounds))
    extra = {"advantage": advantage_table(records, args.rounds), "users": len(users), "seconds": round(time.time() - start, 1),
             "cohort": {"users": cohort, "answers": args.cohort_answers, "prior_users": COHORT_PRIOR_USERS,
                        "fitted_under_pooled": pooled} if cohort else None,
             "generations": {"computed": generator.computed, "reused": generator.reused}}
    if args.diversity:
        extra["diversity"] = diversity(generator, {"style": QUESTIONS[: args.diversity], "persona": persona[: args.diversity]}, args)
    generator.save()
    (args.out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if probes:
        (args.out / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
    (args.out / "summary.json").write_text(json.dumps({**summary, **extra}, indent=1))
    plot(records, args.rounds, args.out / "learning_curves.png")
    if probes:
        plot_probes(summary, args.out / "probe_curves.png")

    print(f"closed loop: {len(users)} users, {args.rounds} rounds, pick rates over rounds {args.rounds // 2 + 1}-{args.rounds} (ties left out)")
    print(f"{'rule':18s} " + " ".join(f"{a:>11s}" for a in args.arms) + "   ties   advantage (user_model)")
    for rule, rates in summary["rules"].items():
        cells = " ".join(f"{'-' if v is None else f'{v:.2f}':>11s}" for v in rates.values())
        print(f"{rule:18s} {cells}   {summary['ties'][rule]:4d}   {extra['advantage'][rule].get('user_model')}")
    if "rounds_to_70" in summary:
        print("rounds (feedbacks) to a 70% pick rate, window of 3 rounds; '-' = not reached:")
        for rule, reached in summary["rounds_to_70"].items():
            print(f"  {rule:18s} " + "   ".join(f"{arm} {'-' if r is None else r} ({summary['feedback_to_70'][rule][arm]})" for arm, r in reached.items()))
        print("  feedbacks sent: " + ", ".join(f"{a} {n}" for a, n in summary["feedback"].items()))
    if "probe_rate" in summary:
        print(f"pick rate on {args.probes} held-out prompts per kind after r rounds of feedback (r = 0..{args.rounds}); "
              "first r at 70% ('-': never):")
        for rule, curves in summary["probe_rate"].items():
            for arm, curve in curves.items():
                r = summary["probe_rounds_to_70"][rule][arm]
                print(f"  {rule:18s} {arm:12s} {'-' if r is None else r:>3}  " + " ".join("  - " if v is None else f"{v:.2f}" for v in curve))
        for active, rules in summary["halved"].items():
            print(f"  {active} in at most half the rounds of its random pairs: " + ", ".join(f"{rule} {'yes' if ok else 'no'}" for rule, ok in rules.items()))
    if "diversity" in extra:
        print("candidates tying under each rule (share of prompts), styles vs plain sampling:")
        for rule in RULES:
            d = extra["diversity"]
            print(f"  {rule:18s} styles {d['styles'][rule]['all_tie']:.2f} (spread {d['styles'][rule]['spread']})"
                  f"   plain {d['plain'][rule]['all_tie']:.2f} (spread {d['plain'][rule]['spread']})")
    print(f"{extra['seconds']} s; generations computed {generator.computed}, reused {generator.reused}; output in {args.out}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
