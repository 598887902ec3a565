"""A new user's stumbles with the `openai` client (trial59), each driven through the real client against the real
app: the client's stored-chat-completions calls (`client.chat.completions.retrieve`, `.list`, ...) are told where a
user's stored chats are, and a legacy function-calling history (an assistant `function_call`, then the `function`
message with its result) is answered, as its `function_call` alone already was."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import start_service

HI = [{"role": "user", "content": "What should I cook tonight?"}]
ONE = {"pluralign": {"candidates": 1}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


@pytest.fixture()
def client(svc):
    from openai import OpenAI

    return OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=120)


def test_the_openai_clients_stored_chat_calls_are_told_where_a_users_stored_chats_are(client, svc):
    import openai

    reply = client.chat.completions.create(model="pluralign", user="ann", messages=HI, max_tokens=4, store=True, extra_body=ONE)
    calls = {
        "retrieve": lambda: client.chat.completions.retrieve(reply.id),
        "update": lambda: client.chat.completions.update(reply.id, metadata={"topic": "food"}),
        "delete": lambda: client.chat.completions.delete(reply.id),
        "messages.list": lambda: client.chat.completions.messages.list(reply.id),
        "list": lambda: client.chat.completions.list(),
    }
    for name, call in calls.items():
        with pytest.raises(openai.APIStatusError) as refused:
            call()
        status = refused.value.status_code
        assert status == (405 if name == "list" else 404), name
        message = refused.value.message
        assert "stored chat completions" in message and "GET /v1/users/{id}/export" in message and "`interaction`" in message, (name, message)
    assert refused.value.response.headers["allow"]  # the 405 still says what the path takes
    # what the message points at holds the chat, under the reply's id
    with svc.client() as http:
        lines = [json.loads(line) for line in http.get("/v1/users/ann/export").text.splitlines()]
    assert [line["response_id"] for line in lines if line["type"] == "interaction"] == [reply.id]


def test_a_legacy_function_calling_history_is_answered_its_result_read_as_the_tool_results_are(client, svc):
    """The openai client types a `function` message (`ChatCompletionFunctionMessageParam`: the result of an assistant's
    `function_call`, which the chat takes in history); its text reaches the model as a tool's result does, a user turn
    marked with the function's name. Before, the `function_call` was taken and its result refused: `messages[2].role`:
    must be one of `system`, `developer`, `user`, `assistant`, `tool`; got 'function'."""
    import openai

    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "function_call": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"role": "function", "name": "weather", "content": "Sunny, 21 C"},
    ]
    reply = client.chat.completions.create(model="pluralign", user="fay", messages=history, max_tokens=4, extra_body=ONE)
    assert reply.choices[0].message.role == "assistant"
    with svc.client() as http:
        lines = [json.loads(line) for line in http.get("/v1/users/fay/export").text.splitlines()]
    [chat] = [line for line in lines if line["type"] == "interaction"]
    assert chat["response_id"] == reply.id
    assert chat["messages"][1:] == [{"role": "assistant", "content": '[called weather({"city": "Paris"})]'},
                                    {"role": "user", "content": "[result of function weather]\nSunny, 21 C"}], chat["messages"]
    # OpenAI's function message names its function: one without is refused, naming the field
    with pytest.raises(openai.BadRequestError) as nameless:
        client.chat.completions.create(model="pluralign", messages=[*history[:2], {"role": "function", "content": "Sunny"}],
                                       max_tokens=4, extra_body=ONE)
    assert nameless.value.param == "messages[2].name" and "function" in nameless.value.message, nameless.value.message
