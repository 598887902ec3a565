"""Feedback kinds as a tagged union on `type`."""

from __future__ import annotations

from typing import Annotated

import msgspec

from pluralign.data.record import Base
from service.ids import RESPONSE_ID_PATTERN
from service.nulls import NullMeansDefault

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
ResponseId = Annotated[str, msgspec.Meta(pattern=RESPONSE_ID_PATTERN)]
# labels are stored with every row the feedback makes: small and bounded, by settings (max_attributes,
# max_attribute_name_chars, max_attribute_value_chars, max_source_chars; see docs/api.md), checked
# by `service.feedback.services.check_labels` (400 naming the field)
AttributeName = Annotated[str, msgspec.Meta(min_length=1, description="at most `max_attribute_name_chars` characters (a setting; 64 by default), no control character")]
AttributeValue = Annotated[str, msgspec.Meta(description="at most `max_attribute_value_chars` characters (a setting; 256 by default)")]
Attributes = Annotated[dict[AttributeName, AttributeValue], msgspec.Meta(description="free labels kept with each stored row (e.g. a group for audits); at most `max_attributes` of them (a setting; 32 by default)")]
Source = Annotated[str, msgspec.Meta(min_length=1, description="where the feedback came from; at most `max_source_chars` characters (a setting; 128 by default)")]


class Feedback(NullMeansDefault, tag_field="type", kw_only=True):
    # an optional field sent as null is not given (`NullMeansDefault`): `attributes` {} and `tie` False
    attributes: Attributes | None = {}  # free labels kept with each stored row (e.g. a group for audits)
    source: Source | None = None


class ChoiceFeedback(Feedback, tag="choice", kw_only=True):
    """The user picked `choices[chosen_index]` of a served response (requested with `n` > 1); it beats
    every other returned choice, or with `shown` every other choice the user was shown (e.g. the
    response's `pluralign.compare` pair). Indices are those of `choices` as returned, best-ranked first.
    With `tie` the user had no preference: `choices[chosen_index]` ties with each other shown choice."""

    response_id: ResponseId
    chosen_index: Annotated[int, msgspec.Meta(ge=0)]
    shown: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(min_length=2, max_length=64)] | None = None
    tie: bool | None = False  # "no preference" between the shown choices (e.g. `pluralign.compare`'s pair)


class ComparisonFeedback(Feedback, tag="comparison", kw_only=True):
    """An explicit comparison for `user`: `chosen` beats `rejected` as an answer to `prompt`."""

    user: str
    prompt: Text
    chosen: Text
    rejected: Text
    tie: bool | None = False
    margin: Annotated[float, msgspec.Meta(ge=0, le=1e6)] | None = None  # how much better `chosen` is (>= 0)


# which of a response's returned `choices` a `rating` or `edit` is about: its `index` there (OpenAI's `choices[i].index`,
# as `choice`'s `chosen_index` names the pick); 0, the served answer, when not given
ChoiceIndex = Annotated[int, msgspec.Meta(ge=0, description="the `index` of the choice meant among the response's "
                                          "`choices` as returned (0, the served answer, by default)")]


class RatingFeedback(Feedback, tag="rating", kw_only=True):
    """A 1-5 rating of `choices[index]` of a served response (the served answer, `choices[0]`, by default);
    against the other candidates it becomes comparisons."""

    response_id: ResponseId
    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    index: ChoiceIndex | None = 0


class EditFeedback(Feedback, tag="edit", kw_only=True):
    """The user rewrote `choices[index]` of a served response (the served answer by default): the edit is
    preferred over it."""

    response_id: ResponseId
    edited: Text
    index: ChoiceIndex | None = 0


FeedbackBody = ChoiceFeedback | ComparisonFeedback | RatingFeedback | EditFeedback


class FeedbackReceipt(Base):
    user: str
    stored: list[str]  # pref_ids written (committed before this reply)
