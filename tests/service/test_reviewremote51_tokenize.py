"""Review of session remote51's bounded prompt count (vLLM's `POST /tokenize`): a server that says it has no such
feature counts none, as one without the route does; it does not make every chat a 503 (a real HTTP server on loopback,
the real `RemoteGenerator`)."""

from __future__ import annotations

from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.stub_openai import JSONHandler, served

MESSAGES = [{"role": "user", "content": "hello"}]


class NotImplementedTokenizer(JSONHandler):
    """Answers `/tokenize` as vLLM's API server does when its tokenizer raises NotImplementedError (its
    `serve/tokenize/api_router.py`: `HTTPException(status_code=HTTPStatus.NOT_IMPLEMENTED.value, ...)`), counting the
    requests it got."""

    asked = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.read_json()
        type(self).asked += 1
        self.answer(501, {"detail": "tokenization is not supported for this model"})


def test_a_tokenizer_answering_501_not_implemented_counts_none_once_not_prompt_not_counted():
    """HTTP's 501 says the server does not support the request at all (vLLM's /tokenize answers it when its tokenizer
    has no such feature), a lasting answer like the 404 of a server without the route. Before this review it was taken
    as a 5xx, "not now": PromptNotCounted at every chat, so every chat of the service was a 503 "send it again" for as
    long as the server ran. Now it counts none, and the route is not asked again (as a 404's)."""
    with served(NotImplementedTokenizer) as root:
        remote = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=3, max_retries=0))
        assert remote.prompt_tokens(MESSAGES) == 0  # before: PromptNotCounted("answered 501")
        assert remote.prompt_tokens(MESSAGES) == 0
        assert NotImplementedTokenizer.asked == 1  # asked once, as a server without the route is
