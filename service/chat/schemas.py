"""Wire formats of chat completions, in OpenAI's shape, plus the `pluralign` object."""

from __future__ import annotations

from typing import Literal

import msgspec

from pluralign.data.record import Base


class TextPart(Base):
    type: Literal["text"]
    text: str


class ChatMessage(Base):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(Base):
    include_usage: bool = False


class PluralignOptions(Base):
    """Per-request personalization switches (send as `pluralign` in the body, e.g. openai's extra_body)."""

    rerank: bool | None = None  # default: the service setting
    candidates: int | None = None  # answers generated before reranking
    shots: int | None = None  # past preferences put in the context (0 = none)
    styles: bool | None = None  # generate candidates in balanced answer styles (default: the service setting)


class ChatRequest(Base):
    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    safety_identifier: str | None = None
    pluralign: PluralignOptions | None = None


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
    # best first; feedback's `chosen_index` always means the index in `choices`)
    generation_index: list[int] = []
    styles: list[str] | None = None  # the answer style of each returned choice (null when not styled)


class ChatCompletion(Base):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    pluralign: PluralignInfo
    object: str = "chat.completion"


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
