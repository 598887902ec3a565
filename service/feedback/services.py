"""Turn feedback into preference rows and write them durably to the feedback log.

The rows are embedded and moved into the preferences table behind the reply (see
`pluralign.store.ingest`); every read of a user's history first moves that user's pending rows, and
the user's reward weights are refitted when a read finds them stale, so the very next request of
the user uses the feedback."""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException, NotFoundException

from pluralign.data.text import answer_key, is_blank, look_key, name_control_problem, pickable
from pluralign.store import Interaction, StoredPreference
from pluralign.store.tables import PrefIdConflict
from service.errors import bad_request, refuse_blank, shown
from service.feedback.schemas import (
    ChoiceFeedback,
    ComparisonFeedback,
    EditFeedback,
    FeedbackBody,
    FeedbackReceipt,
    RatingFeedback,
)
from service.ids import USER_HEADER, check_user_id, routed_to
from service.requestid import remember
from service.runtime import Runtime
from service.users.retractions import retract_arrived
from service.users.services import queue_refits, submit_refits
from service.waiting_refits import owed_now

log = logging.getLogger("pluralign.service")
# the most users whose background refits wait for a feedback backlog to clear (`refit_waiting`): ~200 bytes each
MAX_WAITING_REFITS = 100_000


def served(rt: Runtime, tenant: str, response_id: str, routed: Sequence[str] = ()) -> Interaction:
    """The stored response feedback refers to. Raises a 404 naming `response_id` when this tenant
    keeps none by that id: unknown, another tenant's, or served but not kept (an anonymous chat's,
    a `store: false` one's, a deleted user's). Behind replicas (`Settings.sync_seconds`) it may also be one another
    replica served within `store_sync_ms`, not read here yet: the 404 then names `X-Pluralign-User` (`routed`, the
    request's field lines of it), which routed the feedback here. The header cannot be compared first (`routed_to`):
    the response's user is known from this lookup alone."""
    item = rt.store.get_interaction(tenant, response_id)
    if item is None:  # another tenant's response ids are invisible, exactly like unknown ones
        problem = (f"response {response_id} is not stored for this tenant: responses to anonymous chats (no `user`) "
                   "and to chats sent with store: false are not kept, and a user's DELETE removes their responses (a "
                   "chat still running then keeps none), so they take no feedback") + _not_here_yet(rt, routed)
        raise NotFoundException(f"`response_id`: {problem}", extra=[{"key": "response_id", "message": problem, "code": "not_found"}])
    return item


def _not_here_yet(rt: Runtime, routed: Sequence[str]) -> str:
    """What a feedback's 404 adds behind replicas: a response served on another replica is read here only after
    `store_sync_ms`, and `X-Pluralign-User` (as the request sent it, `routed`) picks the replica. "" with one replica."""
    if rt.settings.sync_seconds is None:
        return ""
    wait = f"{round(rt.settings.sync_seconds * 1000)} ms"
    header = [line for line in routed if line]
    sent = (f"this request's `{USER_HEADER}` names {', '.join(shown(h) for h in header)}, which routed it to this replica"
            if header else f"this request sent no `{USER_HEADER}`")
    return (f"; behind several replicas a response another replica served in the last {wait} is not read here yet: "
            f"{sent}; send it naming the user the response was served to, as their chat did, so the feedback reaches "
            "the replica that served it")


def check_labels(rt: Runtime, source: str | None, attributes: dict[str, str], where: str = "") -> None:
    """The size limits on a row's `source` and `attributes` (settings max_source_chars,
    max_attributes, max_attribute_name_chars, max_attribute_value_chars). Raises a 400 naming
    `source`, `attributes` or `attributes.<name>` (prefixed with `where`, e.g. `line 3.`)."""
    limits = rt.settings
    if source is not None and len(source) > limits.max_source_chars:
        raise bad_request(f"{where}source", f"{len(source)} characters; at most {limits.max_source_chars}")
    if len(attributes) > limits.max_attributes:
        raise bad_request(f"{where}attributes", f"{len(attributes)} attributes; at most {limits.max_attributes}")
    for name, value in attributes.items():
        if is_blank(name):  # as an import refuses it: an export must read back
            raise bad_request(f"{where}attributes", "an attribute name must hold a visible character")
        if len(name) > limits.max_attribute_name_chars:
            raise bad_request(f"{where}attributes", f"an attribute name of {len(name)} characters; at most {limits.max_attribute_name_chars}")
        if (problem := name_control_problem(name)) is not None:  # NUL: no audit's `group_by` (an argument) holds it; a
            # newline splits its errors; a bidi override shows the name reordered on the dashboard and in audits
            raise bad_request(f"{where}attributes", f"an attribute name {problem}: name it in visible characters")
        if not isinstance(value, str):
            raise bad_request(f"{where}attributes.{name}", "must be a string")
        if len(value) > limits.max_attribute_value_chars:
            raise bad_request(f"{where}attributes.{name}", f"{len(value)} characters; at most {limits.max_attribute_value_chars}")


def _rivals(texts: list[str], answer: str) -> list[str]:
    """The texts to compare `answer` with: each visible text once (`pickable`: answers a person cannot tell apart,
    `look_key`, are one), neither blank nor `answer` again: one `look_key` per text and one of `answer` (`pickable`'s
    `besides`), not one more of each kept text and of `answer` for each."""
    return [texts[i] for i in pickable(texts, besides=answer)]


def rows_for(rt: Runtime, tenant: str, fb: FeedbackBody, routed: Sequence[str] = ()) -> tuple[str, list[dict]]:
    """(user, [{prompt, chosen, rejected, tie, margin, kind}]) for one feedback body; a 400 naming the
    field for one that cannot be stored (blank or identical answers, a choice out of range, ...); the 404 of `served`
    (`routed`: the request's `X-Pluralign-User` field lines) for a response it does not find."""
    if isinstance(fb, ComparisonFeedback):
        return fb.user, _comparison_rows(fb)
    item = served(rt, tenant, fb.response_id, routed)
    if isinstance(fb, ChoiceFeedback):
        return item.user_id, _choice_rows(item, fb)
    if isinstance(fb, EditFeedback):
        return item.user_id, _edit_rows(item, fb)
    assert isinstance(fb, RatingFeedback)
    return item.user_id, _rating_rows(item, fb)


def _comparison_rows(fb: ComparisonFeedback) -> list[dict]:
    check_user_id(fb.user)
    for name in ("prompt", "chosen", "rejected"):
        refuse_blank(name, getattr(fb, name))
    if look_key(fb.chosen) == look_key(fb.rejected):  # a pair a person cannot tell apart (docs/api.md "The same answer")
        raise bad_request("rejected", "is the same answer as `chosen`: a comparison needs two different answers")
    return [dict(prompt=fb.prompt, chosen=fb.chosen, rejected=fb.rejected, tie=fb.tie, margin=fb.margin, kind="comparison")]


def _choice_rows(item: Interaction, fb: ChoiceFeedback) -> list[dict]:
    """The pick beats every other choice the user was shown (`shown`, else every returned choice); with `tie`
    (no preference) it ties with each of them instead."""
    shown = item.choice_texts()  # `chosen_index` indexes the response's `choices` as returned
    if len(shown) < 2:
        raise bad_request("response_id", "this response returned a single choice (request `n` > 1 to offer a choice): send a `comparison`, a `rating` or an `edit`")
    if fb.chosen_index >= len(shown):
        raise bad_request("chosen_index", f"must be below the number of returned choices ({len(shown)})")
    chosen = shown[fb.chosen_index]
    if is_blank(chosen):
        raise bad_request("chosen_index", "this choice is a blank answer (no visible character): pick another, or send a `comparison`")
    if fb.shown is not None:  # only these choices were shown side by side
        if len(set(fb.shown)) != len(fb.shown):
            raise bad_request("shown", "lists a choice twice")
        if max(fb.shown) >= len(shown):
            raise bad_request("shown", f"indices must be below the number of returned choices ({len(shown)})")
        if fb.chosen_index not in fb.shown:
            raise bad_request("chosen_index", "must be one of the `shown` choices")
        shown = [shown[i] for i in fb.shown]
    rows = [  # the pick beats every other choice the user was shown, not candidates never returned (nor blank ones)
        dict(prompt=item.prompt, chosen=chosen, rejected=other, tie=bool(fb.tie), margin=None, kind="choice")
        for other in _rivals(shown, chosen)
    ]
    if not rows:
        raise bad_request("chosen_index", "every other choice of this response has the same visible text or is blank: nothing to compare")
    return rows


def _answer_at(item: Interaction, index: int, doing: str) -> str:
    """`choices[index]` of the response `item`, the answer a `rating` or `edit` names (`index`, as `choice`'s
    `chosen_index`, counts in `choices` as returned); a 400 naming `index` past them. A response an older release
    stored (no count of its returned choices) knows only its served answer, `choices[0]`. A blank answer is a 400
    naming `response_id` (the served answer is the one the response id designates) or `index`: its rows would hold a
    blank text, which no fit or export takes (`doing`: "rate", "rewrite")."""
    shown = item.choice_texts()
    if index >= len(shown):
        raise bad_request("index", f"must be below the number of returned choices ({len(shown)})")
    if is_blank(shown[index]):
        raise (bad_request("response_id", f"the served answer of this response is blank (no visible character): there is nothing to {doing}")
               if index == 0 else
               bad_request("index", f"choices[{index}] of this response is a blank answer (no visible character): there is nothing to {doing}"))
    return shown[index]


def _edit_rows(item: Interaction, fb: EditFeedback) -> list[dict]:
    answer = _answer_at(item, fb.index, "rewrite")
    refuse_blank("edited", fb.edited)
    if look_key(fb.edited) == look_key(answer):  # one a person cannot tell apart (docs/api.md "The same answer")
        raise bad_request("edited", "the edit is identical to the served answer" if fb.index == 0 else
                          f"the edit is identical to choices[{fb.index}], the answer it rewrites (`index`)")
    return [dict(prompt=item.prompt, chosen=fb.edited, rejected=answer, tie=False, margin=None, kind="edit")]


def _rating_rows(item: Interaction, fb: RatingFeedback) -> list[dict]:
    """The rated choice (`index`, the served answer by default) against each other candidate, on the side the rating
    says (3: a tie, kept, not fitted)."""
    texts = item.candidates
    answer = _answer_at(item, fb.index, "rate")
    others = _rivals(texts, answer)
    margin = (fb.rating - 3) / 2  # in [-1, 1]
    if fb.rating == 3 or not others:  # nothing to compare against: kept, not used for fitting
        return [dict(prompt=item.prompt, chosen=answer, rejected="", tie=fb.rating == 3, margin=margin, kind="rating")]
    good = fb.rating > 3
    return [
        dict(prompt=item.prompt, chosen=answer if good else o, rejected=o if good else answer, tie=False, margin=abs(margin), kind="rating")
        for o in others
    ]


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces


def one_idempotency_key(request) -> None:
    """A 400 naming `Idempotency-Key` when a request sends the header more than once: it is one value (not
    a list), and which one counts would be each client's, proxy's and replica's guess (Litestar reads the first)."""
    sent = request.headers.getall("idempotency-key", [])
    if len(sent) > 1:
        raise bad_request("Idempotency-Key", f"{len(sent)} `Idempotency-Key` headers: send one (1-255 printable ASCII characters)")


def idempotent_ids(tenant: str, user: str, key: str, n: int) -> list[str]:
    """The pref_ids of a feedback sent with `Idempotency-Key: key`: the same on every retry, so a
    retry finds what the first attempt stored (in the log or in the table), even after a crash."""
    return [hashlib.sha256(f"{tenant}\0{user}\0{key}\0{i}".encode()).hexdigest()[:32] for i in range(n)]


def key_reused(first: str) -> HTTPException:
    """The 422 of an `Idempotency-Key` already used (per tenant and user) for another request: replaying the first
    receipt would leave this request's rows unstored, or answer for rows it does not hold (the IETF httpapi
    Idempotency-Key draft: 422 for a key reused with another payload). `first`: what the key's first request was,
    in words."""
    problem = (f"was already used for {first}: a retry sends the same body with the same key, a different request "
               "a new key (nothing of this one was stored)")
    return HTTPException(status_code=422, detail=f"`Idempotency-Key`: {problem}",
                         extra=[{"key": "Idempotency-Key", "message": problem, "code": "idempotency_key_reused"}])


def key_partly_held(user: str, ids: list[str], found: list[str]) -> HTTPException:
    """`key_reused`'s 422 for a request of `len(ids)` rows whose key holds some of their ids (`found`), not all, nor the
    id after the last. A row taken back since (DELETE /v1/users/{user}/preferences/{pref_id}) leaves such a gap, so the
    request sent again is told so, not that its first request held another number of rows (such as "a
    request of 1 row of this user; this one has 2" for the same two-row request). A row held after one missing means
    the first request held the missing one: taken back for certain; held rows all first may be a shorter request."""
    held = set(found)
    last = max(i for i, pref_id in enumerate(ids) if pref_id in held)
    gone = [f"row {i + 1} ({pref_id})" for i, pref_id in enumerate(ids[:last]) if pref_id not in held]
    if gone:  # told for certain
        problem = (f"names rows of this user of which {', '.join(gone)} {'was' if len(gone) == 1 else 'were'} taken back "
                   f"since (DELETE /v1/users/{user}/preferences/{{pref_id}}): it is no retry any more; send the rows "
                   "still wanted with a new key (nothing of this one was stored)")
        return HTTPException(status_code=422, detail=f"`Idempotency-Key`: {problem}",
                             extra=[{"key": "Idempotency-Key", "message": problem, "code": "idempotency_key_reused"}])
    return key_reused(f"a request of {len(found)} row{'s' if len(found) != 1 else ''} of this user; this one has {len(ids)} "
                      f"(or for a request of more, the rest of which were taken back since: DELETE "
                      f"/v1/users/{user}/preferences/{{pref_id}})")


def replay_of(rt: Runtime, tenant: str, user: str, key: str, n: int,
              as_stored: Callable[[list[str]], tuple[list[StoredPreference], frozenset[str]]]) -> tuple[list[str], list[str]]:
    """(ids, found) for a request of `n` rows sent with `Idempotency-Key: key`: the ids to store it
    under, and those of them already acknowledged (empty: not seen before; all `n`: a retry, whose first
    receipt is `found`). `as_stored(ids)`: the request's rows as they would be stored under `ids`, and the ids
    of those whose `created_at` is stamped on receipt (not compared). Raises `key_reused`'s 422 when the key's
    first request held more rows (the id after the last is stored), `key_partly_held`'s when some but not all of the
    ids are (another number of rows, or some taken back since), or as many with other content (as `Store.new_and_held` tells rows under one id apart: replayed, such a
    request's rows would never be stored). Run in a thread."""
    ids = idempotent_ids(tenant, user, key, n + 1)  # one more: a first request of more rows holds it
    found = already_stored(rt, tenant, user, ids)
    if not found:
        return ids[:n], []
    if ids[n] in found:
        raise key_reused(f"a request of more than {n} row{'s' if n != 1 else ''} of this user; this one has {n}")
    if len(found) != n:
        raise key_partly_held(user, ids[:n], found)
    rows, untimed = as_stored(ids[:n])
    pending = [r for e in rt.ingest.log.pending_for(tenant, user) for r in e.rows]
    try:
        rt.store.new_and_held(rows, pending, untimed)
    except PrefIdConflict as exc:
        field = "form of its TRL columns (`trl`)" if exc.field == "trl" else f"`{exc.field.removeprefix('trl.')}`"
        raise key_reused(f"another request of this user (its row {exc.index + 1} had another {field})") from None
    return ids[:n], found


def already_stored(rt: Runtime, tenant: str, user: str, ids: list[str]) -> list[str]:
    """Which of `ids` are acknowledged: pending in the log first, then in the table (a row moves
    from the first to the second, never back, so this order misses none)."""
    wanted = set(ids)
    found = {r.pref_id for e in rt.ingest.log.pending_for(tenant, user) for r in e.rows if r.pref_id in wanted}
    if len(found) < len(wanted):
        found |= wanted.intersection(rt.store.history(tenant, user).meta.column("pref_id").to_pylist())
    return [i for i in ids if i in found]


def same_feedback_digest(fb: ChoiceFeedback | RatingFeedback | EditFeedback, rows: list[dict]) -> str:
    """What a `choice`, `rating` or `edit` states about its response, as 64 hex digits: its rows' texts (as
    `answer_key` tells answers apart), sides, tie and margin, and its labels. Two bodies with one digest store
    the same evidence, and a `choice` with `tie` names its two answers in either order ("no preference" with
    `chosen_index` either of the pair; the other index is not another turn, stored again)."""
    def sides(r: dict) -> list[str]:
        answers = [answer_key(r["chosen"]), answer_key(r["rejected"])]
        return sorted(answers) if r["tie"] and r["kind"] == "choice" else answers

    facts = sorted(msgspec.json.encode([r["prompt"], *sides(r), r["tie"], r["margin"], r["kind"]]) for r in rows)
    labels = msgspec.json.encode([fb.source, sorted((fb.attributes or {}).items())])
    return hashlib.sha256(b"\n".join([labels, *facts])).hexdigest()


def response_tag(tenant: str, user: str, response_id: str) -> str:
    """The 12 hex digits the pref_ids of every `choice`, `rating` or `edit` sent on one response without an
    `Idempotency-Key` start with (`same_feedback_ids`)."""
    return hashlib.sha256(f"{tenant}\0{user}\0{response_id}".encode()).hexdigest()[:12]


def same_feedback_ids(tenant: str, user: str, response_id: str, digest: str, turn: int, n: int) -> list[str]:
    """The pref_ids of the `turn`-th feedback (0, 1, ...) stored on a response without an `Idempotency-Key`, of
    `n` rows stating `digest` (`same_feedback_digest`): the response's tag, the turn (4 or more hex digits), then
    16 hex digits drawn from all of these and the row's index. The same on every replica and after a restart, so
    copies that two replicas received are stored once when moved (`pluralign.store.ingest`)."""
    head = f"{response_tag(tenant, user, response_id)}{turn:04x}"
    return [head + hashlib.sha256(f"{tenant}\0{user}\0{response_id}\0{digest}\0{turn}\0{i}".encode()).hexdigest()[:16]
            for i in range(n)]


def _turns_on_response(rt: Runtime, tenant: str, user: str, tag: str) -> tuple[int, set[str]]:
    """(the last turn stored on the response of `tag`, -1 for none; the acknowledged pref_ids starting with `tag`):
    pending in the log first, then in the table, as `already_stored` looks."""
    held = {r.pref_id for e in rt.ingest.log.pending_for(tenant, user) for r in e.rows if r.pref_id.startswith(tag)}
    ids = rt.store.history(tenant, user).meta.column("pref_id")
    held.update(ids.filter(pc.starts_with(ids, pattern=tag)).to_pylist())
    turns = [int(found[1], 16) for pref_id in held if (found := _TURN.fullmatch(pref_id, len(tag))) is not None]
    return max(turns, default=-1), held


_TURN = re.compile(r"([0-9a-f]{4,})[0-9a-f]{16}")  # after the response's tag: the turn, then the row's digits


def same_feedback_replay(rt: Runtime, tenant: str, user: str, fb: ChoiceFeedback | RatingFeedback | EditFeedback,
                         rows: list[dict]) -> tuple[list[str], list[str]]:
    """(ids, found) for a `choice`, `rating` or `edit` sent without an `Idempotency-Key`, as `replay_of` gives them
    for a key: a copy of the last feedback stored on its response (a button clicked twice, a request resent after a
    timeout, copies at once) finds that one's ids (a replay); anything else is the response's next turn, stored,
    a pick repeating an earlier one after another (A, then B, then A again: the user changed their mind back)
    included. Drawn from what the body stated alone, the ids would have that third pick
    answered as a replay of the first for as long as its rows were kept, and the user's last word lost. Run in
    a thread."""
    digest = same_feedback_digest(fb, rows)
    tag = response_tag(tenant, user, fb.response_id)
    last, held = _turns_on_response(rt, tenant, user, tag)
    if last >= 0 and held.issuperset(ids := same_feedback_ids(tenant, user, fb.response_id, digest, last, len(rows))) \
            and not _keyed_on_response_since(rt, tenant, user, tag, rows[0]["prompt"], ids):
        return ids, ids
    return same_feedback_ids(tenant, user, fb.response_id, digest, last + 1, len(rows)), []


RESPONSE_KINDS = ("choice", "rating", "edit")  # the feedback that names a served response


def _keyed_on_response_since(rt: Runtime, tenant: str, user: str, tag: str, prompt: str, ids: list[str]) -> bool:
    """Whether the user's feedback holds a `choice`, `rating` or `edit` on a response of `prompt` that is none of the
    response's turns (its ids do not start with `tag`: one sent with an `Idempotency-Key`, whose ids its key draws)
    received after the rows `ids` (the response's last turn): then that keyed feedback is the user's latest word on it,
    and a copy of the turn before it is their word again, stored. Answered as a replay, it would be lost (A
    without a key, B with one, A again: the last A lost). A keyed feedback on another response of the same prompt
    counts too (a copy then stored twice, rather than a word lost). Pending in the log first, then in the table."""
    wanted = set(ids)
    pending = [r for e in rt.ingest.log.pending_for(tenant, user) for r in e.rows]
    meta = rt.store.history(tenant, user).meta
    if "received_at" not in meta.column_names:  # a table of a release that kept no time of receipt
        meta = meta.slice(0, 0).append_column("received_at", pa.array([], pa.float64()))
    turn = meta.filter(pc.is_in(meta.column("pref_id"), value_set=pa.array(ids)))
    since = max([r.received() for r in pending if r.pref_id in wanted]
                + [t for t in turn.column("received_at").to_pylist() if t is not None], default=None)
    if since is None:  # rows of a release that kept no time of receipt: nothing tells what came after
        return False
    if any(r.kind in RESPONSE_KINDS and r.prompt == prompt and not r.pref_id.startswith(tag) and r.received() > since
           for r in pending):
        return True
    later = pc.and_(pc.and_(pc.is_in(meta.column("kind"), value_set=pa.array(RESPONSE_KINDS)), pc.equal(meta.column("prompt"), prompt)),
                    pc.and_(pc.invert(pc.starts_with(meta.column("pref_id"), pattern=tag)), pc.greater(meta.column("received_at"), since)))
    return bool(pc.any(later).as_py())


async def record(rt: Runtime, tenant: str, fb: FeedbackBody, idempotency_key: str | None = None,
                 routed: Sequence[str] = ()) -> tuple[FeedbackReceipt, bool]:
    """Append the rows to the feedback log; returns (receipt, replayed) once they are on disk (one
    fsync shared by the requests that arrived meanwhile). Runs on the event loop: only the kinds
    that look a served response up in LanceDB go to a thread for that.

    With an `idempotency_key`, a feedback whose rows are already acknowledged is not stored again:
    the receipt of the first attempt comes back with replayed=True; a `choice`, `rating` or `edit` sent
    without one that repeats the last feedback stored on its response is answered so too
    (`same_feedback_replay`). Raises a 400 naming `Idempotency-Key` when the key is not 1-255 printable
    ASCII characters, and one naming `X-Pluralign-User` when `routed` (the request's field lines of it) names another
    user than the feedback's (`routed_to`), nothing stored."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise bad_request("Idempotency-Key", "must be 1-255 printable ASCII characters without spaces")
    check_labels(rt, fb.source, fb.attributes)
    if isinstance(fb, ComparisonFeedback):
        user, rows = rows_for(rt, tenant, fb)
        routed_to(routed, user, "user")
        if idempotency_key is None:
            return await _store(rt, tenant, user, fb, rows, [uuid.uuid4().hex for _ in rows]), False
    else:
        user, rows = await sync_to_thread(rows_for, rt, tenant, fb, routed)
        routed_to(routed, user, "response_id", "was served to")
    # two copies in flight: the second waits, then finds the first. Without a key, one response's feedback
    # takes turns (a key a client sends holds no space)
    async with rt.idempotency_lock(tenant, idempotency_key or f"response {fb.response_id}"):
        if idempotency_key is None:
            ids, found = await sync_to_thread(same_feedback_replay, rt, tenant, user, fb, rows)
        else:
            as_stored = lambda ids: (stored_rows(tenant, user, fb, rows, ids), frozenset(ids))  # stamped on receipt
            ids, found = await sync_to_thread(replay_of, rt, tenant, user, idempotency_key, len(rows), as_stored)
        if found:
            rt.metrics.inc("pluralign_feedback_replayed_total", help="feedback retries answered from what was stored")
            return FeedbackReceipt(user=user, stored=found), True
        return await _store(rt, tenant, user, fb, rows, ids), False


def stored_rows(tenant: str, user: str, fb: FeedbackBody, rows: list[dict], ids: list[str]) -> list[StoredPreference]:
    """A feedback's `rows` as stored under `ids`: created and received now, labelled as `fb` says."""
    now = time.time()
    return [
        StoredPreference(
            tenant=tenant, user_id=user, pref_id=pref_id, created_at=now + i * 1e-6, received_at=now,
            source=fb.source or "feedback", attributes=fb.attributes, **r,
        )
        for i, (r, pref_id) in enumerate(zip(rows, ids, strict=True))
    ]


async def _store(rt: Runtime, tenant: str, user: str, fb: FeedbackBody, rows: list[dict], ids: list[str]) -> FeedbackReceipt:
    stored = stored_rows(tenant, user, fb, rows, ids)
    remember([s.pref_id for s in stored])  # before: the worker may move them as soon as they are on disk
    await rt.ingest.submit_async(stored)
    rt.metrics.inc("pluralign_feedback_rows_total", len(stored), help="preference rows written", kind=rows[0]["kind"])
    return FeedbackReceipt(user=user, stored=[s.pref_id for s in stored])


def after_move(rt: Runtime, rows: list[StoredPreference]) -> None:
    """Rows just moved into the table: those a retraction through another replica took back meanwhile taken back
    (`retract_arrived`), compact when due, and refit their users in the background so their stored
    weights are fresh (`refit_waiting`)."""
    retract_arrived(rt, rows)  # with replicas: taken back through another replica while being stored here
    rt.maybe_compact()
    refit_waiting(rt, [(r.tenant, r.user_id) for r in rows])


def refit_waiting(rt: Runtime, moved: Iterable[tuple[str, str]] = ()) -> int:
    """Queue the background refits of the users (tenant, user_id) whose rows were just `moved` into the table, and
    of those whose refits wait (`Runtime.dropped_refits`), once the feedback log is empty. While it still has a
    backlog the `moved` join those waiting (under load the CPU goes to moving the rows; a read refits stale
    weights itself meanwhile), and the first move that leaves it empty queues them all; so does the app's start
    when the worker emptied it before (the users of the records replayed at the start wait: `Ingestor.replayed`).
    A stop before that keeps them for the next start (`keep_dropped_refits`), and so does a crash (they are on disk,
    queued or waiting, until their refits ran: `service.waiting_refits`). At most MAX_WAITING_REFITS users wait: the
    move that reaches it queues them all at once, beside the backlog (a warning says how many), so memory stays
    bounded and none is forgotten. Recorded nowhere,
    they would leave what reads the users table as it is (the fairness audit's groups, the population a new user is
    compared with, the pooled prior) their row of before that feedback until they came back, for good for a user who
    never did. A user deleted meanwhile is refitted to nothing: a refit writes no row for a user with nothing stored
    (`refit`). A user whose own read refitted them meanwhile is refitted once more (the same fit). Returns how many
    refits were asked for."""
    users = list(dict.fromkeys(moved))
    at_bound = False
    # the look at the backlog under the lock too: a reader's move that saw the worker's last batch still pending
    # adds its users before the worker's hook looks (which queues them), or sees the log empty itself
    with rt.refit_lock:
        # on disk until their refits ran (`service.waiting_refits`): a crash meanwhile loses none of them (those the worker
        # named before the log let go of their rows, `WaitingRefits.owe`, are not named twice)
        named = rt.waiting_refits.moving
        rt.waiting_refits.add(key for key in users if key not in rt.dropped_refits and key not in rt.pending_refits and key not in named)
        if rt.waiting_refits.lines > MAX_WAITING_REFITS // 64:  # the file's lines, not just its users: written whole again
            rt.waiting_refits.rewrite(owed_now(rt) | set(users))
        if rt.ingest.log.has_pending():  # asked at each request's rows of each batch: no pass over the backlog
            rt.dropped_refits.update(users)
            rt.waiting_refits.handed_on(users)  # waiting: `dropped_refits` names them
            if len(rt.dropped_refits) < MAX_WAITING_REFITS:
                return 0
            at_bound = not rt.refits_stopped.is_set()
        if not rt.refits_stopped.is_set():  # stopping, they stay: `keep_dropped_refits` writes them for the next start
            users += sorted(rt.dropped_refits.difference(users))
            rt.dropped_refits.clear()
        # the attributes their feedback carried are in their rows: a refit gathers them
        queued = queue_refits(rt, users)  # with the emptying of the waiting set: the queue never looks drained between
        rt.waiting_refits.handed_on(users)  # queued (`pending_refits`), or kept by a stop (`dropped_refits`)
    submit_refits(rt, queued)
    if at_bound:
        log.warning("%d users' background refits waited behind the feedback log's backlog (at most %d wait): queued now, "
                    "beside the backlog", len(users), MAX_WAITING_REFITS)
    return len(users)
