"""Blank generated answers over real HTTP: a choice or rating of a blank answer is refused, blank
other choices are left out of the pairs a choice stores, and blank rows an older version stored
neither break the preference export nor show up as a profile's example answers."""

from __future__ import annotations

import json

import pytest

from pluralign.store.tables import StoredPreference
from tests.service.tiny import fixed_answers, fixed_service

CHAT = {"model": "pluralign", "n": 4, "max_tokens": 3, "pluralign": {"styles": False},
        "messages": [{"role": "user", "content": "Say something."}]}


FixedGenerator = fixed_answers(["Sure,", "", "", ""])  # what a short `max_tokens` with a `stop` string can give


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fixed_service(tmp_path_factory.mktemp("blank"), tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator) as service:
        yield service


def stored_as_an_older_version_stored(rt, rows: list[StoredPreference]) -> None:
    """`rows` written into the running service's store as they are (no check an import or a feedback makes today), with
    their texts embedded by its encoder: what an older version stored."""
    embedded = lambda texts: rt.encoder.encode(list(texts))  # noqa: E731
    rt.store.add_preferences(rows, embedded(r.prompt for r in rows), embedded(r.chosen for r in rows), embedded(r.rejected for r in rows))


def chat(client, user: str, texts: list[str]) -> dict:
    FixedGenerator.texts = texts
    r = client.post("/v1/chat/completions", json={**CHAT, "user": user})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(c["message"]["content"] for c in body["choices"]) == sorted(texts)
    return body


def test_a_choice_of_a_blank_answer_is_refused_and_blank_rivals_are_left_out(svc):
    with svc.client("acme") as c:
        body = chat(c, "blankgen", ["Sure,", "", "\u3164", "Yes."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        blank = next(i for i, t in enumerate(texts) if t == "")
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": blank})
        assert r.status_code == 400 and r.json()["error"]["param"] == "chosen_index", r.text
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("Sure,")})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/blankgen/preferences").json()["data"]
    assert [(p["chosen"], p["rejected"]) for p in rows] == [("Sure,", "Yes.")]


def test_a_choice_among_blank_rivals_only_is_refused(svc):
    with svc.client("acme") as c:
        body = chat(c, "blankgen2", ["Sure,", "", "", "Sure,\u200b"])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("Sure,")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chosen_index", r.text


@pytest.mark.parametrize("rating", [1, 3, 5])
def test_a_rating_of_a_blank_answer_is_refused(svc, rating):
    with svc.client("acme") as c:
        body = chat(c, "blankrate", ["", "", "", ""])
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": rating})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_id", r.text


def test_a_rating_of_a_blank_choice_is_refused_naming_index(svc):
    """A rating whose `index` names a blank choice (returned after the visible ones) is a 400 naming `index`; its
    visible choice 1 is rated (index62: before, `index` was an unknown field and every rating was of `choices[0]`)."""
    with svc.client("acme") as c:
        body = chat(c, "blankrate3", ["Sure,", "", "\u3164", "Yes."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 5, "index": texts.index("")})
        assert r.status_code == 400 and r.json()["error"]["param"] == "index", r.text
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 5, "index": 1})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/blankrate3/preferences").json()["data"]
    assert [(p["chosen"], p["rejected"]) for p in rows] == [(texts[1], texts[0])], texts


def test_an_edit_of_a_blank_choice_is_refused_naming_index_or_response_id(svc):
    """An `edit` of a blank choice (`index` > 0) is a 400 naming `index`, of a blank served answer one naming `response_id`,
    as a rating's: its row would hold a blank rejected answer, which no fit, export or comparison takes, so the user's
    edit would be acknowledged and never learned from. Before (review index62), both were 201 and stored
    ("A full answer.", ""), and an edit of the next blank choice was answered as a replay of that row."""
    with svc.client("acme") as c:
        body = chat(c, "blankedit", ["Sure,", "", "\u3164", "Yes."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        edit = {"type": "edit", "response_id": body["id"], "edited": "A full answer."}
        for blank in ("", "\u3164"):
            r = c.post("/v1/feedback", json={**edit, "index": texts.index(blank)})
            assert r.status_code == 400 and r.json()["error"]["param"] == "index", r.text
        r = c.post("/v1/feedback", json={**edit, "response_id": chat(c, "blankedit", ["", "", "", ""])["id"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_id", r.text
        assert c.get("/v1/users/blankedit/preferences").json()["total"] == 0


def test_a_rating_leaves_blank_rivals_out(svc):
    with svc.client("acme") as c:
        body = chat(c, "blankrate2", ["Fine.", "", "\u2800", "Fine.\u3164"])
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 1})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/blankrate2/preferences").json()["data"]
    assert [(p["chosen"], p["rejected"]) for p in rows] == [("Fine.", "")]  # no rival left: kept, not compared


def test_blank_rows_stored_by_an_older_version_are_skipped_by_the_export_and_the_summary(svc):
    rt = svc.runtime
    pairs = [("Say something.", "Sure,", ""), ("Say something.", "", "Sure,"), ("Say something.", "\u3164", "No."),
             ("Say something.", "Yes.", "Yes.\u3164"), ("Tea?", "Green tea.", "Black coffee."),
             ("Say something.", "a b", "a\u00a0b")]  # review breakF63: look-alike answers (`look_key`), which an import now refuses
    rows = [StoredPreference(tenant="acme", user_id="olduser", pref_id=f"old{i}", prompt=p, chosen=a, rejected=b, kind="choice",
                             created_at=1.0 + i) for i, (p, a, b) in enumerate(pairs)]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/olduser/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert [(x["chosen"], x["rejected"]) for x in lines] == [("Green tea.", "Black coffee.")]
        assert c.post("/v1/users/olduser/import", content=r.content, headers={"content-type": "application/x-ndjson"}).status_code == 201
        profile = c.get("/v1/users/olduser").json()
    nearest = profile["summary"]["nearest_prototype"]
    examples = [e["answer"] for e in nearest["highest"] + nearest["lowest"]]
    assert examples and all(e.strip("\u3164 ") for e in examples)
    assert "''" not in " ".join(profile["summary"]["sentences"])


def test_a_time_an_import_refuses_that_an_older_version_stored_is_exported_as_null(svc):
    """Session rows42: imports refuse a `created_at` outside [0, 9999-12-31] (before, -5 and 1e300 were stored).
    A row stored so is exported with a null time (stamped on receipt again), so the file still imports."""
    rt = svc.runtime
    rows = [StoredPreference(tenant="acme", user_id="oldtimes", pref_id=f"t{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="choice", created_at=t) for i, t in enumerate((-5.0, 1e300, 1_700_000_000.5))]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldtimes/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        assert [json.loads(line)["created_at"] for line in r.text.splitlines()] == [None, 1_700_000_000.5, None]  # sorted by the stored time
        imported = c.post("/v1/users/oldtimes/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201, imported.text


def test_a_date_in_digits_an_older_version_stored_is_exported_as_null(svc):
    """Review hints58: imports refuse a `created_at` that spells a date in digits (20260101: 1970-08-23 as seconds); a
    row an older version stored so is exported with a null time, as docs/api.md says, so the export imports again."""
    rows = [StoredPreference(tenant="acme", user_id="digitdates", pref_id=f"d{i}", prompt=f"Milk {i}?", chosen="Yes.",
                             rejected="No.", kind="choice", created_at=t) for i, t in enumerate((20260101.0, 1_700_000_000.5))]
    stored_as_an_older_version_stored(svc.runtime, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/digitdates/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        assert [json.loads(line)["created_at"] for line in r.text.splitlines()] == [None, 1_700_000_000.5]
        imported = c.post("/v1/users/digitdates/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201, imported.text


def test_comparison_feedback_refuses_an_answer_of_invisible_characters(svc):
    with svc.client("acme") as c:
        for chosen in ["\u3164", "\uffa0", "\u115f\u1160", "\u2800", "\u034f", "\ufe0f", "\x00", "\x01\x02\x7f", "\u0301"]:
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "inv", "prompt": "Q", "chosen": chosen, "rejected": "No."})
            assert r.status_code == 400 and r.json()["error"]["param"] == "chosen", (repr(chosen), r.text)
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "inv", "prompt": "Q", "chosen": "Yes.", "rejected": "Yes.\u3164"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "rejected", r.text


def test_a_message_role_an_import_refuses_that_an_older_version_stored_is_exported_as_text(svc):
    """Review rw42. Since rows42 an imported message's role must be the chat route's (`bot` is a 400 naming
    `line N.chosen[1].role`); before, such a conversation was stored with its TRL form, which the preference export
    wrote back as it came, so the export of a user holding one did not import again. Such a row is exported in TRL's
    standard form, its stored text (`bot: ...` where the reader joined the messages), as an import stores it. (Into
    the same tenant's user, whose stored row keeps its TRL form, that row is a 409 naming its `pref_id`: left to a change of
    `differing_field`.)"""
    from pluralign.data.record import TrlRow

    rt = svc.runtime
    ask = {"role": "user", "content": "Tea or coffee?"}
    trl = TrlRow(chosen=[ask, {"role": "bot", "content": "Tea."}], rejected=[ask, {"role": "bot", "content": "Coffee."}])
    row = StoredPreference(tenant="acme", user_id="oldroles", pref_id="r0", prompt="Tea or coffee?", chosen="Tea.",
                           rejected="Coffee.", kind="comparison", created_at=1_700_000_000.0, trl=trl)
    stored_as_an_older_version_stored(rt, [row])
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldroles/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
    with svc.client("globex") as c:  # the file moved to another tenant (or service)
        imported = c.post("/v1/users/oldroles/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201, imported.text
    (line,) = [json.loads(text) for text in r.text.splitlines()]
    assert (line["prompt"], line["chosen"], line["rejected"]) == ("Tea or coffee?", "Tea.", "Coffee."), line


def test_a_time_in_milliseconds_an_older_version_stored_is_exported_as_the_seconds_it_meant(svc):
    """Review rows43. Imports before session rows42 stored any finite `created_at`, a time in epoch milliseconds
    (JavaScript's `Date.now()`) as it came; since rows42 such a time was exported as null, so the row lost its date
    (stamped on receipt) wherever the file went. A number past the end of year 9999 in seconds and within it in
    milliseconds can only be milliseconds: exported as the seconds it meant, which re-import into another tenant
    as that date, and into the same user as the row held (`already_stored`, not a 409 on the time)."""
    rt = svc.runtime
    rows = [StoredPreference(tenant="acme", user_id="oldms", pref_id=f"m{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="choice", created_at=t) for i, t in enumerate((1_700_000_000_123.0, 1_700_000_500.5))]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldms/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        again = c.post("/v1/users/oldms/import", content=r.content, headers={"content-type": "application/x-ndjson"})
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert sorted((x["pref_id"], x["created_at"]) for x in lines) == [("m0", 1_700_000_000.123), ("m1", 1_700_000_500.5)], lines
    assert again.status_code == 201 and sorted(again.json()["already_stored"]) == ["m0", "m1"], again.text
    with svc.client("globex") as c:  # the file moved to another tenant keeps the row's date
        imported = c.post("/v1/users/oldms/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201, imported.text
        page = c.get("/v1/users/oldms/preferences").json()
    assert sorted((p["pref_id"], p["created_at"]) for p in page["data"]) == [("m0", 1_700_000_000.123), ("m1", 1_700_000_500.5)], page


def test_a_message_role_an_import_refuses_that_an_older_version_stored_reimports_into_its_user_as_held(svc):
    """Review rows43. The export writes such a row as its text (above); imported again into the same user, whose
    stored row keeps its TRL form (role `bot`), it was a 409 naming `line 1.pref_id`, "already stored with another
    `trl`", which no file can mend: the form it names is one imports refuse. The held row is compared as the export
    writes it: the same preference (`already_stored`). A file giving that id another form (a conversation with the
    role mended) is still a 409, naming what differs."""
    from pluralign.data.record import TrlRow

    rt = svc.runtime
    ask = {"role": "user", "content": "Milk or lemon?"}
    trl = TrlRow(chosen=[ask, {"role": "bot", "content": "Milk."}], rejected=[ask, {"role": "bot", "content": "Lemon."}])
    row = StoredPreference(tenant="acme", user_id="oldroles2", pref_id="r0", prompt="Milk or lemon?", chosen="Milk.",
                           rejected="Lemon.", kind="comparison", created_at=1_700_000_000.0, trl=trl)
    stored_as_an_older_version_stored(rt, [row])
    mended = {"chosen": [ask, {"role": "assistant", "content": "Milk."}], "rejected": [ask, {"role": "assistant", "content": "Lemon."}],
              "created_at": 1_700_000_000.0, "pref_id": "r0"}
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldroles2/export", params={"format": "preferences"})
        again = c.post("/v1/users/oldroles2/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        other = c.post("/v1/users/oldroles2/import", content=json.dumps(mended), headers={"content-type": "application/x-ndjson"})
    assert again.status_code == 201 and again.json()["already_stored"] == ["r0"], again.text
    assert other.status_code == 409 and other.json()["error"]["param"] == "line 1.pref_id", other.text
    assert "a message role imports now refuse is held as its text" in other.json()["error"]["message"], other.text


def test_a_users_latest_label_is_not_one_an_older_version_stored_with_a_time_in_milliseconds(svc):
    """Review ro43. A user's attributes gather their comparisons' labels, the latest by `created_at` winning; read as
    stored, a 2023 comparison an import before session rows42 kept in milliseconds counted as made in the year 55,847,
    so its label outlived every later one (the profile, and an audit grouping users by it, said `segment` "2023"
    after the user's 2025 comparison said "2025"). Its time is read as the seconds it meant."""
    rt = svc.runtime
    rows = [StoredPreference(tenant="acme", user_id="oldlabel", pref_id=f"l{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="comparison", created_at=t, attributes={"segment": label})
            for i, (t, label) in enumerate(((1_700_000_000_123.0, "2023"), (1_750_000_000.0, "2025")))]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldlabel")
    assert r.status_code == 200 and r.json()["attributes"] == {"segment": "2025"}, r.text


def test_every_export_path_gives_an_old_rows_time_in_seconds_in_its_order(svc):
    """Session rows44. Review rows43 gave the preference file a time an older version stored in milliseconds as its
    seconds, but the full export and the pages (`GET .../preferences`, its cursor) still showed it as stored (1.7e12)
    and sorted it after every time in seconds, its newer rows before it; a time in micro- or nanoseconds (1.7e15,
    1.7e18), which the preference file wrote as null, likewise. Every path gives the seconds each meant, in order."""
    rt = svc.runtime
    times = (1_700_000_300_000_000_000.0, 1_700_000_200_000_000.0, 1_700_000_100_123.0, 1_700_000_000.5)  # ns, us, ms, s
    rows = [StoredPreference(tenant="acme", user_id="oldunits", pref_id=f"u{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="choice", created_at=t) for i, t in enumerate(times)]
    stored_as_an_older_version_stored(rt, rows)
    want = [("u3", 1_700_000_000.5), ("u2", 1_700_000_100.123), ("u1", 1_700_000_200.0), ("u0", 1_700_000_300.0)]
    with svc.client("acme") as c:
        full = c.get("/v1/users/oldunits/export")
        file = c.get("/v1/users/oldunits/export", params={"format": "preferences"})
        first = c.get("/v1/users/oldunits/preferences", params={"limit": 2}).json()
        second = c.get("/v1/users/oldunits/preferences", params={"limit": 2, "after": first["next_after"]}).json()
    assert full.status_code == 200 and file.status_code == 200, (full.text, file.text)
    lines = [json.loads(line) for line in full.text.splitlines()]
    assert [(x["pref_id"], x["created_at"]) for x in lines if x["type"] == "preference"] == want, lines
    assert [(x["pref_id"], x["created_at"]) for x in map(json.loads, file.text.splitlines())] == want, file.text
    assert [(p["pref_id"], p["created_at"]) for p in first["data"] + second["data"]] == want, (first, second)


def test_a_walk_by_cursor_passes_rows_an_older_version_stored_with_an_infinite_or_nan_time(svc):
    """Session rows44. Imports before session rows42 stored any number a reader gave (JSON's 1e999 is inf; a Parquet
    column may hold NaN); a page ending on such a row gave a `next_after` holding null (JSON has no inf), which the next
    request refused as "not a cursor this service wrote" (400), and a cursor on an infinite time passed over the NaN
    rows after it. Every row is walked once, in the order of a whole page."""
    rt = svc.runtime
    times = (float("inf"), float("nan"), 1_700_000_000.0, float("-inf"), float("inf"), 1e300)
    import pyarrow as pa

    from pluralign.store.schemas import SCHEMA_VERSION

    vec = [0.1] * rt.store.dim
    rows = [{"tenant": "acme", "user_id": "oldinf", "pref_id": f"f{i}", "prompt": f"Tea {i}?", "chosen": "Green tea.",
             "rejected": "Black coffee.", "tie": False, "margin": None, "kind": "choice", "source": None, "created_at": t,
             "attributes": "{}", "prompt_vec": vec, "chosen_vec": vec, "rejected_vec": vec, "schema_version": SCHEMA_VERSION}
            for i, t in enumerate(times)]
    rt.store.preferences.add(pa.Table.from_pylist(rows, schema=rt.store.schemas["preferences"]))  # as it stored them: no check
    walked, after = [], None
    with svc.client("acme") as c:
        whole = c.get("/v1/users/oldinf/preferences").json()
        for _ in range(len(rows) + 1):
            r = c.get("/v1/users/oldinf/preferences", params={"limit": 1, **({"after": after} if after else {})})
            assert r.status_code == 200, r.text
            walked += [p["pref_id"] for p in r.json()["data"]]
            if (after := r.json()["next_after"]) is None:
                break
    assert walked == [p["pref_id"] for p in whole["data"]] and sorted(walked) == sorted(r["pref_id"] for r in rows), walked


def test_a_cursor_an_earlier_version_wrote_on_a_millisecond_row_is_a_400_not_the_walks_end(svc):
    """Review ro44. Before rows44 the pages sorted a millisecond time as stored (after every time in seconds) and a
    cursor held it so; now the pages read it as its seconds, and such a cursor, 1.7e12, sorted after every row: its
    page was empty with `next_after` null, the end of the walk, so a client walking across the upgrade stopped short
    of the rows after it, without a word. It cannot be placed in the new order (it may have passed rows that now sort
    after it): a 400 naming `after` says to walk again from the first page."""
    import base64

    import msgspec

    rt = svc.runtime
    times = (1_700_000_000.0, 1_700_000_100_000.0, 1_700_000_200_000.0)  # seconds, then two in milliseconds
    rows = [StoredPreference(tenant="acme", user_id="oldcursor", pref_id=f"c{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="choice", created_at=t) for i, t in enumerate(times)]
    stored_as_an_older_version_stored(rt, rows)
    old = base64.urlsafe_b64encode(msgspec.json.encode((times[1], "c1"))).rstrip(b"=").decode()  # as that version wrote it
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldcursor/preferences", params={"limit": 1, "after": old})
        first = c.get("/v1/users/oldcursor/preferences", params={"limit": 2}).json()
        rest = c.get("/v1/users/oldcursor/preferences", params={"limit": 2, "after": first["next_after"]}).json()
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "after" and "an earlier version" in error["message"] and "first page" in error["message"], error
    assert [p["pref_id"] for p in first["data"] + rest["data"]] == ["c0", "c1", "c2"] and rest["next_after"] is None


def test_a_row_of_mixed_trl_forms_or_a_score_as_text_an_older_version_stored_exports_as_trl_reads_it(svc, hf, tmp_path):
    """Session trl55. Since then an import refuses a prompt of another form than its answers and a score that is no
    number (`pluralign.data.io.extra_type_problem`); before, such rows were stored with their TRL form and the export
    wrote them back as they came: TRL's DPO trainer fails on the file (`prompt + chosen`, text plus a list), `datasets`
    reads its `score_chosen` as a `Json` column, and the file no longer imported (a 400 naming `line 1.prompt`), into
    another tenant or into the same user. Such a row is exported in the conversational form with the same text (a text
    prompt as one user message, a text answer as one assistant message), a score of another type left out; it imports
    anywhere, into its own user as the row held."""
    from pluralign.data.record import TrlRow

    rt = svc.runtime
    ask, milk = {"role": "user", "content": "Milk or lemon?"}, {"role": "assistant", "content": "Milk."}
    forms = [TrlRow(prompt="Tea or coffee?", chosen=[{"role": "assistant", "content": "Tea."}], rejected=[{"role": "assistant", "content": "Coffee."}],
                    extra={"score_chosen": "high", "score_rejected": 2.0, "id": "t-1"}),
             TrlRow(prompt=[ask], chosen="Milk.", rejected="Lemon.", extra={"score_chosen": 7.5, "chosen_rating": [4, "n/a"]})]
    rows = [StoredPreference(tenant="acme", user_id="oldforms", pref_id=f"f{i}", prompt=prompt, chosen=chosen, rejected=rejected,
                             kind="comparison", created_at=1_700_000_000.0 + i, trl=trl)
            for i, (trl, (prompt, chosen, rejected)) in enumerate(zip(forms, [("Tea or coffee?", "Tea.", "Coffee."), ("Milk or lemon?", "Milk.", "Lemon.")],
                                                                     strict=True))]
    stored_as_an_older_version_stored(rt, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldforms/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        again = c.post("/v1/users/oldforms/import", content=r.content, headers={"content-type": "application/x-ndjson"})
    assert again.status_code == 201 and sorted(again.json()["already_stored"]) == ["f0", "f1"], again.text
    lines = sorted((json.loads(text) for text in r.text.splitlines()), key=lambda line: line["pref_id"])
    assert lines[0]["prompt"] == [{"role": "user", "content": "Tea or coffee?"}] and lines[0]["chosen"] == forms[0].chosen, lines[0]
    assert (lines[0]["score_rejected"], lines[0]["id"]) == (2.0, "t-1") and "score_chosen" not in lines[0], lines[0]
    assert (lines[1]["prompt"], lines[1]["chosen"], lines[1]["rejected"]) == ([ask], [milk], [{"role": "assistant", "content": "Lemon."}]), lines[1]
    assert lines[1]["score_chosen"] == 7.5 and "chosen_rating" not in lines[1], lines[1]
    export = tmp_path / "oldforms.jsonl"
    export.write_bytes(r.content)
    features = hf.run("ds = datasets.load_dataset('json', data_files=path, split='train', cache_dir=cache)\n"
                      "result = {name: repr(feature) for name, feature in ds.features.items()}", path=str(export), cache=str(tmp_path / "hf"))
    assert features["score_chosen"] == "Value('float64')" and features["prompt"].startswith("List("), features
    with svc.client("globex") as c:  # the file moved to another tenant (or service)
        imported = c.post("/v1/users/oldforms/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201 and sorted(imported.json()["stored"]) == ["f0", "f1"], imported.text
        page = c.get("/v1/users/oldforms/preferences").json()
    assert sorted((p["prompt"], p["chosen"]) for p in page["data"]) == [("Milk or lemon?", "Milk."), ("Tea or coffee?", "Tea.")], page


def test_a_score_an_older_version_stored_as_the_text_of_a_number_exports_as_that_number(svc):
    """Review trl55. Older releases stored a score as it came, the text of a number too (`"8.5"`: a CSV made Parquet,
    the case session trl55 names); since trl55 the export left every such score out, so a user moved through their
    export to another tenant or service lost them all. Now the text of a JSON number is exported as that number (a
    rating's items too); text that spells none (`"high"`, `"NaN"`, `"1e999"`) is left out as before. The file imports
    into the same user as the rows held, and elsewhere with the numbers."""
    from pluralign.data.record import TrlRow

    extras = [{"score_chosen": "8.5", "score_rejected": " -2 ", "chosen_rating": ["4", 5.5], "rejected_rating": [["3", "n/a"]]},
              {"score_chosen": "NaN", "score_rejected": "1e999", "chosen_rating": "1e2", "id": "7"}]
    rows = [StoredPreference(tenant="acme", user_id="oldscores", pref_id=f"s{i}", prompt="Tea or coffee?", chosen=f"Tea {i}.", rejected=f"Coffee {i}.",
                             kind="comparison", created_at=1_700_000_000.0 + i,
                             trl=TrlRow(prompt="Tea or coffee?", chosen=f"Tea {i}.", rejected=f"Coffee {i}.", extra=extra))
            for i, extra in enumerate(extras)]
    stored_as_an_older_version_stored(svc.runtime, rows)
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldscores/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        again = c.post("/v1/users/oldscores/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert again.status_code == 201 and sorted(again.json()["already_stored"]) == ["s0", "s1"], again.text
    first, second = sorted((json.loads(text) for text in r.text.splitlines()), key=lambda line: line["pref_id"])
    assert (first["score_chosen"], first["score_rejected"], first["chosen_rating"]) == (8.5, -2, [4, 5.5]), first
    assert "rejected_rating" not in first, first
    assert second["chosen_rating"] == 100.0 and second["id"] == "7" and not {"score_chosen", "score_rejected"} & second.keys(), second
    with svc.client("globex") as c:
        assert c.post("/v1/users/oldscores/import", content=r.content).status_code == 201
        page = c.get("/v1/users/oldscores/preferences").json()["data"]
    assert sorted(p["trl"]["extra"].get("score_chosen", 0) for p in page) == [0, 8.5], page


def test_the_compare_pair_names_two_answers_a_choice_can_record(svc):
    """Session breakC62. Chat's `pluralign.compare` chose its pair among every returned choice: a blank one (`""`, a Hangul
    filler) or a second spelling of another (a zero-width space inside) was as good a pair member as any, and was asked
    about ([`""`, `"No."`] with 0.88 bits, ["Sure, ...", "\\u3164"]); the user's pick on it was then refused (400 naming
    `chosen_index`: "a blank answer", "nothing to compare"), so the question the service chose could not be answered.
    The pair is now chosen among the choices a `choice` records (as next-comparison's pairs are): each visible
    answer once, and none when fewer than two remain."""
    from pluralign.data.text import answer_key, is_blank

    svc.keys.setdefault("cmpblank", svc.runtime.keys.issue("cmpblank"))  # a tenant of its own: no other test's users pooled
    sets = [["Sure, I can help with a long and detailed plan for that.", "", "Yes.", "No."],
            ["Sure, I can help with a long and detailed plan for that.", "\u3164", "Yes.", "No."],
            ["Sure, I can help.", "Sure, I can help.\u200b", "", "\u3164"]]
    with svc.client("cmpblank") as c:
        for n, texts in enumerate(sets):
            body = chat(c, f"asked{n}", texts)
            pair = body["pluralign"]["compare"]
            if n < 2:
                assert pair is not None, body["pluralign"]  # two answers a person tells apart: still asked about
            if pair is None:
                continue
            got = [body["choices"][i]["message"]["content"] for i in pair]
            assert not any(is_blank(t) for t in got) and answer_key(got[0]) != answer_key(got[1]), (texts, got)
            r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": pair[1], "shown": pair})
            assert r.status_code == 201, r.text


def test_a_blank_answer_or_a_second_spelling_is_ranked_after_every_answer_that_can_be_picked(svc):
    """Session breakC62. Reranking ordered the candidates by their reward alone: a Hangul filler's "\\u3164" (nothing
    visible) was returned as `choices[1]` of ["Yes.", "\\u3164", "No.", "Maybe."] with "Yes." and "Maybe." left out, so
    the user saw an empty choice they could neither pick nor rate (a 400 naming `chosen_index` or `response_id`), and
    with `n` 1 it could be the one answer served. Answers a `choice` records (each visible answer once) now come
    first, best-ranked first; blank ones and second spellings follow, reranked or not."""
    from pluralign.data.text import answer_key, is_blank

    ranked = {"rerank": True, "candidates": 4, "styles": False}
    cases = [(["Yes.", "\u3164", "No.", "Maybe."], ranked, 2), (["Yes.", "\u3164", "No.", "Maybe."], ranked, 3),
             (["Sure.", "Sure.\u200b", "No.", "Hmm."], ranked, 3), (["\u3164", "", "", "Yes."], ranked, 1),
             (["", "Yes."], {"styles": False}, 2),  # not reranked: generation order, the blank one after
             (["Sure.", "Sure.\u200b", "No.", "Hmm."], {"styles": False, "candidates": 4}, 3)]  # and the second spelling after "Hmm."
    with svc.client("acme") as c:
        for texts, options, n in cases:
            FixedGenerator.texts = texts
            r = c.post("/v1/chat/completions", json={**CHAT, "n": n, "pluralign": options, "user": "visiblefirst"})
            assert r.status_code == 200, r.text
            got = [ch["message"]["content"] for ch in r.json()["choices"]]
            picks = min(n, len({answer_key(t) for t in texts if not is_blank(t)}))  # as many as the candidates hold
            assert not any(is_blank(t) for t in got[:picks]), (texts, got)
            assert len({answer_key(t) for t in got[:picks]}) == picks, (texts, got)


def test_a_reranked_chat_embeds_and_scores_its_visible_answers_only(svc, monkeypatch):
    """left63 (review breakC62 left it): a reranked chat embedded every candidate, blank ones included, though
    `pickable_first` serves them after the visible ones and `compare` never names them: an encoder's work for nothing
    (and, with an embeddings server that refuses an empty input, a 503 for the whole chat). Now the encoder is given the
    visible answers only; the response keeps its shape (every choice, the reward, blank ones last)."""
    encoder = svc.runtime.encoder
    embedded: list[str] = []
    encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, *a, **kw: embedded.extend(texts) or encode(texts, *a, **kw))
    FixedGenerator.texts = ["Sure,", "", "\u3164", "Yes."]
    with svc.client("acme") as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "user": "blankembed", "pluralign": {"styles": False, "rerank": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t for t in embedded if t in FixedGenerator.texts] == ["Sure,", "Yes."]  # before: all four, the blank ones too
    assert sorted(c["message"]["content"] for c in body["choices"][:2]) == ["Sure,", "Yes."]
    assert sorted(c["message"]["content"] for c in body["choices"][2:]) == ["", "\u3164"]
    assert isinstance(body["pluralign"]["reward"], float) and len(body["pluralign"]["generation_index"]) == 4
