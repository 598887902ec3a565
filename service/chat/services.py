"""The personalized chat path: retrieve, put in context, generate, rerank, remember what was served."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from litestar.exceptions import ServiceUnavailableException

from pluralign.data.text import is_blank, pickable
from pluralign.policy.context import Shot, with_shots
from pluralign.policy.generator import AdapterNotKept, AdapterNotLoaded, Cancelled, Candidate, Sampling
from pluralign.policy.logprobs import BASE_ADAPTER
from pluralign.policy.rerank import pickable_first, ranked_by, rerank, rerank_maxmin
from pluralign.policy.styles import asks_judgement, choose_styles
from pluralign.store import Interaction
from pluralign.store.ingest import Backlogged
from pluralign.user.active import PairChoice, most_informative_pair
from pluralign.user.model import Candidates
from service.chat.schemas import PluralignInfo, Timings
from service.encoders import embedded
from service.runtime import Runtime
from service.users.services import READ_INLINE_ROWS, UserWeights, pooled_prior_of, residual_on, user_weights

log = logging.getLogger("pluralign.service")


@dataclass
class Plan:
    """What to generate for one request, once personalization has run."""

    response_id: str
    tenant: str
    user_id: str | None
    prompt: str  # the last user message
    prompt_vec: np.ndarray | None  # (d,)
    messages: list[dict[str, str]]  # as the client sent them
    context: list[dict[str, str]]  # with the user's shots
    history: list[str]  # the shots' preference ids, nearest first
    adapter: str | None
    weights: UserWeights | None
    candidates: int
    rerank: bool
    timings: Timings
    returned: int = 1  # how many of the best-ranked candidates the response returns as `choices`
    styles: bool = False  # generate the candidates in balanced answer styles
    store: bool = True  # the request's `store`: false keeps no interaction row
    candidate_vectors: np.ndarray | None = None  # (N, d) the candidates' embeddings, once computed for reranking
    candidate_x: np.ndarray | None = None  # (N, D) their user-model coordinates, once computed
    planned_at: float = field(default_factory=time.monotonic)  # before the user's history was read
    shots: list[Shot] = field(default_factory=list)  # the retrieved shots in `context`, nearest first

    def context_without_shots(self) -> list[dict[str, str]]:
        """The context once every retrieved shot is left out (a named user's keeps its system turn)."""
        return with_shots([], self.messages) if self.user_id is not None else self.messages

    def context_keeping(self, kept: int) -> list[dict[str, str]]:
        """The context with its `kept` nearest shots only, the farther ones left out."""
        return with_shots(self.shots[:kept], self.messages) if kept else self.context_without_shots()

    def keep_shots(self, kept: int) -> None:
        """Leave all but the `kept` nearest shots out of the context (a prompt over the service's budget keeps the
        client's messages whole and gives up retrieved history first, farthest first)."""
        self.context = self.context_keeping(kept)
        self.shots, self.history = self.shots[:kept], self.history[:kept]


def new_response_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def plan(
    rt: Runtime, tenant: str, user_id: str | None, messages: list[dict[str, str]], candidates: int, do_rerank: bool,
    shots: int, returned: int = 1, styles: bool = False,
) -> Plan:
    timings, planned_at = Timings(), time.monotonic()
    asked = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)  # the last user turn
    prompt = messages[asked]["content"] if asked is not None else ""

    def prompt_vector() -> np.ndarray:  # (d,); a text the embeddings server refuses (too long for it): the 400 naming it
        return embedded(rt.encoder, {f"messages[{asked}].content" if asked is not None else "messages": prompt})[0]

    prompt_vec, history, context, adapter, weights, shot_list = None, [], messages, None, None, []
    if user_id is not None:
        start = time.perf_counter()
        try:  # the user's feedback still in the log: embedded and moved now
            rt.ingest.flush_user(tenant, user_id, at_most=READ_INLINE_ROWS)
            flushed = True
        except Backlogged:  # an import's backlog: served from what is stored, the worker moves the rest
            flushed = False
        prompt_vec = prompt_vector()  # (d,)
        # an all-zero vector (a remote embedding server's answer for a text it keeps no token of) is near
        # no stored prompt: no shots, where Store.search would refuse it
        hits = rt.store.search(tenant, user_id, prompt_vec, shots) if shots > 0 and np.any(prompt_vec) else []
        usable = [row for row, _ in hits if row.rejected and not row.tie]
        weights = user_weights(rt, tenant, user_id, flush=flushed)
        timings.retrieval_ms = ms(start)
        start = time.perf_counter()
        history = [row.pref_id for row in usable]
        shot_list = [Shot(question=r.prompt, preferred=r.chosen, dispreferred=r.rejected) for r in usable]
        context = with_shots(shot_list, messages)
        adapter = load_user_adapter(rt, tenant, user_id, weights)
        timings.context_ms = ms(start)
    elif do_rerank:
        prompt_vec = prompt_vector()
    return Plan(
        response_id=new_response_id(), tenant=tenant, user_id=user_id, prompt=prompt, prompt_vec=prompt_vec,
        messages=messages, context=context, history=history, adapter=adapter, weights=weights,
        candidates=candidates, rerank=do_rerank and candidates > 1, timings=timings, returned=returned,
        styles=styles and candidates > 1, planned_at=planned_at, shots=shot_list,
    )


def load_user_adapter(rt: Runtime, tenant: str, user_id: str, weights: UserWeights) -> str | None:
    """The adapter serving this user: their own LoRA (loaded on first use, least recently used
    unloaded beyond the budget), else the FSPO adapter when configured, else None (the base model)."""
    name = rt.adapters.adapter_for(tenant, user_id)
    return None if name == BASE_ADAPTER else name


@dataclass
class Served:
    plan: Plan
    candidates: list[Candidate]
    scores: list[float]
    order: list[int]  # candidate indices, best first
    prompt_tokens: int
    compare: PairChoice | None = None  # indices into the returned choices

    def info(self) -> PluralignInfo:
        p = self.plan
        return PluralignInfo(
            response_id=p.response_id, user=p.user_id, history=p.history, adapter=p.adapter,
            candidates=len(self.candidates), reward=self.scores[self.order[0]] if p.rerank else None,
            prior=on_prior(p), timings=p.timings, generation_index=self.order[: p.returned],
            styles=[self.candidates[i].style for i in self.order[: p.returned]] if p.styles else None,
            compare=[self.compare.first, self.compare.second] if self.compare else None,
            compare_bits=round(self.compare.bits, 4) if self.compare else None,
        )


def on_prior(p: Plan) -> bool:
    return p.weights.prior if p.weights else True


def score_candidates(rt: Runtime, p: Plan, texts: list[str]) -> tuple[list[float], list[int]]:
    """(scores in generation order, candidate indices best first); the answers a `choice` can pick first, reranked or not
    (`pickable_first`)."""
    scores, order = _scored(rt, p, texts)
    return scores, pickable_first(order, texts)


def _scored(rt: Runtime, p: Plan, texts: list[str]) -> tuple[list[float], list[int]]:
    """(scores in generation order, candidate indices best first) of the answers with something visible: a blank one
    (`is_blank`) is never served ahead of one (`pickable_first`) nor in a `compare` pair, so it is neither embedded nor
    scored; it follows them, at the lowest of their scores (none visible: none scored, 0). `p.candidate_vectors` and
    `p.candidate_x` keep a row per candidate, a blank one's zeros."""
    if not p.rerank or not (shown := [i for i, text in enumerate(texts) if not is_blank(text)]):
        return [0.0] * len(texts), list(range(len(texts)))
    if len(shown) == len(texts):
        return _ranked(rt, p, texts)
    scores, order = _ranked(rt, p, [texts[i] for i in shown])
    every = [min(scores)] * len(texts)
    for i, score in zip(shown, scores, strict=True):
        every[i] = score
    p.candidate_vectors = _row_each(p.candidate_vectors, shown, len(texts))
    p.candidate_x = _row_each(p.candidate_x, shown, len(texts))
    return every, [shown[k] for k in order] + sorted(set(range(len(texts))).difference(shown))


def _row_each(rows: np.ndarray | None, shown: list[int], n: int) -> np.ndarray | None:
    """`rows` (len(shown), D), the candidates `shown`'s, as (n, D): zeros for the others."""
    if rows is None:
        return None
    every = np.zeros((n, rows.shape[1]), rows.dtype)
    every[shown] = rows
    return every


def _ranked(rt: Runtime, p: Plan, texts: list[str]) -> tuple[list[float], list[int]]:
    start = time.perf_counter()
    # the population model the user's weights were fitted with, even if a new one was swapped in since
    rewards = p.weights.rewards if p.weights is not None and p.weights.rewards is not None else rt.rewards
    logits = p.weights.logits if p.weights else rewards.prior()
    reward_for = lambda logits: lambda prompt, response: rewards.score(logits, prompt, response)  # noqa: E731
    vectors = p.candidate_vectors = rt.encoder.encode(texts)
    if on_prior(p) and p.weights is not None and p.weights.state is not None:
        # no comparisons yet, but stated preferences: the user's prior already says what they want
        model = rewards.user_model
        p.candidate_x = model.candidates(p.prompt_vec, vectors, texts).x
        ranked = ranked_by(model.score(logits, p.weights.state, Candidates(p.candidate_x)))
    elif on_prior(p) and rt.settings.maxmin_new_users and rewards.k > 1:
        # nothing known of this user yet: protect every group of users at once (MaxMin over prototypes)
        groups = [reward_for(g) for g in rewards.prototype_logits()]
        ranked = rerank_maxmin(groups, reward_for(logits), p.prompt_vec, vectors)
    elif p.weights is not None and p.weights.state is not None:
        # the user's own model: PAL's mixture plus what their comparisons taught beyond it
        model = rewards.user_model
        p.candidate_x = model.candidates(p.prompt_vec, vectors, texts).x
        ranked = ranked_by(model.score(logits, p.weights.state, Candidates(p.candidate_x)))
    else:
        ranked = rerank(reward_for(logits), p.prompt_vec, vectors)
    p.timings.rerank_ms = ms(start)
    return ranked.scores, ranked.order


def choose_compare(rt: Runtime, p: Plan, texts: list[str], order: list[int]) -> PairChoice | None:
    """The two returned choices whose comparison would teach the user's model most (by default BALD
    on their posterior; with `compare_target = best` the information about which returned choice is
    best for them, `best_information`), as indices into `choices`; None for anonymous requests,
    requests with `store: false` (a `choice` on them cannot be recorded), fewer than 2 returned
    choices, `user_model = prototypes` (no posterior), or once no pair's answer carries
    `compare_min_bits` bits about which returned choice is best for them (the user is well known on these
    choices, whichever `compare_target` chose the pair: BENCHMARKS.md, session 49). Only the choices a `choice`
    records are weighed (`pluralign.data.text.pickable`: each visible answer once), so the pair never names a blank
    answer or two spellings of one, on which the user's pick would be refused; None when fewer than 2 remain."""
    if p.user_id is None or not p.store or p.weights is None or p.returned < 2 or not residual_on(rt):
        return None
    start = time.perf_counter()
    keep = pickable(texts[i] for i in order[: p.returned])  # positions in `choices` a pick can name
    if len(keep) < 2:
        return None
    model = (p.weights.rewards or rt.rewards).user_model
    shown = [order[k] for k in keep]
    if p.candidate_x is not None:
        x = p.candidate_x[shown]
    else:  # not reranked with the user model (reranking off, or a new user served by MaxMin)
        vectors = p.candidate_vectors if p.candidate_vectors is not None else rt.encoder.encode(texts)
        prompt_vec = p.prompt_vec if p.prompt_vec is not None else rt.encoder.encode([p.prompt])[0]
        x = model.candidates(prompt_vec, vectors[shown], [texts[i] for i in shown]).x
    pooled = pooled_prior_of(rt, p.tenant, p.weights.rewards or rt.rewards) if p.weights.state is None else None
    mean, cov = model.posterior(p.weights.state, p.weights.stated.signs(), pooled)
    surprised = p.weights.state is not None and p.weights.state.surprised  # their newest answers contradict the posterior
    choice = most_informative_pair(x, mean, cov, rt.settings.compare_min_bits, rt.settings.compare_target, gate="best",
                                   surprised=surprised)
    p.timings.compare_ms = ms(start)
    return None if choice is None else dataclasses.replace(choice, first=keep[choice.first], second=keep[choice.second])


def remember(rt: Runtime, served: Served) -> None:
    """Store the interaction so feedback can refer to it by response id (only for named users).

    Candidates are stored in served order (best first), so `candidates[i]` is the response's
    `choices[i]` for i < `returned`, and feedback indices mean what the client saw. Nothing is
    stored when the user was deleted after the plan read their history (the DELETE answered that
    nothing of them is left; with replicas, a DELETE through another one is seen by its record once
    reads catch up with it, `Runtime.deleted_since`)."""
    p = served.plan
    if p.user_id is None or not p.store:
        return
    start = time.perf_counter()
    with rt.user_lock(p.tenant, p.user_id):  # ordered against a DELETE of the user
        if rt.deleted_since(p.tenant, p.user_id, p.planned_at):  # planned from what the DELETE removed: keep none of it
            return
        rt.store.add_interaction(
            Interaction(
                tenant=p.tenant, user_id=p.user_id, response_id=p.response_id, created_at=time.time(), prompt=p.prompt,
                messages=p.messages, candidates=[served.candidates[i].text for i in served.order],
                scores=[served.scores[i] for i in served.order], chosen_index=0, history=p.history,
                model=rt.generator.model_id, adapter=p.adapter, returned=p.returned,
            )
        )
    p.timings.store_ms = ms(start)
    rt.maybe_compact()


ADAPTER_RETRY_AFTER = 5  # seconds: `Retry-After` of a chat whose user's adapter was dropped twice before it began


def with_adapter_again(rt: Runtime, p: Plan, generate):
    """`generate()`'s result; when the plan's adapter was dropped since it was taken (`AdapterNotLoaded`: an
    eviction by another user's load, a promotion, or the user's DELETE), `p.adapter` is asked of the pool again and
    `generate()` tried once more: an evicted adapter is loaded again, a promoted one is the new one, a deleted user gets
    the fallback (their files are gone; a chat racing its user's DELETE is answered and stores nothing, `remember`).
    Dropped again before its generation began: while the user still has an adapter (a second promotion or retrain: an
    eviction by other users' loads no longer drops a held adapter before its generation, `AdapterPool.holding`), the
    503 with Retry-After (ADAPTER_RETRY_AFTER) that says so, nothing begun nor stored: the fallback's answer with a 200
    would pass for theirs; a user deleted meanwhile (no adapter any more), tried a last time with the
    pool's fallback (the FSPO adapter, or the base model), which is never dropped: `p.adapter` says which served (as a
    deleted user's chat gets; not a 500). So is a chat whose
    remote generation server did not keep the adapter it loaded again (`AdapterNotKept`), at once, the warning saying so
    (the pool is not asked again, a load in vain, the warning saying "dropped twice"). A
    generation that has begun keeps its adapter to its end (a drop waits for it), and so does one about to begin: the
    pool holds the adapter from this call (still loaded then), and from its answer when asked again, until `generate()`
    returns (`AdapterPool.holding`): another user's load evicts it only after its tenant's adapters nobody uses or
    holds (its tenant holding the most with no other gives it up all the same, its weights leaving memory once the
    hold ends and the generation it began with them), and never lets it go from beside the budget (a take of smaller
    tenants' room refused), so such an adapter, let go between the plan and this call, is loaded again once and kept
    for the chat."""
    try:
        with holding(rt, p.adapter):
            return generate()
    except AdapterNotLoaded as exc:
        if p.adapter is None or p.user_id is None:
            raise
        lost = exc
    if not isinstance(lost, AdapterNotKept):
        with rt.adapters.adapter_held(p.tenant, p.user_id) as name:
            p.adapter = None if name == BASE_ADAPTER else name
            try:
                return generate()
            except AdapterNotLoaded as exc:
                lost = exc
    fallback = load_fallback(rt)
    if p.adapter == fallback:
        raise lost
    if not isinstance(lost, AdapterNotKept) and rt.adapters.registry.meta(p.tenant, p.user_id) is not None:
        log.warning("the adapter of user %r of tenant %r was dropped twice before chat %s began, and the user still has "
                    "it (replaced twice meanwhile: promotions or retrains): a 503 with Retry-After",
                    p.user_id, p.tenant, p.response_id)
        raise ServiceUnavailableException(
            detail="this user's adapter could not be kept loaded until the chat began (it was replaced twice meanwhile: "
                   f"promotions or retrains); the chat was not begun: send it again after {ADAPTER_RETRY_AFTER} seconds",
            headers={"Retry-After": str(ADAPTER_RETRY_AFTER)}) from lost
    if isinstance(lost, AdapterNotKept):
        log.warning("the generation server did not keep the adapter of user %r of tenant %r (it answered a chat for it 404 "
                    "just after loading it again): chat %s answered by the fallback (%s)", p.user_id, p.tenant, p.response_id,
                    fallback or "the base model")
    else:
        log.warning("the adapter of user %r of tenant %r was dropped twice before chat %s began: answered by the "
                    "fallback (%s)", p.user_id, p.tenant, p.response_id, fallback or "the base model")
    p.adapter = fallback
    return generate()


def holding(rt: Runtime, adapter: str | None):
    """The pool's hold of `adapter` (`AdapterPool.holding`) while a generation with it begins; nothing for the base."""
    return rt.adapters.holding(adapter) if adapter is not None else contextlib.nullcontext()


def load_fallback(rt: Runtime) -> str | None:
    """The adapter serving users without their own: the FSPO adapter when configured, else None (the base model)."""
    return None if rt.adapters.fallback == BASE_ADAPTER else rt.adapters.fallback


def _begun(pieces: Iterator) -> Iterator:
    """`pieces` run to their first (an adapter not loaded raises here, before any token), then all of them (closing
    the result closes `pieces`, stopping the generation)."""
    first = next(pieces)

    def rest() -> Iterator:
        yield first
        yield from pieces

    return rest()


def complete(rt: Runtime, p: Plan, sampling: Sampling, cancel: threading.Event | None = None) -> Served:
    """Generate, rerank and remember. `cancel` (set when the client goes away) stops generation at
    its next token and raises `pluralign.policy.generator.Cancelled`; nothing is stored then. Once
    generated, a chat the service's stop cut first raises Cancelled too (stores nothing); one it did not
    is no longer cut (`GeneratingChats.generated`): stored, it is sent whole."""
    start = time.perf_counter()
    if p.styles and hasattr(rt.generator, "generate_styled"):  # a remote generator samples plain candidates
        styles = choose_styles(p.candidates, sampling.seed, stances=asks_judgement(p.messages))
        candidates, prompt_tokens = with_adapter_again(rt, p, lambda: rt.generator.generate_styled(
            p.context, styles, sampling=sampling, adapter=p.adapter, cancel=cancel))
    else:
        candidates, prompt_tokens = with_adapter_again(rt, p, lambda: rt.generator.generate(
            p.context, n=p.candidates, sampling=sampling, adapter=p.adapter, cancel=cancel))
    p.timings.generation_ms = ms(start)
    texts = [c.text for c in candidates]
    scores, order = score_candidates(rt, p, texts)
    served = Served(plan=p, candidates=candidates, scores=scores, order=order, prompt_tokens=prompt_tokens,
                    compare=choose_compare(rt, p, texts, order))
    if not rt.chats.generated(cancel):  # the service stopped it first (`service.stopping`): nothing stored
        raise Cancelled()
    remember(rt, served)
    return served


def stream(rt: Runtime, p: Plan, sampling: Sampling, cancel: threading.Event | None = None) -> Iterator[str | Served]:
    """Text pieces of the served answer, then the Served record.

    With one candidate the tokens stream as they are generated (closing the iterator stops them; `cancel` set before
    they begin, Cancelled: nothing generated, in a generation process either).
    With several, all are generated, reranked, and the best one is then sent in pieces: reranking
    needs whole answers; `cancel` stops that generation at its next token (`Cancelled`).
    """
    if p.candidates == 1:
        start = time.perf_counter()
        final = None
        pieces = lambda: _begun(rt.generator.stream(p.context, sampling=sampling, adapter=p.adapter, cancel=cancel))  # noqa: E731
        for piece in with_adapter_again(rt, p, pieces):
            if isinstance(piece, Candidate):
                final = piece
            else:
                yield piece
        p.timings.generation_ms = ms(start)
        # the generator's count for this stream (a remote server's `usage`): none asked once the answer streamed (a
        # remote one's asked here would be of its /tokenize when another chat took the stream's own)
        prompt_tokens = final.prompt_tokens if final.prompt_tokens is not None else rt.generator.prompt_tokens(p.context)
        served = Served(plan=p, candidates=[final], scores=[0.0], order=[0], prompt_tokens=prompt_tokens)
        if not rt.chats.generated(cancel):  # as in `complete`
            raise Cancelled()
        remember(rt, served)
        yield served
        return
    served = complete(rt, p, sampling, cancel)
    text = served.candidates[served.order[0]].text
    for start in range(0, len(text), 16):
        yield text[start : start + 16]
    yield served
