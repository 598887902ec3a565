"""Review of hints59 (`pluralign.data.decode_words`): msgspec's messages said in our words must read true.

- A number with a fraction or exponent (`1.5`, `1.0`, `1e3`: msgspec's `float`) where an integer goes was told
  "must be an integer, not a number", as if an integer were no number.
- msgspec's `Expected `int` that's a multiple of 2` was not read (its words were taken as "that is").
- A value outside a field's choices was repeated whole (5,000 characters, all of them in the error), and a job's
  parameter outside its choices was told "'robot' is not one of the values this field takes", none named."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from pluralign.data.decode_words import in_our_words, said, validation_problem
from training.jobs.params import JobParamsError, decode_params


@pytest.mark.parametrize("value", ["1.5", "1.0", "1e3"])
def test_a_float_where_an_integer_goes_is_not_said_to_be_no_number(value):
    class Body(msgspec.Struct):
        max_tokens: int | None = None

    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(f'{{"max_tokens": {value}}}', type=Body)
    assert said(str(caught.value)) == "`max_tokens`: must be an integer or null, not a number with a fraction or exponent"


def test_a_multiple_is_said_in_our_words():
    class Body(msgspec.Struct):
        n: Annotated[int, msgspec.Meta(multiple_of=8)] = 8

    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode('{"n": 3}', type=Body)
    assert validation_problem(str(caught.value)) == ("n", "must be a multiple of 8")


def test_a_long_value_outside_the_choices_is_shown_cut():
    """Where the choices are not known (an import line's, a body Litestar decodes), the value alone is repeated, cut."""
    problem = in_our_words("Invalid enum value '" + "z" * 5000 + "'")
    assert problem == "'" + "z" * 63 + "... is not one of the values this field takes"


@pytest.mark.parametrize("kind, params, field, said", [
    ("audit", {"group_by": "lang", "personalized": "robot"}, "params.personalized", "must be one of `logistic`, `pal`; got 'robot'"),
    ("pal", {"protocol": "persona", "variant": "A"}, "params.variant", "must be one of `a`, `b`; got 'A' (did you mean `a`?)"),
    ("em", {"protocol": "persna"}, "params.protocol", "must be one of `persona`, `ukp`, `file`; got 'persna' (did you mean `persona`?)"),
    ("audit", {"group_by": "lang", "personalized": "z" * 5000}, "params.personalized",
     "must be one of `logistic`, `pal`; got '" + "z" * 63 + "...'"),
])
def test_a_job_parameter_outside_its_choices_names_them(kind, params, field, said):
    """As a body's field does (`service.strict.one_of`); before, "'robot' is not one of the values this field takes",
    none named."""
    with pytest.raises(JobParamsError) as caught:
        decode_params(kind, params, from_client=True)
    assert (caught.value.field, caught.value.problem) == (field, said)
