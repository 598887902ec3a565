"""What the review of trial59 found, each driven through the real `openai` client against the real app:

- a base_url set to the chat route's own URL (`.../v1/chat/completions`, as a curl example gives it) made the client
  post to `/v1/chat/completions/chat/completions`, which trial59's stored-chats hint read as a stored chat's id: the
  404 said OpenAI's stored chat completions are not served, not that the base_url was wrong;
- a `function` message (read since trial59) carrying what only an assistant's message carries (`tool_calls`,
  `function_call`, `refusal`, `annotations`) or a `tool_call_id` was taken and those fields dropped unread, where
  every other non-assistant message is a 400 naming the field (a `tool` message too);
- tenant T's dashboard with no audit (`/admin/dashboard?tenant=T`) named the audit route without `tenant`: that audit is
  of every tenant, which T's page does not show (its audits are those whose `tenant` is T), so the page stayed empty."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from tests.service.tiny import start_service

HI = [{"role": "user", "content": "Hi"}]
ONE = {"pluralign": {"candidates": 1}}
CALLED = {"role": "assistant", "content": None, "function_call": {"name": "weather", "arguments": "{}"}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    from service.admin.controllers import ADMIN_HANDLERS

    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server:
        yield service


def _client(svc, base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=svc.keys["acme"], max_retries=0, timeout=120)


def test_a_base_url_ending_in_the_chat_route_is_told_the_base_url_not_stored_chats(svc):
    import openai

    client = _client(svc, svc.url + "/v1/chat/completions")
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="pluralign", user="ann", messages=HI, max_tokens=4, extra_body=ONE)
    message = missing.value.message
    assert "stored chat completions" not in message, message
    assert "did you mean `POST /v1/chat/completions`?" in message and "base_url" in message, message
    # a stored chat's id is still told where stored chats are
    with pytest.raises(openai.NotFoundError) as stored:
        _client(svc, svc.url + "/v1").chat.completions.retrieve("chatcmpl-1")
    assert "stored chat completions" in stored.value.message, stored.value.message


ASSISTANTS = {
    "tool_calls": {"tool_calls": [CALL]},
    "function_call": {"function_call": {"name": "weather", "arguments": "{}"}},
    "refusal": {"refusal": "no"},
    "annotations": {"annotations": [{"type": "url_citation", "url_citation": {
        "start_index": 0, "end_index": 1, "title": "t", "url": "https://example.com"}}]},
}
RESULTS = {"function": {"role": "function", "name": "weather", "content": "Sunny"},
           "tool": {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}}


@pytest.mark.parametrize("role,field,extra", [
    *((role, field, extra) for role in RESULTS for field, extra in ASSISTANTS.items()),
    ("function", "tool_call_id", {"tool_call_id": "call_1"}),  # a `tool` message's own field
])
def test_a_call_results_message_with_an_assistants_field_is_refused_naming_it(svc, role, field, extra):
    """Before: taken, the field dropped unread (DID NOT RAISE), where a `user` message carrying it is a 400."""
    import openai

    history = [HI[0], CALLED, {**RESULTS[role], **extra}]
    with pytest.raises(openai.BadRequestError) as refused:
        _client(svc, svc.url + "/v1").chat.completions.create(model="pluralign", messages=history, max_tokens=4, extra_body=ONE)
    param, message = refused.value.param, refused.value.message
    # the role's refusal of what belongs to assistants names `messages[2].role`, as a `user` message's does
    assert param == (f"messages[2].{field}" if field in ("annotations", "tool_call_id") else "messages[2].role"), (param, message)
    assert field in message or "citations" in message, message


@pytest.mark.parametrize("tenant", ["acme", None])
def test_a_tenants_dashboard_with_no_audit_names_the_audit_its_page_shows(svc, tenant):
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {svc.keys['admin']}"}, timeout=120) as admin:
        page = admin.get("/admin/dashboard", params={} if tenant is None else {"tenant": tenant})
    assert page.status_code == 200, page.text
    text = html.unescape(re.sub(r"<[^>]+>", "", page.text))
    said = text[text.index("No audit has been run yet"):][:300]
    route = re.search(r"GET (/admin/audits/fairness\S*)", said)
    assert route is not None, said
    asked = dict(part.split("=", 1) for part in route.group(1).split("?", 1)[1].split("&"))
    assert asked.get("tenant") == tenant and asked["group_by"] == "ATTRIBUTE", said
