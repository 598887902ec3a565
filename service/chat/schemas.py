"""Wire formats of chat completions, in OpenAI's shape, plus the `pluralign` object."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from pluralign.data.record import Base
from pluralign.data.text import shown
from pluralign.files import DECODE_ERRORS
from service.nulls import NullMeansDefault


class TextPart(Base, tag_field="type", tag="text"):
    text: str
    prompt_cache_breakpoint: dict | None = None  # accepted and ignored: there is no prompt cache


class RefusalPart(Base, tag_field="type", tag="refusal"):
    """An assistant message's refusal part in history (OpenAI sends these back as they came)."""

    refusal: str


# the content parts each role's message takes here, by OpenAI's chat API: system, developer, tool and function messages text;
# assistant messages text or refusal (history sent back); user messages text, and in OpenAI's also images, audio and
# files (`USER_PARTS_UNREAD`), which this text model does not read
ROLE_PARTS = {"system": ("text",), "developer": ("text",), "user": ("text",), "assistant": ("text", "refusal"), "tool": ("text",),
              "function": ("text",)}
USER_PARTS_UNREAD = {"image_url": "images", "input_audio": "audio", "file": "files"}
_PART_TYPE = re.compile(r"messages\[(\d+)\]\.content\[(\d+)\]\.type")


class _Role(msgspec.Struct):
    role: object = None
    content: object = None  # as sent: a string, a list of parts (dicts), ...


class _Roles(msgspec.Struct):
    """A chat body's messages' roles and contents alone (`ChatRequest.choice_problem`): the rest skipped, nothing
    checked."""

    messages: list[_Role] = []


def part_problem(role: str, got: str) -> tuple[str, str] | None:
    """(problem, code) of a content part of type `got` in a `role` message that takes no such part (`ROLE_PARTS`); None
    for a role that is none of OpenAI's (its own 400 comes first). A user's image, audio or file part is said
    unsupported by this text model (`unsupported_value`, as OpenAI-compatible text-only servers refuse it); another
    part lists what the role takes (`invalid_value`)."""
    if role not in ROLE_PARTS:
        return None
    takes = ", ".join(f"`{p}`" for p in ROLE_PARTS[role])
    if role == "user" and got in USER_PARTS_UNREAD:
        return (f"`{got}` parts ({USER_PARTS_UNREAD[got]}) are not supported: this is a text model; "
                f"a `user` message's parts are {takes}", "unsupported_value")
    article = "an" if role == "assistant" else "a"
    return f"must be one of {takes}; got {shown(got)} (the parts of {article} `{role}` message)", "invalid_value"


class FunctionCall(Base):
    name: str
    arguments: str


class ToolCall(Base):
    """A tool call in an assistant message of the history; kept in the context as text."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(Base):
    """One message of the history. `content` may be null for an assistant turn (one that only called
    tools or refused); `tool` turns carry a `tool_call_id`; `function` turns (the deprecated form of a tool's
    result, answering an assistant's `function_call`, as the openai client still types them) a `name`."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart | RefusalPart] | None = None
    name: str | None = None
    refusal: str | None = None  # assistant history only
    tool_calls: list[ToolCall] | None = None  # assistant history only
    tool_call_id: str | None = None  # tool turns only
    audio: None = None  # OpenAI sends `audio: null` back in assistant history
    # assistant history only: OpenAI's URL citations of the answer, which the openai client's
    # `message.model_dump()` carries (null or a list); the answer's text is what the model reads
    annotations: list[dict] | None = None
    function_call: FunctionCall | None = None  # deprecated form of tool_calls

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text if isinstance(p, TextPart) else p.refusal for p in self.content)


class StreamOptions(NullMeansDefault):
    include_usage: bool | None = False  # null: not given (`NullMeansDefault`), false
    include_obfuscation: bool | None = None  # accepted and ignored: no obfuscation padding is added


class ResponseFormat(Base):
    type: str  # only "text" is honoured; others are refused with a 400 naming `response_format.type`
    json_schema: dict | None = None


class PluralignOptions(Base):
    """Per-request personalization switches (send as `pluralign` in the body, e.g. openai's extra_body)."""

    rerank: bool | None = None  # default: the service setting
    candidates: int | None = None  # answers generated before reranking
    shots: int | None = None  # past preferences put in the context (0 = none)
    styles: bool | None = None  # generate candidates in balanced answer styles (default: the service setting)


# OpenAI's limits on `metadata`: at most 16 pairs, keys of 1-64 characters, values up to 512
MetadataKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MetadataValue = Annotated[str, msgspec.Meta(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], msgspec.Meta(max_length=16)]


# Top-level chat parameters of other OpenAI-compatible servers that this API does not take, with what each is there. Their
# closest field here means something else (`top_k` -> `top_p`, `min_tokens` -> `max_tokens`, `repetition_penalty` ->
# `presence_penalty`, `system` -> `stream`): a client ported from another server that followed a "did you mean" would
# change its request's meaning, so these are refused as another API's (`ChatRequest.unknown_problem`), without a hint.
# Where each name comes from:
# - vLLM's `SamplingParams` (its OpenAI server's extra sampling parameters): top_k, min_p, min_tokens, repetition_penalty,
#   length_penalty (its beam search's);
# - Hugging Face TGI's `parameters`: top_k, repetition_penalty;
# - llama.cpp's server (`/completion` and its OpenAI route): top_k, min_p, repeat_penalty;
# - Anthropic's Messages API: top_k, system (its top-level system prompt), stop_sequences.
OTHER_SERVERS: dict[str, tuple[str, str]] = {  # name: (what it is there, what this API takes instead, if anything)
    "top_k": ("a sampling parameter of other servers (vLLM, TGI, llama.cpp, Anthropic's Messages API)", ""),
    "min_p": ("a sampling parameter of other servers (vLLM, llama.cpp)", ""),
    "min_tokens": ("a length parameter of other servers (vLLM)", ""),
    "repetition_penalty": ("a sampling parameter of other servers (vLLM, TGI)", ""),
    "repeat_penalty": ("a sampling parameter of other servers (llama.cpp)", ""),
    "length_penalty": ("a beam-search parameter of other servers (vLLM)", ""),
    "system": ("the system prompt of Anthropic's Messages API", " (send it as a `system` message in `messages`)"),
    "stop_sequences": ("the list of stop strings of Anthropic's Messages API", " (send them as `stop`)"),
    # OpenAI's other text APIs, whose request a client sends here by mistake (their routes are a 404 that says so)
    "prompt": ("the prompt of OpenAI's legacy Completions API", " (send it as a `user` message in `messages`: "
                                                            '[{"role": "user", "content": "..."}])'),
    "input": ("the input of OpenAI's Responses API", " (send it as `messages`: [{\"role\": \"user\", \"content\": \"...\"}])"),
    "instructions": ("the system prompt of OpenAI's Responses API", " (send it as a `system` message in `messages`)"),
    "max_output_tokens": ("the length bound of OpenAI's Responses API", " (send it as `max_tokens`)"),
}


class ChatRequest(Base):
    """OpenAI's chat request. docs/api.md has a table of every field: supported, ignored or refused.

    Fields after `pluralign` are accepted so that clients' defaults work; each is either honoured
    only at its neutral value (other values are refused with a 400 naming it) or safely ignored."""

    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = 1
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    safety_identifier: str | None = None
    pluralign: PluralignOptions | None = None
    store: bool | None = None  # false: the answer is not kept (feedback cannot refer to it)
    frequency_penalty: float | None = None  # [-2, 2], OpenAI's meaning
    presence_penalty: float | None = None  # [-2, 2], OpenAI's meaning
    # accepted, neutral values only
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    functions: list[dict] | None = None
    function_call: str | dict | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    prediction: dict | None = None
    web_search_options: dict | None = None
    moderation: dict | None = None
    # accepted and ignored
    metadata: Metadata | None = None  # checked against OpenAI's limits, then not used
    parallel_tool_calls: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict | None = None

    @staticmethod
    def unknown_problem(field: str, body: bytes = b"") -> str | None:
        """The problem of an unknown field (its dotted path, from the strict decode, `service.strict`; `body` unread) that is a chat
        parameter of another server (`OTHER_SERVERS`: `top_k`): `is a sampling parameter of other servers (vLLM, TGI,
        ...) that this API does not take; docs/api.md lists the fields`, with no closest field offered (`min_tokens`'s
        would be `max_tokens`). None for any other field, a typo of this API's (`max_token`) or one inside an object
        (`pluralign.top_k`)."""
        if field not in OTHER_SERVERS:
            return None
        what, instead = OTHER_SERVERS[field]
        return f"is {what} that this API does not take{instead}; docs/api.md lists the fields"

    @staticmethod
    def choice_problem(field: str, body: bytes, got: str) -> tuple[str, str] | None:
        """(problem, code) of the value (`got`: msgspec's repr of it) that the strict decode (`service.strict`) found
        at `field` outside its choices, where a chat says more than the field's choices: a content part's `type`
        (`messages[i].content[j].type`), told by its message's role (`part_problem`), both read from `body`; None
        elsewhere, or when they cannot be read. Not "must be one of `text`,
        `refusal`" for every role (a user's image part too: neither a part a user message takes nor a word that images
        are not read); the part's type is not read back from `got` (`ast.literal_eval`), which a type holding a
        quote (`it's`) is not."""
        found = _PART_TYPE.fullmatch(field)
        if found is None:
            return None
        try:
            messages = msgspec.json.decode(body, type=_Roles).messages
        except (*DECODE_ERRORS, RecursionError):
            return None
        i, j = int(found.group(1)), int(found.group(2))
        message = messages[i] if i < len(messages) else _Role()
        parts = message.content if isinstance(message.content, list) else []
        value = parts[j].get("type") if j < len(parts) and isinstance(parts[j], dict) else None
        return part_problem(message.role, value) if isinstance(message.role, str) and isinstance(value, str) else None


class AssistantMessage(Base):
    role: str = "assistant"
    content: str = ""


class Choice(Base):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class Usage(Base):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(Base):
    """Milliseconds spent in each step; personalization = retrieval + context + rerank."""

    retrieval_ms: float = 0.0
    context_ms: float = 0.0
    generation_ms: float = 0.0
    rerank_ms: float = 0.0
    store_ms: float = 0.0
    compare_ms: float = 0.0  # choosing `pluralign.compare`
    queue_ms: float = 0.0  # waiting for a generation slot (the fair scheduler)
    queued_behind: int = 0  # generations that started while this one waited (fairness: at most one per other busy tenant)


class PluralignInfo(Base):
    response_id: str
    user: str | None
    history: list[str]  # pref_ids put in the context
    adapter: str | None
    candidates: int
    reward: float | None  # the served candidate's reward for this user (None when not reranked)
    prior: bool  # True when the user's reward is still the population prior
    timings: Timings
    # for each returned choice, its position among the generated candidates (choices are ranked
    # best first; feedback's `chosen_index`, and a rating's or edit's `index`, always mean the index in `choices`)
    generation_index: list[int] = []
    styles: list[str] | None = None  # the answer style of each returned choice (null when not styled)
    # two indices into `choices` worth showing side by side (the pair whose outcome teaches the user
    # model most, `pluralign.user.active`); null when fewer than 2 choices are returned, for anonymous
    # requests, or once the user is well known (the best pair carries < `compare_min_bits` bits).
    # A client that shows them sends `choice` feedback with `shown` set to these two indices.
    compare: list[int] | None = None
    compare_bits: float | None = None  # the expected information of that comparison, in bits


class ChatCompletion(Base):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    pluralign: PluralignInfo
    object: str = "chat.completion"


class Model(Base, kw_only=True):
    """One model the service serves, as OpenAI's `models.retrieve` answers it."""

    id: str  # what a chat's `model` may name: the generator's id, `pluralign` or `default`
    object: str = "model"
    created: int = 0  # Unix seconds; 0: not known
    owned_by: str = "pluralign"


class ModelList(Base, kw_only=True):
    """OpenAI's `models.list` answer."""

    object: str = "list"
    data: list[Model]


class Delta(Base, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(Base):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Base, omit_defaults=True):
    id: str
    object: str  # "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    pluralign: PluralignInfo | None = None


CHUNK_ENCODER = msgspec.json.Encoder()
