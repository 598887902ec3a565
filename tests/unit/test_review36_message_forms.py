"""Review session 36: messages in forms real chat data has and a preference row does not take, refused
naming the key at fault and what to do, through the real `pluralign` command. Before, an OpenAI
tool call (`"content": null, "tool_calls": [...]`) and content as a list of parts (`[{"type": "text",
...}]`, TRL's vision form and OpenAI's) were both `field chosen[0]: expected a message object with a
string content`, naming neither `tool_calls` nor the parts."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_newuser31_cli import one_error_line, pluralign

ASKED = [{"role": "user", "content": "Weather in Paris?"}]
TOOL_CALL = {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]}
PARTS = {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]}


@pytest.mark.parametrize(("chosen", "field", "said"), [
    (TOOL_CALL, "chosen[1].tool_calls", "unknown field (a message takes `role` and `content`"),
    (PARTS, "chosen[1].content", "a list of content parts (text, images) is not taken: give the message's text as one string"),
])
def test_a_message_form_a_row_does_not_take_is_named_by_its_key(tmp_path, chosen, field, said):
    row = {"user_id": "ann", "chosen": [*ASKED, chosen], "rejected": [*ASKED, {"role": "assistant", "content": "Rainy."}]}
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    line = one_error_line(pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path)))
    assert f"line 1, field `{field}`: {said}" in line, line
