"""Session user42: a TRL dataset of another type than paired preferences (an unpaired preference file for
KTO, an SFT file of `messages`, `text` or prompt/completion rows), sent by mistake to `pluralign data import`
or the service's import route, was refused as "line 1, field `chosen`: missing required field", which reads as
a typo in one row. Now the error says what the row is and what pluralign takes, still naming the field."""

from __future__ import annotations

import pytest

from pluralign.data.io import PreferenceError, read_rows


@pytest.mark.parametrize(("row", "kind"), [
    ({"prompt": "Hi", "completion": "Hello", "label": True}, "unpaired preference"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, "language-modeling"),
    ({"prompt": "Hi", "completion": "Hello"}, "prompt-completion"),
    ({"text": "Hi there"}, "language-modeling"),
])
def test_a_row_of_another_trl_type_is_named_as_such(row, kind):
    with pytest.raises(PreferenceError) as error:
        read_rows([dict(row, user_id="u")])
    message = str(error.value)
    assert "field `chosen`: missing required field" in message and kind in message, message
    assert "`chosen` and a `rejected`" in message, message


def test_a_preference_row_missing_an_answer_is_refused_as_before():
    with pytest.raises(PreferenceError) as error:
        read_rows([{"user_id": "u", "prompt": "Hi", "chosen": "Hello"}])
    assert str(error.value).endswith("field `rejected`: missing required field"), str(error.value)
