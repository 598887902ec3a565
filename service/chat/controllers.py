"""POST /v1/chat/completions (JSON or server-sent events), GET /v1/models and GET /v1/models/{model_id}."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException, NotFoundException, ServiceUnavailableException, TooManyRequestsException
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.response import Stream

from pluralign.data.text import is_blank
from pluralign.embed.remote import RemoteEncoderError
from pluralign.policy.adapters import adapter_name
from pluralign.policy.generator import (
    Cancelled,
    GenerationRefused,
    GenerationTimedOut,
    PromptNotCounted,
    RemoteGeneratorError,
    Sampling,
)
from pluralign.policy.process import GeneratorClosed, GeneratorStalled, GeneratorUnavailable
from pluralign.store.failures import StoreUnavailable
from service.auth import ApiKey, key_id
from service.chat import services
from service.chat.fields import check_combinations, check_neutral_fields, check_parts, template_messages
from service.chat.keys import request_digest
from service.chat.schemas import (
    CHUNK_ENCODER,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    Model,
    ModelList,
    Usage,
)
from service.errors import (
    KEY_IN_USE,
    KEY_REUSED,
    bad_request,
    encoder_unavailable,
    error_responses,
    from_extra,
    shown,
    storage_failure_of,
    storage_response,
    storage_status,
    stream_error,
)
from service.feedback.services import IDEMPOTENCY_KEY, one_idempotency_key
from service.ids import check_user_id, routed_to, user_header_lines
from service.metrics import DECLARED_COUNTERS
from service.runtime import Runtime
from service.scheduler import Busy, Stopping
from service.settings import MAX_SHOTS
from service.stopping import STOPPING, STOPPING_RETRY_AFTER
from service.strict import CONTAINERS_BY_BODY_LIMIT

log = logging.getLogger("pluralign.service")

MAX_N = 8
MAX_MESSAGE_CHARS = 20_000  # one message's text (docs/api.md: wire-format caps)
MODEL_ALIASES = ("pluralign", "default")


def model_names(rt: Runtime) -> list[str]:
    return [rt.generator.model_id, *MODEL_ALIASES]


MAX_STOP_CHARS = 64  # a stop string's length (its set-up in transformers grows with it: 64 characters ~0.7 s)


def sampling_for(rt: Runtime, data: ChatRequest) -> Sampling:
    field = "max_completion_tokens" if data.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(data, field)
    max_tokens = rt.settings.max_tokens if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= rt.settings.max_tokens_limit:
        raise bad_request(field, f"must be between 1 and {rt.settings.max_tokens_limit}, got {max_tokens}")
    stop = (data.stop,) if isinstance(data.stop, str) else tuple(data.stop or ())
    if len(stop) > 4 or any(not s for s in stop):
        raise bad_request("stop", "at most 4 non-empty strings")
    for i, s in enumerate(stop):  # transformers' stop-string set-up costs the generator ~8 ms a character (SmolLM2)
        if len(s) > MAX_STOP_CHARS:
            raise bad_request("stop" if isinstance(data.stop, str) else f"stop[{i}]",
                              f"{len(s)} characters; a stop string is at most {MAX_STOP_CHARS} characters")
    temperature = 0.7 if data.temperature is None else data.temperature
    if not 0 <= temperature <= 2:
        raise bad_request("temperature", f"must be in [0, 2], got {temperature}")
    top_p = 1.0 if data.top_p is None else data.top_p
    if not 0 < top_p <= 1:
        raise bad_request("top_p", f"must be in (0, 1], got {top_p}")
    if data.seed is not None and not -(2**63) <= data.seed < 2**63:
        raise bad_request("seed", f"must be a 64-bit signed integer, got {data.seed}")
    penalties = {}
    for field in ("frequency_penalty", "presence_penalty"):
        value = getattr(data, field) or 0.0
        if not -2 <= value <= 2:
            raise bad_request(field, f"must be in [-2, 2], got {value}")
        penalties[field] = value
    return Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop, seed=data.seed, **penalties)


@dataclass(frozen=True)
class ChatOptions:
    """What a chat request asks for beyond sampling, checked before it waits for a generation slot."""

    user: str | None  # the end user (`safety_identifier` or `user`: both, naming two users, are a 400); None: anonymous
    n: int  # choices returned
    candidates: int  # answers generated (at least n)
    rerank: bool
    shots: int  # past comparisons put in the context
    styles: bool  # balanced answer styles


def user_field(data: ChatRequest) -> str:
    """The field naming the chat's end user: `safety_identifier` where it is sent (OpenAI's newer name), else `user`."""
    return "user" if data.safety_identifier is None else "safety_identifier"


def chat_options(rt: Runtime, data: ChatRequest) -> ChatOptions:
    """The request's options, or a 400 naming the field (model, messages, n, the neutral-only fields, the
    user id, pluralign's own options). Run before the request is queued for generation: a request that
    can never be served is told so at once, not after waiting its turn, nor answered 429 (which clients
    retry) while the tenant's generation slots are full."""
    if data.model not in model_names(rt):
        # OpenAI's code for it (its status is 404; ours stays the documented 400 naming `model`)
        raise bad_request("model", f"unknown model {shown(data.model)}; available: {', '.join(model_names(rt))}", code="model_not_found")
    if not data.messages:
        raise bad_request("messages", "must hold at least one message")
    check_parts(data.messages)  # before the last user message's text is read: a refusal part is no user's text
    last_user = max((i for i, m in enumerate(data.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise bad_request("messages", "must hold a non-empty `user` message")
    if is_blank(data.messages[last_user].text()):  # the question answered is the last user message (nothing visible: no question)
        raise bad_request(f"messages[{last_user}].content", "the last `user` message must not be empty")
    n = choices_wanted(data)
    if not 1 <= n <= MAX_N:
        raise bad_request("n", f"must be between 1 and {MAX_N}, got {n}")
    check_neutral_fields(data)
    # each one sent is a user id, an empty one a 400 naming it (an empty `safety_identifier` is not served
    # as no user's, nor an empty `user` beside one refused as two users, naming the other)
    for name, value in (("safety_identifier", data.safety_identifier), ("user", data.user)):
        if value is not None:
            check_user_id(value, name)
    user = data.safety_identifier if data.safety_identifier is not None else data.user  # equal when both are sent (`check_combinations`)
    options = data.pluralign
    do_rerank = rt.settings.rerank if options is None or options.rerank is None else options.rerank
    candidates = rt.settings.candidates if do_rerank else 1
    if options is not None and options.candidates is not None:
        if not 1 <= options.candidates <= MAX_N:
            raise bad_request("pluralign.candidates", f"must be between 1 and {MAX_N}, got {options.candidates}")
        candidates = options.candidates
    shots = rt.settings.shots if options is None or options.shots is None else options.shots
    if not 0 <= shots <= MAX_SHOTS:
        raise bad_request("pluralign.shots", f"must be between 0 and {MAX_SHOTS}, got {shots}")
    styles = rt.settings.candidate_styles if options is None or options.styles is None else options.styles
    return ChatOptions(user=user, n=n, candidates=max(candidates, n), rerank=do_rerank, shots=shots, styles=styles)


def plan_for(rt: Runtime, tenant: str, data: ChatRequest, o: ChatOptions) -> services.Plan:
    p = services.plan(rt, tenant, o.user, template_messages(data.messages), o.candidates, o.rerank, o.shots, returned=o.n, styles=o.styles)
    p.store = data.store is not False
    return p


NOT_TRIED = ("not tried: it failed within the last PLURALIGN_STORE_TIMEOUT_S seconds; nothing this request sent "
             "was acknowledged; send it again later")


def store_down(rt: Runtime) -> StoreUnavailable | None:
    """The object store's failure when one was seen within the last `store_timeout_s` (not followed by a
    success): a chat naming a user is then answered 503 at once instead of taking a generation slot to wait out the
    store's timeouts again (10-40 s each; the chats queued behind it, any tenant's, waited as long
    again). After that time the next chat tries the store again."""
    down = rt.store.problems.object_store_down(rt.settings.store_timeout_s)
    if down is None:
        return None
    return StoreUnavailable(down["what"], rt.settings.lancedb_uri, down["action"], down["problem"],
                            f"not tried: {down['failures']} failure(s), the last {time.time() - down['last']:.1f} s ago")


def choices_wanted(data: ChatRequest) -> int:
    return 1 if data.n is None else data.n


@post("/v1/chat/completions", status_code=200, responses=error_responses(409, 413, 422, 429, 503, 507, why={
          409: f"{KEY_IN_USE}; or `user_deleted`: the user's DELETE through another replica stopped this answer, nothing "
               "of it stored (not to be retried)",
          422: KEY_REUSED}),
      summary="Create a personalized chat completion", opt={CONTAINERS_BY_BODY_LIMIT: True})  # its messages are bounded by the body limit alone
async def create_chat_completion(
    request: Request, data: JSONBody[ChatRequest],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
) -> Response[ChatCompletion]:
    """OpenAI-compatible; `user` (or `safety_identifier`) names the end user whose history and reward apply.

    Runs on the fair generation scheduler (`rt.scheduler`), not on the request threads: 429 with
    Retry-After when this tenant has `tenant_generations` chats in flight or the queue is full; 400
    up front (before the queue) for a request that can never be served (`chat_options`, sampling) and
    when the prompt and max_tokens exceed the model's context. A stream whose client goes
    away stops generating; a stream that fails ends with an error event, then `[DONE]`. 503 with
    Retry-After once the service is stopping (`service.app.stop_taking_work`, `cut_running`).
    A chat (not a stream, nor `store: false`) sent with `Idempotency-Key` is answered once: its retry gets the first answer
    (`Idempotent-Replayed: true`), a 409 with Retry-After while the first runs (`service.chat.keys`).
    Annotated as a Response so each response keeps its own media type (JSON or server-sent events)."""
    rt: Runtime = request.app.state.runtime
    check_combinations(data)
    sampling = sampling_for(rt, data)
    options = chat_options(rt, data)  # before the scheduler: a 400 now, not after the wait (nor a 429 while it is full)
    routed_to(user_header_lines(request), options.user, user_field(data))
    check_prompt_size(rt, data, sampling)
    check_idempotency_key(request, idempotency_key)
    # a stream's answer goes out as it is made, and `store: false` asks that nothing of the chat be kept: not remembered
    if idempotency_key is not None and not data.stream and data.store is not False:
        return await keyed(rt, request, idempotency_key, data, options, lambda: answer_chat(rt, request, data, sampling, options))
    return await answer_chat(rt, request, data, sampling, options)


def check_idempotency_key(request: Request, key: str | None) -> None:
    """A 400 naming `Idempotency-Key` for two of them, or one that is not 1-255 printable ASCII characters."""
    one_idempotency_key(request)
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise bad_request("Idempotency-Key", "must be 1-255 printable ASCII characters without spaces")


async def keyed(rt: Runtime, request: Request, key: str, data: ChatRequest, options: ChatOptions,
                answer: Callable[[], Awaitable[Response]]) -> Response:
    """`answer()` for a chat sent with `Idempotency-Key: key`, unless the tenant's chat of that user (or, naming none, of
    the same API key) and key was answered already: then that answer, with `Idempotent-Replayed: true`, and nothing generated or stored. Raises the
    409 of `service.chat.keys.in_use` while that chat runs, and a 422 naming the key when it had another body."""
    tenant = request.user.tenant
    caller = key_id(request.auth) if isinstance(request.auth, ApiKey) else ""  # a chat naming no user: its API key's
    first = rt.chat_keys.begin(tenant, options.user, key, request_digest(data), caller)
    if first is not None:
        rt.metrics.inc("pluralign_chat_replayed_total", help=DECLARED_COUNTERS["pluralign_chat_replayed_total"][0])
        return Response(first, headers={"Idempotent-Replayed": "true"})
    try:
        response = await answer()
    except BaseException:
        rt.chat_keys.failed(tenant, options.user, key, caller)
        raise
    if isinstance(response.content, ChatCompletion):
        chars = sum(len(c.message.content or "") for c in response.content.choices)
        rt.chat_keys.answered(tenant, options.user, key, response.content, chars, caller)
    else:  # the store known down: not tried (a 503)
        rt.chat_keys.failed(tenant, options.user, key, caller)
    return response


async def answer_chat(rt: Runtime, request: Request, data: ChatRequest, sampling: Sampling, options: ChatOptions) -> Response:
    """The chat's answer (JSON) or stream, once its request was checked (`create_chat_completion`)."""
    tenant = request.user.tenant
    down = store_down(rt) if options.user is not None else None  # naming no user: nothing stored is read or written
    if down is not None:
        return storage_response(request, down, NOT_TRIED, logged=rt.not_tried_said.due((down.name, down.action, down.problem)))
    if data.stream:
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        created = int(time.time())
        n = choices_wanted(data)
        stream_of = sse_events if n == 1 else sse_events_n

        def events(gone: threading.Event):
            p = plan_checked(rt, tenant, data, sampling, options)
            return p.response_id, stream_of(rt, p, sampling, created, include_usage, n, gone), adapter_user(p), plan_began(p)

        return Stream(await scheduled_stream(rt, tenant, events, request), media_type="text/event-stream")
    cancel = threading.Event()
    return await scheduled(rt, tenant, lambda: completion(rt, tenant, data, sampling, options, cancel), request, cancel)


def adapter_user(p: services.Plan) -> tuple[str, str] | None:
    """(tenant, user id) of a chat planned to generate from its user's own adapter, for `GeneratingChats.cut_deleted`
    (their DELETE through another replica stops it); None for any other chat (the fallback's, the base model's, an
    anonymous one: a chat of a deleted user gets its answer and stores nothing, docs/api.md)."""
    if p.user_id is None or p.adapter is None or p.adapter != adapter_name(p.tenant, p.user_id):
        return None
    return p.tenant, p.user_id


def plan_began(p: services.Plan) -> float:
    """When plan `p` began (unix seconds), before it read the user's history and took their adapter: a chat's `began`
    for `GeneratingChats.cut_deleted`, which stops it when a deletion record of its user was written after it (not the
    chat's registration, after its plan: a chat planned from the user's adapter before
    the record and registered after it would go on)."""
    return time.time() - (time.monotonic() - p.planned_at)


def user_deleted() -> HTTPException:
    """The 409 `user_deleted` of a chat stopped because its user's DELETE through another replica reached this one while
    it generated (`GeneratingChats.cut_deleted`): nothing of it was stored. It says `x-should-retry: false`: the openai
    client sends every other 409 again (twice by default), and the copy, planned after the DELETE's record, would be
    answered and stored as the user's interaction, their words from before the DELETE kept after it."""
    problem = ("the user was deleted (a DELETE through another replica) while this answer was generated: it was stopped, "
               "and nothing of it was stored")
    return HTTPException(status_code=409, detail=f"`user`: {problem}", headers={"x-should-retry": "false"},
                         extra=[{"key": "user", "message": problem, "code": "user_deleted"}])


def completion(rt: Runtime, tenant: str, data: ChatRequest, sampling: Sampling, options: ChatOptions,
               cancel: threading.Event | None = None) -> Response[ChatCompletion]:
    p = plan_checked(rt, tenant, data, sampling, options)
    created = int(time.time())
    cancel = cancel or threading.Event()
    with rt.chats.generating(cancel, adapter_user(p), plan_began(p)) as chat, rt.metrics.generation_queue.track_inprogress():
        try:
            served = services.complete(rt, p, sampling, cancel)
        except Cancelled:
            if chat.cut:  # the service stops (`service.app.cut_running`): not the client's leaving
                count_stopped(rt, "generating")
                raise stopping("the chat was stopped before it was finished (nothing was stored); send it again") from None
            if chat.deleted:  # the user's DELETE through another replica (`GeneratingChats.cut_deleted`)
                raise user_deleted() from None
            raise
    chosen = served.order[: choices_wanted(data)]
    choices = [
        Choice(index=i, message=AssistantMessage(content=served.candidates[c].text), finish_reason=served.candidates[c].finish_reason)
        for i, c in enumerate(chosen)
    ]
    completion_tokens = sum(served.candidates[c].tokens for c in chosen)
    rt.metrics.inc("pluralign_chat_completions_total", help="chat completions served", stream="false")
    rt.metrics.observe("pluralign_personalization_seconds", personalization_ms(served) / 1000, help="retrieval + context + rerank time")
    return Response(ChatCompletion(
        id=p.response_id, created=created, model=rt.generator.model_id, choices=choices,
        usage=Usage(prompt_tokens=served.prompt_tokens, completion_tokens=completion_tokens, total_tokens=served.prompt_tokens + completion_tokens),
        pluralign=served.info(),
    ))


def context_limit(rt: Runtime) -> int | None:
    return rt.settings.max_context_tokens or getattr(rt.generator, "context_tokens", None)


def prompt_budget(rt: Runtime, sampling: Sampling) -> tuple[int | None, str]:
    """The most prompt tokens one chat may send, and what sets it: the model's context less
    max_tokens, or `max_prompt_tokens` (a prompt's prefill holds the generation worker and costs the
    model every tenant takes in turns, so it is bounded for every tenant's sake)."""
    budgets = []
    limit = context_limit(rt)
    if limit is not None:
        budgets.append((limit - sampling.max_tokens, f"with max_tokens {sampling.max_tokens} it exceeds the model's context of {limit} tokens"))
    if rt.settings.max_prompt_tokens is not None:
        budgets.append((rt.settings.max_prompt_tokens, f"this service takes at most {rt.settings.max_prompt_tokens} (`max_prompt_tokens`)"))
    return min(budgets, default=(None, ""))


def check_prompt_size(rt: Runtime, data: ChatRequest, sampling: Sampling) -> None:
    """A message whose text (content, refusal and tool calls, as the model reads it) is over
    MAX_MESSAGE_CHARS, or a prompt that cannot fit the prompt budget, is a 400 before any work. A
    token holds at most ~16 characters here, so far longer text is refused without tokenizing it."""
    templated_messages = template_messages(data.messages)  # the text the model reads of each message
    for i, (m, templated) in enumerate(zip(data.messages, templated_messages, strict=True)):
        if len(m.text()) > MAX_MESSAGE_CHARS:
            raise bad_request(f"messages[{i}].content", f"{len(m.text())} characters; a message holds at most {MAX_MESSAGE_CHARS}")
        if len(templated["content"]) > MAX_MESSAGE_CHARS:
            raise bad_request(f"messages[{i}]", f"its text with its refusal and tool calls is {len(templated['content'])} characters; "
                                                f"a message holds at most {MAX_MESSAGE_CHARS}")
    budget, why = prompt_budget(rt, sampling)
    if budget is None:
        return
    chars = sum(len(m["content"]) for m in templated_messages)
    if chars > 16 * budget:
        raise bad_request("messages", f"{chars} characters cannot fit the prompt budget of {budget} tokens: {why}")


def plan_checked(rt: Runtime, tenant: str, data: ChatRequest, sampling: Sampling, options: ChatOptions) -> services.Plan:
    """The plan, once its context (messages and retrieved shots) is known to fit the prompt budget
    and its candidates the prefill budget (`fit_prefill`). Retrieved shots are left out, farthest first, until the
    prompt fits; messages that do not fit alone are a 400 naming `messages`. Runs on the scheduler: the plan's timings
    record how the request waited for its turn."""
    p = plan_for(rt, tenant, data, options)
    waited = rt.scheduler.waited()
    if waited is not None:
        p.timings.queue_ms, p.timings.queued_behind = round(waited.seconds * 1000, 3), waited.behind
    budget, why = prompt_budget(rt, sampling)
    count = prompt_counter(rt)
    tokens = None
    if budget is not None:
        tokens = count(p.context)
        if tokens > budget and p.shots:
            tokens = fit_shots(p, count, budget, why)
        if tokens > budget:
            raise bad_request("messages", f"the prompt is {tokens} tokens; {why}")
    if rt.settings.max_prefill_tokens is not None:
        fit_prefill(rt, p, count(p.context) if tokens is None else tokens, rt.settings.max_prefill_tokens)
    return p


def prompt_counter(rt: Runtime) -> Callable[[list[dict[str, str]]], int]:
    """The generator's `prompt_tokens` for the counts of one chat (`plan_checked`: its prompt, then each prompt it could
    send keeping fewer shots, `fit_shots`): a remote generator's (`RemoteGenerator.prompt_counter`) bounds them together,
    its server's `/tokenize` given `tokenize_timeout_s` for all of them (not each its own: a slow one would hold
    a chat whose shots were left out (shots + 2) times as long); a local one counts each in this process."""
    counter = getattr(rt.generator, "prompt_counter", None)
    return counter() if counter is not None else rt.generator.prompt_tokens


def fit_shots(p: services.Plan, count: Callable[[list[dict[str, str]]], int], budget: int, why: str) -> int:
    """Keeps the most of plan `p`'s retrieved shots, nearest first, that leave its prompt within `budget` tokens, once
    its prompt with all of them is over it; returns the prompt's tokens then. Raises a 400 naming `messages` when the
    client's messages alone are over it. The number kept is searched for (`most_kept`), a prompt's count growing with
    each shot it keeps: a remote server's counts a few at a time (`PromptCounter.each`, `at_once` of them: one round
    trip of its `/tokenize` a round, all within the chat's one bound for its counts), a local generator's one at a time
    (a binary search). Asked one after another, the remote counts would be too slow (a server answering each
    in 0.3 s would make a chat leaving 2 of 4 shots out a 503 at a bound of 1 s); all at once, they would be one
    request per number of shots it could keep (16 at once for 16 shots)."""
    kept = [p.context_keeping(k) for k in range(len(p.shots))]
    each = getattr(count, "each", None) or (lambda conversations: [count(c) for c in conversations])
    k, counts = most_kept(len(kept), lambda ks: each([kept[k] for k in ks]), budget, getattr(count, "at_once", 1))
    if k is None:  # the client's messages alone: no shot to give up makes them fit
        raise bad_request("messages", f"the prompt is {counts[0]} tokens; {why}")
    p.keep_shots(k)
    return counts[k]


def most_kept(known_over: int, counted: Callable[[list[int]], list[int]], budget: int, at_once: int) -> tuple[int | None, dict[int, int]]:
    """The largest k in [0, known_over) whose prompt's count (`counted(ks)`: the counts of the prompts keeping each k
    of `ks`, in order) is within `budget`, None when not even 0's is, and the counts asked ({k: tokens}), for counts
    that grow with k (a prompt keeping one more shot reads more text). Each round asks `at_once` counts spread evenly
    over the ks still in question (a (`at_once` + 1)-ary search): ceil(log_(at_once+1)(known_over)) rounds at most."""
    fits, over, counts = -1, known_over, {}  # k <= fits: within budget; k >= over: over it
    while over - fits > 1:
        span = over - fits
        ks = sorted({fits + max(1, min(span - 1, round(j * span / (at_once + 1)))) for j in range(1, at_once + 1)})
        for k, tokens in zip(ks, counted(ks), strict=True):
            counts[k] = tokens
        fits = max([k for k in ks if counts[k] <= budget], default=fits)
        over = min([k for k in ks if counts[k] > budget and k > fits], default=over)
    return (fits if fits >= 0 else None), counts


def fit_prefill(rt: Runtime, p: services.Plan, tokens: int, prefill: int) -> None:
    """Fits plan `p`'s candidates of a `tokens`-token prompt to `prefill` tokens (`max_prefill_tokens`) of prefill, as
    its generator prefills them: plain candidates of a generator whose `shared_prefill` says so share one prefill of
    the prompt (the local generator's sliced prefill: one row forwarded, its cache repeated), so any
    number fit once the prompt does; styled candidates (each style's own prompt), and those of a generator that does
    not say (Mamba's one forward of every row), prefill it once each (a remote vLLM server's share theirs, its prompt
    counted by its tokenizer; a server without one counts no tokens up front: `tokens` 0, nothing
    cut). Styled candidates over it are
    cut, down to the `n` returned (and 2), then generated plainly when that generator shares its prefill; else fewer
    candidates are generated, down to the `n` returned. A prompt over it alone is a 400 naming `messages`; `n` copies
    over it (not shared) a 400 naming `n`. Shared copies count once: `n: 4` of a
    prompt that fits once but not 4 times is not a 400."""
    fits = prefill // max(tokens, 1)  # copies of the prompt prefilled one by one that fit
    if fits >= p.candidates:
        return
    why = f"this service prefills at most {prefill} tokens a chat (`max_prefill_tokens`)"
    if fits == 0:
        raise bad_request("messages", f"the prompt is {tokens} tokens; {why}")
    styled = p.styles and hasattr(rt.generator, "generate_styled")
    if getattr(rt.generator, "shared_prefill", False) and (not styled or fits < max(p.returned, 2)):
        p.styles = False  # plain candidates: one prefill, however many
        return
    if fits < p.returned:
        raise bad_request("n", f"the prompt is {tokens} tokens and {p.returned} choices prefill {tokens * p.returned}; {why}")
    p.candidates = fits
    p.rerank, p.styles = p.rerank and fits > 1, p.styles and fits > 1


def stopping(detail: str) -> ServiceUnavailableException:
    """503 with Retry-After: the service is stopping (SIGTERM), the chat was not served; another replica,
    or this one once back, serves it."""
    return ServiceUnavailableException(detail=f"{STOPPING}: {detail}", headers={"Retry-After": str(STOPPING_RETRY_AFTER)})


GENERATOR_RETRY_AFTER = 10  # seconds: `Retry-After` of a chat no generation process could serve (a new one starts: seconds)


def unavailable_as_503(exc: Exception) -> Exception:
    """`exc`, unless no generation process could serve the chat (`GeneratorUnavailable`: the child died during it,
    killed for memory, or a new one could not start): then the 503 with Retry-After that tells a client to send it
    again (a new child starts with the next chat), its cause logged for the operator; `GeneratorClosed` (a late chat
    as the service stops) is the stop's 503, neither a 500 `internal error`. A remote generation
    server's failure (`RemoteGeneratorError`: down, timed out after its retries, an error answer) is such a 503 too,
    its address and words in the log only (not a 500 `internal error`; one that sent no
    whole answer within `generator_timeout_s`, `GenerationTimedOut`, says so, and a stream given
    up by a bound of its own, `generator_stream_idle_s` or `generator_stream_timeout_s`, names that one), except its
    refusal of the chat as the client's fault (`GenerationRefused`: messages too long for its model's context), a 400
    naming the field, with the server's words (not a 503 "send it again", which a client would retry for ever); its
    tokenizer's failure to count the prompt in time (`PromptNotCounted`) is the 503 that says so (the
    count does not wait `generator_timeout_s`, then send the chat uncounted)."""
    if isinstance(exc, GenerationRefused):
        log.info("the generation server refused a chat as the client's fault: %s", exc)
        return bad_request(exc.param, exc.reason)
    if isinstance(exc, GeneratorClosed):
        return stopping("the generation process has ended; send the chat again")
    if isinstance(exc, PromptNotCounted):
        log.error("a chat was not sent: %s", exc)
        return ServiceUnavailableException(
            detail=f"generation is unavailable for now: the generation server (PLURALIGN_GENERATOR) did not count the "
                   f"prompt's tokens (its /tokenize: {exc.why}), so the chat was not sent to it; send it again",
            headers={"Retry-After": str(GENERATOR_RETRY_AFTER)})
    if isinstance(exc, RemoteEncoderError):  # the embeddings server's: its prompt or candidates not embedded
        return encoder_unavailable(exc)
    if isinstance(exc, GenerationTimedOut):
        log.error("a chat was not generated: %s", exc)
        tries = f" (each of {exc.tries} tries)" if exc.tries > 1 else ""
        setting = f"PLURALIGN_GENERATOR_{exc.bound.upper()}"  # RemotePolicy's field, the setting `generator_` + it
        return ServiceUnavailableException(
            detail=f"generation is unavailable for now: the generation server (PLURALIGN_GENERATOR) {exc.said}{tries} "
                   f"({setting}); the chat was not finished: send it again", headers={"Retry-After": str(GENERATOR_RETRY_AFTER)})
    if isinstance(exc, RemoteGeneratorError):
        log.error("a chat was not generated: %s", exc)
        return ServiceUnavailableException(
            detail="generation is unavailable for now: the generation server failed or could not be reached (the operator's "
                   "log says why); the chat was not finished: send it again", headers={"Retry-After": str(GENERATOR_RETRY_AFTER)})
    if not isinstance(exc, GeneratorUnavailable):
        return exc
    log.error("a chat was not generated: %s (the next chat starts a new generation process)", exc)
    if isinstance(exc, GeneratorStalled):
        return ServiceUnavailableException(
            detail=f"generation is unavailable for now: the generation process made no progress for {exc.stall_s:g} s "
                   "(generation_stall_s) and was replaced; the chat was not finished: send it again",
            headers={"Retry-After": str(GENERATOR_RETRY_AFTER)})
    return ServiceUnavailableException(
        detail="generation is unavailable for now: the generation process ended during the chat or could not be started "
               "(the operator's log says why); the chat was not finished: send it again", headers={"Retry-After": str(GENERATOR_RETRY_AFTER)})


NOT_BEGUN = "the chat was not begun; send it again"
STOPPED_HELP = "chats the service's stop ended: waiting (503, never begun) or generating (cut: a 503, a stream's error event)"


def count_stopped(rt: Runtime, when: str) -> None:
    rt.metrics.inc("pluralign_chat_stopped_total", help=STOPPED_HELP, when=when)


def not_begun(rt: Runtime) -> ServiceUnavailableException:
    """The 503 of a chat the service's stop found waiting (or that came while it stops), counted."""
    count_stopped(rt, "waiting")
    return stopping(NOT_BEGUN)


def _busy(exc: Busy) -> TooManyRequestsException:
    return TooManyRequestsException(detail=f"generation is busy: {exc}", headers={"Retry-After": str(exc.retry_after)})


class ClientGone(HTTPException):
    """The client closed the connection before its answer was ready (nginx's 499; nobody reads it)."""

    status_code = 499


async def scheduled(rt: Runtime, tenant: str, fn, request: Request | None = None, cancel: threading.Event | None = None):
    """fn() on the generation scheduler; awaiting it does not hold a request thread. If the
    request is cancelled while fn waits, fn never runs. With `request` and `cancel`: when the
    client disconnects (an `http.disconnect` from the server), `cancel` is set, so a generation
    already running stops at its next token, the tenant's place is given back at once (`FairScheduler.let_go`), and
    ClientGone is raised."""
    try:
        future = rt.scheduler.submit(tenant, fn)
    except Busy as exc:
        raise _busy(exc) from None
    except Stopping:
        raise not_begun(rt) from None
    answer = asyncio.wrap_future(future)
    try:
        if request is None or cancel is None:
            return await _unless_stopping(rt, answer)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answer.done():  # the client left, or this request was cancelled: stop the work
                cancel.set()
                answer.cancel()  # its outcome is dropped
                rt.scheduler.let_go(future)  # not started: never runs; running: the tenant's place is free at once
            gone.cancel()
        if answer.cancelled():
            rt.metrics.inc("pluralign_chat_cancelled_total", help="chats stopped because their client disconnected")
            raise ClientGone(detail="the client disconnected before the answer was ready")
        return await _unless_stopping(rt, answer)
    finally:  # the futures hold the task's error, whose traceback holds this frame: not a cycle (`FairScheduler._run`)
        del future, answer


async def _unless_stopping(rt: Runtime, answer: asyncio.Future):
    """The answer; 503 (`stopping`) when its task was still waiting as the scheduler closed, and when no generation
    process could serve it (`unavailable_as_503`)."""
    try:
        return await answer
    except Stopping:
        raise not_begun(rt) from None
    except (GeneratorUnavailable, RemoteGeneratorError) as exc:
        raise unavailable_as_503(exc) from None
    finally:  # the future holds its error, whose traceback holds this frame: not a cycle (`FairScheduler._run`)
        del answer


async def _refused(future) -> None:
    """Returns once the scheduler refused `future`'s task (it closed while the task waited), and never
    otherwise (it is cancelled): a task that ran tells its outcome through its events."""
    outcome = asyncio.wrap_future(future)
    # read here: a wait cut by a keep-alive's timeout leaves it to end unawaited ("Future exception was never retrieved")
    outcome.add_done_callback(lambda done: done.cancelled() or done.exception())
    with contextlib.suppress(Exception):  # Stopping among them; not this coroutine's own cancellation
        await asyncio.shield(outcome)
    if not isinstance(future.exception(), Stopping):
        await asyncio.Event().wait()


async def _disconnected(request: Request) -> None:
    """Returns once the server reports the client gone. The body has been read by now, so the next
    ASGI message is `http.disconnect` (servers send it when the connection closes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


_END = object()
DONE = b"data: [DONE]\n\n"  # a stream's last event


def _cut_ending(rt: Runtime, cut: bool, sent: bool) -> tuple[bytes, ...]:
    """The events that end a stream whose chat the service's stop cut (`cut`) after its first event was
    handed over (`sent`: its headers went with it): an error event and [DONE], as a failed stream is told
    (vLLM does the same). A cut chat is counted; one not cut ends as its own events did."""
    if not cut:
        return ()
    count_stopped(rt, "generating")
    if not sent:  # answered a plain 503 instead (`scheduled_stream`'s producer raises it)
        return ()
    error = stream_error(503, f"{STOPPING}: the answer was stopped before it was finished; send the request again")
    return b"data: " + CHUNK_ENCODER.encode(error) + b"\n\n", DONE


class Opening:
    """Whether a stream's headers went out before its producer's first event (`scheduled_stream` sends them with a
    keep-alive once one is due while the chat waits for a generation slot, is planned, or generates n > 1 candidates),
    decided once between the event loop and the producer's thread: a chat whose planning failed, that the service's
    stop cut, or that failed, before any event is a plain 4xx or 503 (or its error's status) only while nothing was
    sent; once the headers went, it ends with an error event and [DONE]."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = self._ended = False

    def open(self) -> bool:
        """The loop: whether the headers may go now (False once the producer ended with nothing sent)."""
        with self._lock:
            self._opened = self._opened or not self._ended
            return self._opened

    def end(self, sent: bool) -> bool:
        """The producer, as it ends: whether the headers went (`sent`: it handed over an event; or a keep-alive did)."""
        with self._lock:
            self._ended = True
            return sent or self._opened


def failure_event(rt: Runtime, exc: Exception, response_id: str | None = None) -> bytes:
    """The `data: {error}` event ending a stream whose headers went before `exc` was raised, with the status, code
    and `param` the plain answer would have had: a request's own error (planning's 400 naming its field, the stop's
    503) as raised; a storage failure, the store's or a plain OSError's (ENOSPC from a file the service writes,
    `storage_failure_of`), as a request's 507 or 503 says it; any other a 500 naming the exception's type. Logged
    (naming the stream's `response_id` once known) and counted."""
    rt.metrics.inc("pluralign_stream_errors_total", help="streams that ended with an error event")
    stream = f"stream {response_id}" if response_id else "a stream"
    exc = unavailable_as_503(exc)
    if isinstance(exc, HTTPException) and exc.status_code != 500:  # planned after its keep-alive went (queued)
        param, code, _ = from_extra(exc.extra)
        log.info("%s answered %d after its headers went: %s", stream, exc.status_code, exc.detail)
        return b"data: " + CHUNK_ENCODER.encode(stream_error(exc.status_code, exc.detail, code, param)) + b"\n\n"
    storage = storage_failure_of(rt, exc)
    if storage is not None:  # its table (or the data folder) cannot be read or written
        status, code, message = storage_status(storage)
        log.error("%s answered %d: %s (docs/operations.md, storage failures)", stream, status, storage)
        return b"data: " + CHUNK_ENCODER.encode(stream_error(status, message, code)) + b"\n\n"
    log.error("%s failed", stream, exc_info=exc)
    return b"data: " + CHUNK_ENCODER.encode(stream_error(500, f"generation failed: {type(exc).__name__}")) + b"\n\n"


def _planned(rt: Runtime, make_events, gone: threading.Event, put, opening: Opening):
    """(response id, events, chat) of `make_events(gone)`, which plans the answer; when planning fails (a bad request)
    it raises, `_END` put, while the stream's headers have not gone; once they went (a keep-alive while it was
    queued) it puts an error event, [DONE] and `_END` and returns None."""
    try:
        # a bad request raises here, before any event; `whose`: the user whose adapter it generates from, when its plan began
        response_id, events, *whose = make_events(gone)
        # stopped by the service's cut too (its events then say so), and by the user's DELETE through another replica
        return response_id, events, rt.chats.generating(gone, *whose)
    except Exception as exc:
        if not opening.end(False):
            put(_END)
            if isinstance(exc, GeneratorUnavailable | RemoteGeneratorError):  # an adapter's load there, as planned
                raise unavailable_as_503(exc) from None
            raise
        for event in (failure_event(rt, exc), DONE, _END):
            put(event)
        return None
    except BaseException:
        put(_END)
        raise


def _produce(rt: Runtime, make_events, gone: threading.Event, put, opening: Opening | None = None) -> None:
    """Runs on the scheduler: `put`s each event of `make_events(gone)` (-> (its response id, its events[, the user whose adapter it generates from, when its plan began])), then `_END`,
    for `scheduled_stream` to hand over, and stops once `gone` is set. A chat whose planning failed (a bad request), or
    that the service's stop cut, or that failed, before the stream's headers went (its first event, or a keep-alive
    while it was queued, planned or generated: `opening`) raises (a 400; `stopping`: a plain 503; a failure: its own
    status); one that failed or was cut later ends with an error event and [DONE]."""
    opening = opening or Opening()
    planned = _planned(rt, make_events, gone, put, opening)
    if planned is None:
        return
    response_id, events, chat = planned
    ended = False  # every event produced: the chat was served whole, whenever its client left
    sent = False  # an event was handed over: the stream's headers go (or went) with it
    failed: Exception | None = None  # raised before the first event (n > 1 generates every candidate first)
    try:
        with chat:
            for event in events:
                if gone.is_set():
                    break
                put(event)
                sent = True
            else:
                ended = True
    except Cancelled:  # stopped by `gone`: nobody reads the rest (unless the service stops, below)
        pass
    except Exception as exc:  # a plain error status, or an error event once the headers went
        failed = unavailable_as_503(exc)
    finally:
        # read before _END (the relay sets `gone` too once it has read the end); not once every event
        # was produced: a client that read [DONE] and closed before this thread got here left nothing
        stopped = gone.is_set() and not ended and not (chat.cut or chat.deleted)
        events.close()  # a generation still running is cancelled (Generator.stream's finally)
        sent = opening.end(sent)
        cut = chat.cut and not ended
        if chat.deleted and not ended and not cut and failed is None:
            failed = user_deleted()
        told = (failure_event(rt, failed, response_id), DONE) if failed is not None and sent else ()
        for event in (*told, *_cut_ending(rt, cut and failed is None, sent), _END):
            put(event)
        if stopped:
            rt.metrics.inc("pluralign_chat_cancelled_total", help="chats stopped because their client disconnected")
    if failed is not None and not sent:
        raise failed
    if cut and not sent:  # before its first event (n > 1 generates every candidate first): no header is sent,
        # so it is answered as a chat the stop found waiting, a plain 503 with Retry-After, which clients send again
        raise stopping("the chat was stopped before it was finished (nothing was stored); send it again")


async def _first_event(rt: Runtime, future, queue: asyncio.Queue, gone: threading.Event, request: Request | None,
                       keepalive_s: float | None = None):
    """The first event `future`'s task puts on `queue` (`_END` when it ends without one). Raises a 503
    (`stopping`) when the scheduler closed while the task still waited (it never runs), and ClientGone
    when the client left first (seen with `request`) or this request was cancelled: `gone` is then set,
    so a task not started never runs and one running stops at its next token. With `keepalive_s`: None
    when no event came that soon (nothing is taken off the queue)."""
    first_event = asyncio.ensure_future(queue.get())
    left = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    refused = asyncio.ensure_future(_refused(future))  # still waiting as the scheduler closed: never runs
    never_ran = silent = left_first = False
    try:
        done, _ = await asyncio.wait({first_event, left, refused} - {None}, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED)
        silent = not done
        if refused.done() and not refused.cancelled() and not first_event.done():
            raise not_begun(rt)
    finally:
        refused.cancel()
        if silent:
            first_event.cancel()  # a get cancelled takes nothing off the queue
        elif not first_event.done():  # the client left (or this request was cancelled) before any event
            left_first = True  # (a task told to cancel is not cancelled() until it runs again: read this, not that)
            gone.set()
            never_ran = rt.scheduler.let_go(future)  # not started: never runs; running: stops at its next token, its place free now
            first_event.cancel()
        if left is not None:
            left.cancel()
    if silent:
        return None
    if left_first:  # (`gone` alone may be the service's cut, whose events tell the client)
        if never_ran:  # one that ran is counted by `_produce`
            rt.metrics.inc("pluralign_chat_cancelled_total", help="chats stopped because their client disconnected")
        raise ClientGone(detail="the client disconnected before the stream started")
    return first_event.result()


async def _opening_event(rt: Runtime, future, queue: asyncio.Queue, gone: threading.Event, request: Request | None,
                         opening: Opening):
    """The event a stream opens with: the first its task puts, or KEEPALIVE when none came within `sse_keepalive_s`
    (it waits for a generation slot, or n > 1 generates and reranks every candidate first) and the headers may go
    then (`opening`); `_END` when the task ends without one (planning failed: the error is the response)."""
    while (first := await _first_event(rt, future, queue, gone, request, rt.settings.sse_keepalive_s)) is None:
        if opening.open():
            return KEEPALIVE
    return first


async def _event_after_opening(rt: Runtime, future, queue: asyncio.Queue, gone: threading.Event):
    """The next event of a stream whose headers went (with a keep-alive) before its first event: that event, or
    KEEPALIVE after another `sse_keepalive_s`; the error event of the stop's 503 when the scheduler refused the task
    still waiting for its slot (never begun), [DONE] and `_END` put after it. A client's leaving is the response's to
    see now (it cancels the relay)."""
    try:
        event = await _first_event(rt, future, queue, gone, None, rt.settings.sse_keepalive_s)
    except HTTPException as refused:  # `not_begun`: the service stops
        for told in (DONE, _END):
            queue.put_nowait(told)
        return failure_event(rt, refused)
    return KEEPALIVE if event is None else event


KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: EventSource and the openai SDKs skip it


async def _next_event(queue: asyncio.Queue, keepalive_s: float):
    """The next event on `queue`, or KEEPALIVE when none came in `keepalive_s` seconds (a proxy in front
    closes a connection silent past its read timeout). A get cut by the timeout takes nothing off the queue."""
    try:
        return await asyncio.wait_for(queue.get(), keepalive_s)
    except TimeoutError:
        return KEEPALIVE


async def scheduled_stream(rt: Runtime, tenant: str, make_events, request: Request | None = None):
    """The SSE events of `make_events(gone)` (-> (response id, events), `_produce`) produced on the scheduler and
    handed over as they come. Waits for the first event, so a request that fails planning within `sse_keepalive_s`
    is still a plain 4xx. `gone` is set when the client goes away: while the request waits for its first event
    (queued, planning; seen with `request`) or once the returned async iterator is closed early. The producer then
    stops: a generation still running stops at its next token (the events pass `gone` on as its cancel event), one
    not started never runs, and the slot is free for the tenant's next chat. A stream silent for `sse_keepalive_s`
    seconds (setting) gets a `: keep-alive` comment line: before its first event too (waiting for a generation slot;
    n > 1 generates and reranks every candidate first), its headers then going with the comment, after which a
    planning error, a failure or the service's stop is an error event and [DONE]."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    opening = Opening()

    def put(event) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    try:
        future = rt.scheduler.submit(tenant, functools.partial(_produce, rt, make_events, gone, put, opening))
    except Busy as exc:
        raise _busy(exc) from None
    except Stopping:
        raise not_begun(rt) from None

    first = await _opening_event(rt, future, queue, gone, request, opening)
    if first is _END:  # planning failed (a 4xx) or nothing came: the error is the response
        await asyncio.wrap_future(future)

    async def relay():
        try:
            event = first
            while event is KEEPALIVE:  # the headers went before the first event: queued, planning or generating
                yield event
                event = await _event_after_opening(rt, future, queue, gone)
            while event is not _END:
                yield event
                event = await _next_event(queue, rt.settings.sse_keepalive_s)
            with contextlib.suppress(Stopping):  # refused while it waited, after its keep-alive: its event said so
                await asyncio.wrap_future(future)
        finally:
            gone.set()
            if rt.scheduler.let_go(future):  # not started yet: it never will (one that ran is counted by `_produce`; its place is free now)
                rt.metrics.inc("pluralign_chat_cancelled_total", help="chats stopped because their client disconnected")

    return relay()


def personalization_ms(served: services.Served) -> float:
    t = served.plan.timings
    return t.retrieval_ms + t.context_ms + t.rerank_ms


def chunk_writer(rt: Runtime, p: services.Plan, created: int):
    """`chunk(delta, finish, index=0, **extra)` -> one `data: {chunk}` event (delta None: no choices)."""

    def chunk(delta: Delta | None, finish: str | None = None, index: int = 0, **extra) -> bytes:
        body = ChatCompletionChunk(
            id=p.response_id, object="chat.completion.chunk", created=created, model=rt.generator.model_id,
            choices=[ChunkChoice(index=index, delta=delta, finish_reason=finish)] if delta is not None else [], **extra,
        )
        return b"data: " + CHUNK_ENCODER.encode(body) + b"\n\n"

    return chunk


def sse_events(rt: Runtime, p: services.Plan, sampling: Sampling, created: int, include_usage: bool, n: int = 1,
               cancel: threading.Event | None = None):
    """`data: {chunk}` events, then `data: [DONE]`; the last chunk carries the `pluralign` object.
    `cancel` stops a generation of several candidates at its next token (`Cancelled` is raised)."""
    chunk = chunk_writer(rt, p, created)

    yield chunk(Delta(role="assistant", content=""))
    try:
        served = None
        with rt.metrics.generation_queue.track_inprogress():
            for piece in services.stream(rt, p, sampling, cancel):
                if isinstance(piece, services.Served):
                    served = piece
                else:
                    yield chunk(Delta(content=piece))
        best = served.candidates[served.order[0]]
        yield chunk(Delta(), finish=best.finish_reason, pluralign=served.info())
        if include_usage:
            usage = Usage(prompt_tokens=served.prompt_tokens, completion_tokens=best.tokens, total_tokens=served.prompt_tokens + best.tokens)
            yield chunk(None, usage=usage)
        rt.metrics.inc("pluralign_chat_completions_total", help="chat completions served", stream="true")
    except Cancelled:  # the client went away: nobody reads an error event
        raise
    except Exception as exc:  # the headers are sent: the client learns of it from an error event
        yield failure_event(rt, exc, p.response_id)
    yield DONE


def sse_events_n(rt: Runtime, p: services.Plan, sampling: Sampling, created: int, include_usage: bool, n: int,
                 cancel: threading.Event | None = None):
    """n > 1 streamed as OpenAI does: chunks of choices 0..n-1 interleaved, each choice opened with
    its role and closed with its finish_reason; the last finishing chunk carries `pluralign`.

    All candidates are generated and reranked first (reranking needs whole answers); the n best are
    then sent piece by piece, one piece of each choice per round. Meanwhile `scheduled_stream` sends keep-alives
    (and a failure then is an error event, `_produce`)."""
    chunk = chunk_writer(rt, p, created)
    with rt.metrics.generation_queue.track_inprogress():
        served = services.complete(rt, p, sampling, cancel)
    chosen = [served.candidates[c] for c in served.order[:n]]
    for index in range(len(chosen)):
        yield chunk(Delta(role="assistant", content=""), index=index)
    longest = max(len(c.text) for c in chosen)
    for start in range(0, longest, 16):
        for index, candidate in enumerate(chosen):
            if start < len(candidate.text):
                yield chunk(Delta(content=candidate.text[start : start + 16]), index=index)
    for index, candidate in enumerate(chosen):
        last = index == len(chosen) - 1
        yield chunk(Delta(), finish=candidate.finish_reason, index=index, **({"pluralign": served.info()} if last else {}))
    if include_usage:
        tokens = sum(c.tokens for c in chosen)
        yield chunk(None, usage=Usage(prompt_tokens=served.prompt_tokens, completion_tokens=tokens, total_tokens=served.prompt_tokens + tokens))
    rt.metrics.inc("pluralign_chat_completions_total", help="chat completions served", stream="true")
    yield DONE


@get("/v1/models", sync_to_thread=False, summary="List the models")
def list_models(request: Request) -> ModelList:
    rt: Runtime = request.app.state.runtime
    return ModelList(data=[Model(id=name) for name in model_names(rt)])


@get("/v1/models/{model_id:path}", sync_to_thread=False, summary="Retrieve one model")
def retrieve_model(request: Request, model_id: FromPath[Path]) -> Model:
    """OpenAI's `models.retrieve`; a model id may hold slashes (`HuggingFaceTB/SmolLM2-135M-Instruct`)."""
    rt: Runtime = request.app.state.runtime
    name = str(model_id).lstrip("/")
    if name not in model_names(rt):
        problem = f"no model {shown(name)}; available: {', '.join(model_names(rt))}"  # said once: the extra is the message
        raise NotFoundException(f"`model`: {problem}", extra=[{"key": "model", "message": problem, "code": "model_not_found"}])
    return Model(id=name)
