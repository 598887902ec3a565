"""A remote generator's prompt count (`RemoteGenerator.prompt_tokens`, vLLM's `POST /tokenize`) when the server refuses
one conversation: vLLM answers 400 for messages its chat template raises on (`serving_tokenization.py` catches jinja2's
TemplateError: "Conversation roles must alternate user/assistant/..." of Llama 2's and Mistral's templates, a system
turn a template does not take). That is the conversation's fault, not the route's."""

from __future__ import annotations

import itertools

from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.stub_openai import JSONHandler, served

ODD = [{"role": "assistant", "content": "Hello"}, {"role": "assistant", "content": "again"}]  # the template refuses it
PLAIN = [{"role": "user", "content": "word " * 20}]


class Tokenizer(JSONHandler):
    """/tokenize as vLLM's on a model whose chat template wants the roles to alternate: 400 for ODD, else a count."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.read_json()
        roles = [m["role"] for m in body["messages"]]
        if self.path != "/tokenize":
            status, answer = 404, {"error": {"message": f"no route {self.path}", "type": "NotFoundError", "code": 404}}
        elif any(a == b for a, b in itertools.pairwise(roles)):
            status, answer = 400, {"error": {"message": "Conversation roles must alternate user/assistant/user/assistant/...",
                                             "type": "BadRequestError", "code": 400}}
        else:
            count = sum(len(m["content"]) for m in body["messages"]) // 4
            status, answer = 200, {"count": count, "max_model_len": 512, "tokens": list(range(count))}
        self.answer(status, answer)


def test_one_conversation_the_servers_template_refuses_leaves_the_next_ones_counted():
    """Before (review remote50) the 400 for one conversation was read as "no /tokenize route": every later prompt
    counted 0 for the life of the process, so `max_prompt_tokens` and `max_prefill_tokens` bounded no remote chat
    after one client sent such messages. Now that conversation counts 0 (its chat's own 400 says why), the next ones
    are counted."""
    with served(Tokenizer) as root:
        remote = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=10, max_retries=0))
        assert remote.prompt_tokens(PLAIN) == 25
        assert remote.prompt_tokens(ODD) == 0
        assert remote.prompt_tokens(PLAIN) == 25  # before: 0, and 0 ever after
