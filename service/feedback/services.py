"""Turn feedback into preference rows, write them durably, then refit the user's reward weights."""

from __future__ import annotations

import time
import uuid

import numpy as np
from litestar.exceptions import NotFoundException

from pluralign.store import Interaction, StoredPreference
from service.errors import bad_request
from service.feedback.schemas import (
    ChoiceFeedback,
    ComparisonFeedback,
    EditFeedback,
    FeedbackBody,
    FeedbackReceipt,
    RatingFeedback,
)
from service.ids import check_user_id
from service.runtime import Runtime
from service.users.services import schedule_refit


def served(rt: Runtime, tenant: str, response_id: str) -> Interaction:
    item = rt.store.get_interaction(tenant, response_id)
    if item is None:  # another tenant's response ids are invisible, exactly like unknown ones
        raise NotFoundException(f"no response {response_id} was served to this tenant")
    return item


def rows_for(rt: Runtime, tenant: str, fb: FeedbackBody) -> tuple[str, list[dict]]:
    """(user, [{prompt, chosen, rejected, tie, margin, kind}]) for one feedback body."""
    if isinstance(fb, ComparisonFeedback):
        check_user_id(fb.user)
        row = dict(prompt=fb.prompt, chosen=fb.chosen, rejected=fb.rejected, tie=fb.tie, margin=fb.margin, kind="comparison")
        return fb.user, [row]
    item = served(rt, tenant, fb.response_id)
    texts = item.candidates
    if isinstance(fb, ChoiceFeedback):
        if len(texts) < 2:
            raise bad_request("response_id", "this response had a single candidate: send a `comparison` or an `edit`")
        if fb.chosen_index >= len(texts):
            raise bad_request("chosen_index", f"must be below the number of candidates ({len(texts)})")
        chosen = texts[fb.chosen_index]
        rows = [
            dict(prompt=item.prompt, chosen=chosen, rejected=other, tie=False, margin=None, kind="choice")
            for other in dict.fromkeys(texts) if other != chosen
        ]
        if not rows:
            raise bad_request("chosen_index", "every candidate of this response has the same text")
        return item.user_id, rows
    answer = texts[item.chosen_index]
    if isinstance(fb, EditFeedback):
        if fb.edited.strip() == answer.strip():
            raise bad_request("edited", "the edit is identical to the served answer")
        return item.user_id, [dict(prompt=item.prompt, chosen=fb.edited, rejected=answer, tie=False, margin=None, kind="edit")]
    assert isinstance(fb, RatingFeedback)
    others = [t for t in dict.fromkeys(texts) if t != answer]
    margin = (fb.rating - 3) / 2  # in [-1, 1]
    if fb.rating == 3 or not others:  # nothing to compare against: kept, not used for fitting
        return item.user_id, [dict(prompt=item.prompt, chosen=answer, rejected="", tie=fb.rating == 3, margin=margin, kind="rating")]
    good = fb.rating > 3
    return item.user_id, [
        dict(prompt=item.prompt, chosen=answer if good else o, rejected=o if good else answer, tie=False, margin=abs(margin), kind="rating")
        for o in others
    ]


def record(rt: Runtime, tenant: str, fb: FeedbackBody) -> FeedbackReceipt:
    """Write the rows (returns once LanceDB committed them), then queue a refit of the user's weights."""
    user, rows = rows_for(rt, tenant, fb)
    texts = list(dict.fromkeys(t for r in rows for t in (r["prompt"], r["chosen"], r["rejected"]) if t))
    vectors = dict(zip(texts, rt.encoder.encode(texts), strict=True))
    zero = np.zeros(rt.encoder.dim, np.float32)
    now = time.time()
    stored = [
        StoredPreference(
            tenant=tenant, user_id=user, pref_id=uuid.uuid4().hex, created_at=now + i * 1e-6,
            source=fb.source or "feedback", attributes=fb.attributes, **r,
        )
        for i, r in enumerate(rows)
    ]
    stack = lambda field: np.stack([vectors.get(r[field], zero) for r in rows])  # (N, d)
    rt.store.add_preferences(stored, stack("prompt"), stack("chosen"), stack("rejected"))
    rt.metrics.inc("pluralign_feedback_rows_total", len(stored), help="preference rows written", kind=rows[0]["kind"])
    schedule_refit(rt, tenant, user, attributes=fb.attributes or None)
    rt.maybe_compact()
    return FeedbackReceipt(user=user, stored=[s.pref_id for s in stored])
