"""A new user's stumbles with the `openai` client (trial59), each driven through the real client against the real
app: the client's stored-chat-completions calls (`client.chat.completions.retrieve`, `.list`, ...) are told where a
user's stored chats are, a legacy function-calling history (an assistant `function_call`, then the `function`
message with its result) is answered, as its `function_call` alone already was, and the API's page (Swagger UI, from the
served OpenAPI document) says when each route answers its 409 and 422, not "Conflict" and "Error"."""

from __future__ import annotations

import http
import json

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

HI = [{"role": "user", "content": "What should I cook tonight?"}]
ONE = {"pluralign": {"candidates": 1}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
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


# each route's 409 and 422 by the codes its answers carry (`error.code`): what the API's page should say they mean
CONFLICTS = {
    ("/v1/chat/completions", "post"): {"409": ("idempotency_key_in_use", "user_deleted"), "422": ("idempotency_key_reused",)},
    ("/v1/feedback", "post"): {"422": ("idempotency_key_reused",)},
    ("/v1/users/{user_id}/import", "post"): {"409": ("pref_id_conflict",), "422": ("idempotency_key_reused",)},
    ("/v1/calibration-pool", "put"): {"409": ("per_replica", "tenant_removed")},
    ("/admin/jobs", "post"): {"409": ("tenant_being_removed", "no_adapter_base")},
    ("/admin/jobs/{job_id}/report", "get"): {"422": ("audit_failed",)},
    ("/admin/audits/fairness", "get"): {"409": ("tenant_being_removed",), "422": ("audit_failed",)},
    ("/admin/tenants/{tenant}/removal", "post"): {"409": ("tenant_keys_kept_elsewhere",)},
}


def test_the_api_page_says_when_each_route_answers_409_and_422(svc):
    """Swagger UI at /schema lists each operation's answers with the served document's descriptions: a route's 409
    and 422 read "Conflict" and "Error" (the HTTP phrase, and Litestar's default), so a reader of the chat route could
    not tell that its 409 is an `Idempotency-Key` still in use (retry) or that a 422 is the key reused for another body;
    feedback's 201 read "Document created, URL follows", and none follows."""
    document = httpx.get(svc.url + "/schema/openapi.json").json()
    bare = {status.phrase for status in http.HTTPStatus} | {"Error"}
    declared = {(path, method, status): answer["description"] for path, operations in document["paths"].items()
                for method, operation in operations.items() if isinstance(operation, dict)
                for status, answer in operation.get("responses", {}).items() if status in ("409", "422")}
    assert {(path, method, status) for path, method, status in declared} == {
        (path, method, status) for (path, method), codes in CONFLICTS.items() for status in codes}
    for (path, method, status), said in declared.items():
        assert said not in bare, (path, method, status, said)
        for code in CONFLICTS[path, method][status]:
            assert f"`{code}`" in said, (path, method, status, code, said)
    # a 201 of Litestar's words, "Document created, URL follows", where no URL (`Location`) follows
    for path in ("/v1/feedback", "/v1/users/{user_id}/import"):
        said = document["paths"][path]["post"]["responses"]["201"]["description"]
        assert "URL" not in said and "`stored`" in said, (path, said)


def test_the_dashboard_with_no_audit_says_how_to_run_one(svc):
    """An operator's first look at /admin/dashboard: "No audit has been run yet: queue an audit job." on a page with no
    form and no link, which named neither the route that runs one nor what it groups by. It names the audit route, its
    `group_by`, where groups come from and the doc; and that route, as named, answers (here: no comparisons stored)."""
    import html as html_module
    import re

    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {svc.keys['admin']}"}, timeout=120) as admin:
        page = admin.get("/admin/dashboard", params={"tenant": "acme"})
        assert page.status_code == 200, page.text
        text = html_module.unescape(re.sub(r"<[^>]+>", "", page.text))
        said = text[text.index("No audit has been run yet"):][:400]
        assert "GET /admin/audits/fairness?group_by=" in said and "attributes" in said and "docs/admin.md" in said, said
        ran = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "acme"})
        assert ran.status_code == 400 and ran.json()["error"]["param"] in ("tenant", "group_by"), ran.text
