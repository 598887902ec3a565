"""Task left63: an upstream answer of the wrong type or beyond bounds is the server's failure (the chat's or the
embedding's 503 to send again), not a value taken or relayed as the server sent it. Stub servers on loopback, as
tests/service/test_breakD62_remote_answers.py."""

from __future__ import annotations

import pytest

from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
from pluralign.policy.generator import RemoteGeneratorError, Sampling
from tests.service.test_breakD62_remote_answers import CHOICE, MESSAGES, PIECE, completion
from tests.service.test_reviewsmall52 import answering  # noqa: F401
from tests.service.test_small52_remote_encoder import EmbeddingsStub


class Written(EmbeddingsStub):
    """Unit vectors as EmbeddingsStub's, their numbers written as `written` says once it is set (JSON strings, booleans)."""

    written = None

    def answer(self, texts):
        body, content_type = super().answer(texts)
        if self.written is not None:
            body = body.replace(b"[1.0, 0.0", b"[" + self.written + b", 0.0")
        return body, content_type


@pytest.mark.parametrize("written", [b'"0.5"', b"null"], ids=["a string of a number", "null"])
def test_an_embedding_holding_a_value_that_is_not_a_number_is_the_servers_failure(written):
    """breakD62 left it: `np.asarray(..., float32)` parsed "0.5" and read true as 1.0, so an answer of another type
    than OpenAI's was taken as vectors (null was a TypeError, the store's refusal of the texts). A JSON `true` is not
    here: the `openai` client builds it into the float 1.0 before the encoder sees the answer."""
    server = Written()
    try:
        encoder = RemoteEncoder(server.url, "hash", max_retries=0)  # its size learned from a well-formed answer
        server.written = written
        with pytest.raises(RemoteEncoderError, match="answered something that is not an embeddings list .*not numbers"):
            encoder.encode(["a text"])  # before: a vector returned, "0.5" as 0.5 (null: a TypeError, not the server's)
        server.written = b"1"  # a whole number is a number
        assert encoder.encode(["a text"]).shape == (1, server.dim)
    finally:
        server.shutdown()
        server.server_close()


def usage(prompt: int, completion_tokens: int) -> str:
    return f'{{"prompt_tokens": {prompt}, "completion_tokens": {completion_tokens}, "total_tokens": {prompt + completion_tokens}}}'


@pytest.mark.parametrize("counts, field", [((3, 10**30), "completion_tokens"), ((3, 9), "completion_tokens"),
                                           ((10**30, 2), "prompt_tokens")],
                         ids=["completion 10**30", "completion past n x max_tokens", "prompt 10**30"])
def test_a_usage_beyond_what_the_chat_can_count_is_the_generation_servers_failure(answering, counts, field):  # noqa: F811
    """breakD62 left it: a `usage` of 10**30 tokens was relayed to the client as the server sent it (past an int64, a
    JavaScript number's exact range). Refused as a count of another type is: more completion tokens than the `n`
    answers' `max_tokens` (a server generates no more), more prompt tokens than its messages' bytes and the template's
    markers (`_UsageBounds`). Plain and streamed."""
    sampling = Sampling(max_tokens=4)
    two = CHOICE + ", " + CHOICE.replace('"index": 0', '"index": 1')  # n=2: the bound is 2 x 4 completion tokens
    generator, server = answering(completion(two, usage(*counts)).encode())
    with pytest.raises(RemoteGeneratorError, match=rf"`usage\.{field}` is \d+, more than the chat can count"):
        generator.generate(MESSAGES, n=2, sampling=sampling)  # before: returned, the candidates' shares of 10**30
    server.body = (PIECE + f'data: {{"choices": [], "usage": {usage(*counts)}}}\n\ndata: [DONE]\n\n').encode()
    server.content_type = "text/event-stream"
    with pytest.raises(RemoteGeneratorError, match=rf"`usage\.{field}` is \d+, more than"):
        list(generator.stream(MESSAGES, sampling=sampling))
    server.body, server.content_type = completion(two, usage(4, 8)).encode(), "application/json"
    assert generator.generate(MESSAGES, n=2, sampling=sampling)[1] == 4  # 2 x 4 tokens: within


def test_an_honest_prompt_count_past_one_token_per_byte_is_taken(answering):  # noqa: F811
    """review left63: a tokenizer's normalizer can lengthen the text before it is split. NFKC (SentencePiece's
    nmt_nfkc) turns U+FDFA's 3 bytes into 33, and a byte-fallback tokenizer spends a token on each: 11 tokens per byte
    sent. The bound of one token per byte refused such a server's honest count."""
    import unicodedata
    text = "\ufdfa" * 200
    messages = [{"role": "user", "content": text}]
    honest = len(unicodedata.normalize("NFKC", text).encode("utf-8")) + 10  # one token per normalized byte, the markers
    generator, _server = answering(completion(CHOICE, usage(honest, 2)).encode())
    assert generator.generate(messages, n=1, sampling=Sampling(max_tokens=4))[1] == honest
