"""OpenAI chat fields that clients send by default: accepted at their neutral value, or ignored.

docs/api.md lists every OpenAI chat field as supported, ignored or refused; this module enforces
the "neutral values only" rows (a 400 naming the field otherwise) and turns the history (tool turns,
assistant turns with null content) into plain role/content messages for the chat template.
"""

from __future__ import annotations

from service.chat.schemas import ROLE_PARTS, ChatMessage, ChatRequest, RefusalPart
from service.errors import bad_request, shown

UNSUPPORTED = "unsupported_value"
COMBINATION = "invalid_parameter_combination"  # OpenAI's code for two fields that do not go together


def check_combinations(data: ChatRequest) -> None:
    """Raise a 400 (ValidationException, code `invalid_parameter_combination`) naming a field that
    only means something beside another one the request does not set, or that contradicts another:
    serving the request would silently drop what that field asked for. OpenAI refuses the first two
    the same way (`param` `stream_options`, `max_tokens`); `safety_identifier` and `user` naming two users (else
    `safety_identifier` would silently win) are refused likewise."""
    if data.stream_options is not None and not data.stream:
        raise bad_request("stream_options", "is only allowed when `stream` is true (the usage of a JSON reply is in its `usage`)", COMBINATION)
    if data.max_tokens is not None and data.max_completion_tokens is not None and data.max_tokens != data.max_completion_tokens:
        raise bad_request("max_tokens", f"{data.max_tokens} and `max_completion_tokens` {data.max_completion_tokens} disagree: "
                                        "send one of them (`max_tokens` is OpenAI's older name)", COMBINATION)
    # both sent and not empty (an empty one names no user: `chat_options` refuses it as the user id it is not)
    if data.safety_identifier and data.user and data.safety_identifier != data.user:
        # OpenAI's `safety_identifier` replaces `user`; both name the end user here, whose history and reward apply
        raise bad_request("safety_identifier", f"{shown(data.safety_identifier)} and `user` {shown(data.user)} name two users: "
                                               "send one of them, or the same id in both (`user` is OpenAI's older name)", COMBINATION)
    if data.response_format is not None and data.response_format.json_schema is not None and data.response_format.type != "json_schema":
        raise bad_request("response_format.json_schema", f"is only allowed with `response_format.type` `json_schema`, "
                                                         f"got {shown(data.response_format.type)}", COMBINATION)


def check_neutral_fields(data: ChatRequest) -> None:
    """Raise a 400 (ValidationException) naming the first field whose value pluralign cannot honour."""
    if data.logprobs:
        raise bad_request("logprobs", "log-probabilities are not returned; send false or omit it", UNSUPPORTED)
    if data.top_logprobs:
        raise bad_request("top_logprobs", "log-probabilities are not returned; send 0 or omit it", UNSUPPORTED)
    if data.logit_bias:
        raise bad_request("logit_bias", "logit bias is not supported; send {} or omit it", UNSUPPORTED)
    if data.response_format is not None and data.response_format.type != "text":
        raise bad_request(
            "response_format.type", f"only `text` is supported (no constrained decoding), got {shown(data.response_format.type)}", UNSUPPORTED
        )
    _check_no_tools(data)
    if data.modalities is not None and list(data.modalities) != ["text"]:
        raise bad_request("modalities", f"only [\"text\"] is supported, got {shown(data.modalities)}", UNSUPPORTED)
    for field in ("audio", "prediction", "web_search_options", "moderation"):
        if getattr(data, field) is not None:  # `{}` asks too: OpenAI searches the web with its defaults
            raise bad_request(field, "not supported; send null or omit it", UNSUPPORTED)
    if data.metadata is not None and len(data.metadata) > 16:
        raise bad_request("metadata", f"at most 16 keys, got {len(data.metadata)}")


def _check_no_tools(data: ChatRequest) -> None:
    """Raise a 400 naming the first of the tool and function fields (OpenAI's and its older names)
    that asks for a call: no tools are available."""
    if data.tools:
        raise bad_request("tools", "tool calling is not supported; send [] or omit it", UNSUPPORTED)
    if data.tool_choice not in (None, "none", "auto"):
        raise bad_request("tool_choice", "no tools are available: only `none` or `auto`", UNSUPPORTED)
    if data.functions:
        raise bad_request("functions", "function calling is not supported; send [] or omit it", UNSUPPORTED)
    if data.function_call not in (None, "none", "auto"):
        raise bad_request("function_call", "no functions are available: only `none` or `auto`", UNSUPPORTED)


def check_parts(messages: list[ChatMessage]) -> None:
    """A 400 naming `messages[i].content[j].type` for a `refusal` part outside an assistant message (not
    read as the turn's own text), with the parts that message's role takes (`ROLE_PARTS`). The strict decode
    refuses the kinds of part no role takes here, by role as well (`ChatRequest.choice_problem`)."""
    for i, m in enumerate(messages):
        if m.role != "assistant" and isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if isinstance(part, RefusalPart):
                    takes = ", ".join(f"`{p}`" for p in ROLE_PARTS[m.role])
                    raise bad_request(f"messages[{i}].content[{j}].type", f"a `refusal` part belongs to assistant messages "
                                                                          f"(history sent back); a `{m.role}` message's parts are {takes}")


def _call_result(i: int, m: ChatMessage) -> str | None:
    """The text a tool's result (`tool`, or `function`: OpenAI's deprecated form, answering a `function_call`) reaches
    the model as, a user turn marked with the call it answers; None for another role. A 400 naming the field that
    says which call: a `tool` message's `tool_call_id`, a `function` message's `name`."""
    if m.role == "tool":
        if not m.tool_call_id:
            raise bad_request(f"messages[{i}].tool_call_id", "a `tool` message needs the id of the call it answers")
        return f"[result of tool call {m.tool_call_id}]\n{m.text()}"
    if m.role == "function":
        if not m.name:
            raise bad_request(f"messages[{i}].name", "a `function` message needs the `name` of the function whose result it holds")
        return f"[result of function {m.name}]\n{m.text()}"
    return None


def template_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Role/content pairs for the chat template. `developer` is a system turn; a tool's result is
    a user turn marked as such (small chat templates know no `tool` role); an assistant's tool calls
    are written out as text so the model sees what was asked."""
    check_parts(messages)
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        # checked before a call's result is read: a `tool` or `function` message carrying these is refused too
        if m.role != "assistant" and (m.tool_calls or m.refusal is not None or m.function_call):
            raise bad_request(f"messages[{i}].role", "`tool_calls`, `function_call` and `refusal` belong to assistant messages")
        if m.role != "assistant" and m.annotations:
            raise bad_request(f"messages[{i}].annotations", "URL citations belong to assistant messages (an answer's sources)")
        if m.role != "tool" and m.tool_call_id is not None:
            raise bad_request(f"messages[{i}].tool_call_id", "only `tool` messages carry a tool_call_id")
        if (result := _call_result(i, m)) is not None:
            out.append({"role": "user", "content": result})
            continue
        if m.content is None and m.role != "assistant":
            raise bad_request(f"messages[{i}].content", f"a `{m.role}` message needs content")
        text = m.text() or (m.refusal or "")
        calls = list(m.tool_calls or ()) + ([m.function_call] if m.function_call else [])
        for call in calls:
            fn = getattr(call, "function", call)
            text += ("\n" if text else "") + f"[called {fn.name}({fn.arguments})]"
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out
