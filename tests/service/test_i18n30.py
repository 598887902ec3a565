"""Users who do not write in English, over real HTTP: the same text in NFC and NFD is one answer
(a comparison of the two, an edit that only recomposes, a choice between the two spellings), what
is stored comes back byte for byte (export and import), and an error repeating a client's field
name never cuts an emoji or a letter with its marks in two."""

from __future__ import annotations

import json
import unicodedata

import pytest
import regex

from tests.service.tiny import fixed_answers, fixed_service, stated_length_order

NFC = "Café crème, s'il vous plaît."
NFD = unicodedata.normalize("NFD", NFC)
TEXTS = [  # scripts a product has users in, each as written (some NFD on purpose)
    "今天天气很好，我们去公园吧。", "日本語のテキストです。", "مرحبا بالعالم، كيف حالك؟", "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?", "Привет, мир! Как дела?", "👩🏽‍💻 ships 🏳️‍🌈 and 👨‍👩‍👧‍👦", NFD,
    unicodedata.normalize("NFD", "한국어 문장입니다."), "zero\u200bwidth\u200djoiner and RTL mark \u200f here", "Mixed: 東京 in Москва مع עברית",
]


FixedGenerator = fixed_answers([NFC, NFD, "Tea."])


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    from service.admin.controllers import ADMIN_HANDLERS

    with fixed_service(tmp_path_factory.mktemp("i18n"), tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator,
                       admin_handlers=ADMIN_HANDLERS) as service:
        yield service


def chat(client, user: str, texts: list[str]) -> dict:
    FixedGenerator.texts = texts
    r = client.post("/v1/chat/completions", json={"model": "pluralign", "n": len(texts), "max_tokens": 3, "user": user,
                                                  "pluralign": {"styles": False}, "messages": [{"role": "user", "content": "Un café ?"}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_comparison_of_one_text_in_nfc_and_nfd_is_refused_as_the_same_answer(svc):
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "nfd1", "prompt": "Un café ?", "chosen": NFC, "rejected": NFD})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rejected", r.text


def test_an_edit_that_only_changes_the_normal_form_is_refused_as_identical(svc):
    with svc.client("acme") as c:
        body = chat(c, "nfd2", [NFC])
        r = c.post("/v1/feedback", json={"type": "edit", "response_id": body["id"], "edited": NFD})
    assert r.status_code == 400 and r.json()["error"]["param"] == "edited", r.text


def test_a_choice_compares_with_each_answer_once_whatever_its_normal_form(svc):
    with svc.client("acme") as c:
        body = chat(c, "nfd3", [NFC, NFD, "Tea."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        assert sorted(texts) == sorted([NFC, NFD, "Tea."])  # served as generated, not normalised
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("Tea.")})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/nfd3/preferences").json()["data"]
    assert len(rows) == 1 and rows[0]["chosen"] == "Tea." and rows[0]["rejected"] in (NFC, NFD), rows


def test_texts_in_every_script_come_back_byte_for_byte_through_export_and_import(svc):
    with svc.client("acme") as c:
        for i, text in enumerate(TEXTS):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "script1", "prompt": TEXTS[-1 - i], "chosen": text,
                                             "rejected": f"{text} (2)", "attributes": {"langue": "français", "группа": "ملصق"}})
            assert r.status_code == 201, r.text
        exported = c.get("/v1/users/script1/export", params={"format": "preferences"})
        assert exported.status_code == 200
        lines = [json.loads(line) for line in exported.content.decode("utf-8").splitlines()]
        assert sorted(line["chosen"] for line in lines) == sorted(TEXTS)
        import io

        import pandas as pd
        import pyarrow.json as pa_json

        assert sorted(pd.read_json(io.BytesIO(exported.content), lines=True)["chosen"]) == sorted(TEXTS)
        assert sorted(pa_json.read_json(io.BytesIO(exported.content)).column("chosen").to_pylist()) == sorted(TEXTS)
        moved = "".join(json.dumps({**line, "user_id": "script2"}, ensure_ascii=False) + "\n" for line in lines).encode()
        r = c.post("/v1/users/script2/import", content=moved, headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code in (200, 201), r.text
        again = c.get("/v1/users/script2/export", params={"format": "preferences"}).content.decode("utf-8")
    assert sorted(json.loads(line)["prompt"] for line in again.splitlines()) == sorted(TEXTS)


@pytest.mark.parametrize("name", ["👨‍👩‍👧‍👦" * 20, "x" + "e\u0301" * 40, "🏳️‍🌈" * 17])
def test_an_error_repeating_a_long_field_name_cuts_it_between_graphemes(svc, name):
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "u", "prompt": "p", "chosen": "a", "rejected": "b", name: 1})
    assert r.status_code == 400, r.text
    param = r.json()["error"]["param"]
    shown = param.removesuffix("...").removesuffix("…")
    assert shown and name.startswith(shown) and regex.fullmatch(r"\X*", shown)
    assert regex.findall(r"\X", shown) == regex.findall(r"\X", name)[: len(regex.findall(r"\X", shown))], param


SHORT_LONG = {  # (short, long) answers in scripts whose words are not A-Z (Chinese and Japanese write no spaces)
    "zh": ("可以。", "可以。我们明天早上去公园散步，然后一起吃午饭，下午再去博物馆看看新的展览。"),
    "ja": ("はい。", "はい。明日の朝は公園を散歩して、それから一緒に昼ご飯を食べて、午後は美術館に行きましょう。"),
    "ru": ("Да.", "Да. Завтра утром мы пойдём гулять в парк, потом вместе пообедаем, а днём сходим в музей."),
    "ar": ("نعم.", "نعم. غدا صباحا سنذهب إلى الحديقة، ثم نتناول الغداء معا، وبعد الظهر نزور المتحف."),
    "he": ("כן.", "כן. מחר בבוקר נטייל בפארק, אחר כך נאכל ארוחת צהריים יחד, ואחר הצהריים נלך למוזיאון."),
    "hi": ("हाँ।", "हाँ। कल सुबह हम पार्क में टहलेंगे, फिर साथ में खाना खाएंगे और दोपहर में संग्रहालय जाएंगे।"),
}


@pytest.mark.parametrize("lang", sorted(SHORT_LONG))
def test_a_stated_length_preference_acts_on_answers_in_any_script(svc, lang):
    """PATCH stated-preferences `length: less` / `more`, then score a short and a long answer: the
    stated preference orders them for either user (the `length` feature counted only A-Z words: every
    Chinese, Russian, Arabic, Hebrew or Hindi answer had length 0, and a stated preference did nothing)."""
    short, long = SHORT_LONG[lang]
    with svc.client("acme") as c:
        order = stated_length_order(c, f"len-{lang}", "明天做什么？", short, long)
    assert order == {"less": True, "more": False}, order


def test_the_dashboard_shows_stored_answers_in_rtl_scripts_isolated_and_says_its_charset(svc):
    with svc.client("globex") as c:  # a tenant of these comparisons only: the page shows its stored answers
        for text in TEXTS[2:4]:  # Arabic and Hebrew
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "rtl1", "prompt": text, "chosen": text + " ١٢٣", "rejected": "OK 123"})
            assert r.status_code == 201, r.text
    with svc.client("admin") as admin:
        page = admin.get("/admin/dashboard", params={"tenant": "globex"})
    assert page.status_code == 200 and page.headers["content-type"].replace(" ", "").lower() == "text/html;charset=utf-8"
    shown = [t for t in (*TEXTS[2:4], *(f"{t} ١٢٣" for t in TEXTS[2:4]), "OK 123") if t in page.text]
    assert shown and all(f"<bdi>{t}</bdi>" in page.text for t in shown), page.text[-3000:]


def test_an_audit_counts_a_group_label_in_nfc_and_nfd_as_one_group(svc):
    """Feedback over HTTP whose group label (and the attribute's name) some clients send in NFD: the
    audit over the store (what `pluralign audit --store` and the admin's audit job read) sees one
    group per label, named in NFC, not two groups that each look smaller than they are."""
    from pluralign.fairness.store_source import comparisons_from_store

    region, city = "région", "Île-de-France"
    with svc.client("acme") as c:
        for i in range(4):
            name = unicodedata.normalize("NFD" if i % 2 else "NFC", region)
            label = unicodedata.normalize("NFC" if i < 2 else "NFD", city)
            r = c.post("/v1/feedback", json={"type": "comparison", "user": f"idf{i}", "prompt": "Où aller ?", "chosen": f"Paris {i}",
                                             "rejected": f"Lyon {i}", "attributes": {name: label}})
            assert r.status_code == 201, r.text
    svc.runtime.ingest.flush("acme")
    comparisons = comparisons_from_store(svc.runtime.store.uri, unicodedata.normalize("NFD", region), "acme")
    mine = {comparisons.groups[g] for g, u in zip(comparisons.group, comparisons.user, strict=True) if comparisons.users[u].startswith("acme/idf")}
    assert mine == {city}, mine


def test_next_comparison_never_asks_between_two_spellings_of_one_answer_nor_again_in_another(svc):
    with svc.client("acme") as c:
        ask = lambda user, answers: c.post(f"/v1/users/{user}/next-comparison", json={"pool": [{"prompt": "Un café ?", "answers": answers}]})  # noqa: E731
        r = ask("nc1", [NFC, NFD])
        assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text  # the same answer twice: nothing to ask
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "nc2", "prompt": "Un café ?", "chosen": NFC, "rejected": "Un thé."})
        assert r.status_code == 201, r.text
        r = ask("nc2", [NFD, "Un thé."])  # asked already, in the other spelling
    assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text


def test_an_unknown_stated_preference_with_a_long_emoji_name_is_named_cut_between_graphemes(svc):
    name = "x" + "👩🏽‍💻" * 30
    with svc.client("acme") as c:
        r = c.patch("/v1/users/st1/stated-preferences", json={"preferences": {name: "less"}})
    assert r.status_code == 400, r.text
    shown = r.json()["error"]["param"].removeprefix("preferences.").removesuffix("...")
    assert shown and name.startswith(shown)
    assert regex.findall(r"\X", shown) == regex.findall(r"\X", name)[: len(regex.findall(r"\X", shown))], shown


@pytest.mark.parametrize("route", ["audit", "job"])
def test_an_attribute_named_in_any_script_is_audited_by_that_name(svc, route):
    """Session newsvc55: feedback takes attributes named in any script (`région`, above), and docs/api.md says the
    audit reads them in NFC, but both admin routes that audit (`GET /admin/audits/fairness?group_by=`, a job of kind
    `audit`) held `group_by` to the user-id rule (ASCII letters, digits and `._@:+-`): `group_by=région` was a 400, so
    such an attribute could never be audited over HTTP. Now `group_by` is any name an attribute may have (NFD too), one
    argument of the audit worker; a blank one, one holding NUL (no argument can carry it), one starting with `-` (as
    every job's names) or over 256 characters is the 400 naming it."""
    region = "région" if route == "audit" else "年齢層"
    with svc.client("acme") as c:
        for i in range(4):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": f"grp{route}{i}", "prompt": "Où aller ?", "chosen": f"Paris {i}",
                                             "rejected": f"Lyon {i}", "attributes": {region: "Nord" if i % 2 else "Sud"}})
            assert r.status_code == 201, r.text
    asked = unicodedata.normalize("NFD", region)  # as some clients spell it: the attribute sent in NFC
    svc.runtime.ingest.flush("acme")  # an audit covers every acknowledged row: with wait=0, a 503 while they are moved
    with svc.client("admin") as admin:
        if route == "audit":
            r = admin.get("/admin/audits/fairness", params={"group_by": asked, "tenant": "acme", "min_comparisons": 0, "wait": 0})
        else:
            r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": asked, "tenant": "acme", "min_comparisons": 0}})
        assert r.status_code in (200, 201, 202), r.text
        job = r.json().get("job", r.json())
        assert job["params"]["group_by"] == asked, job
        for bad in ("", "\u200b", "a\x00b", "-x", "x" * 257):
            if route == "audit":
                r = admin.get("/admin/audits/fairness", params={"group_by": bad, "wait": 0})
            else:
                r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": bad}})
            assert r.status_code == 400 and r.json()["error"]["param"] in ("group_by", "params.group_by"), r.text


@pytest.mark.slow  # the audit's worker runs (~8 s); make test-cli
def test_an_audit_by_an_attribute_named_in_nfd_reports_its_groups_under_the_nfc_name(svc):
    """The audit above run to its end over HTTP: `group_by=région` sent in NFD groups the comparisons by the attribute
    sent in NFC, and the report names it in NFC (until session newsvc55 the request was a 400)."""
    region = "région"
    with svc.client("globex") as c:
        for i in range(4):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": f"nfd{i}", "prompt": "Où aller ?", "chosen": f"Paris {i}",
                                             "rejected": f"Lyon {i}", "attributes": {region: "Nord" if i % 2 else "Sud"}})
            assert r.status_code == 201, r.text
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness", params={"group_by": unicodedata.normalize("NFD", region), "tenant": "globex",
                                                        "min_comparisons": 0, "wait": 120})
    assert r.status_code == 200, r.text
    report = r.json()
    assert unicodedata.normalize("NFC", report["group_by"]) == region and {g["group"]: g["users"] for g in report["groups"]} == {"Nord": 2, "Sud": 2}, report


@pytest.mark.parametrize("path, body, param", [
    ("/v1/feedback", {"type": "comparison", "user": "u", "prompt": "p", "chosen": "a", "rejected": "b", "\u202emodel\x1b[2J": 1},
     "\\u202emodel\\x1b[2J"),
    ("/v1/chat/completions", {"model": "pluralign", "messages": [{"role": "user", "content": "Hi"}], "pluralign": {"\u2067x\u2069": 1}},
     "pluralign.\\u2067x\\u2069"),
    ("/v1/\u202enope", None, None),
])
def test_an_error_repeating_a_client_s_name_escapes_its_control_and_bidi_characters(svc, path, body, param):
    """Review of newsvc55: an unknown field named with a bidi override (`"\\u202emodel"`) came back raw in the error's
    `param` and `message`, so an app showing the message showed it reordered ("Trojan Source"), and a terminal escape
    (ESC) in a name or a path reached whoever printed it; every other error repeats a client's value escaped (`shown`:
    '\\u202e...'). Now a field's name and a path are repeated with their control characters (C0, DEL, C1) and bidi
    controls written as their escapes, other characters as sent (a ZWJ inside an emoji stays)."""
    with svc.client("acme") as c:
        r = c.post(path, json=body) if body is not None else c.get(path)
    assert r.status_code in (400, 404), r.text
    error = r.json()["error"]
    for control in ("\u202e", "\u2067", "\u2069", "\x1b"):
        assert control not in error["message"] and control not in (error["param"] or ""), error
    assert error["param"] == param and (param is None or f"`{param}`" in error["message"]), error
    if param is None:
        assert "`GET /v1/\\u202enope`" in error["message"], error


@pytest.mark.parametrize("name", ["n\x00ul", "seg\nment", "\x1b[31mred", "del\x7f", "c1\x85", "seg\u2028ment", "par\u2029a"])
def test_an_attribute_name_holding_a_control_character_is_refused_where_it_comes_in(svc, name):
    """Review of newsvc55: feedback and an import took an attribute name holding NUL, which an audit's `group_by` refuses
    (no command-line argument carries it), or another control character (a newline split the audit's error for
    any misspelt `group_by` of the tenant across lines: a 422 quoting a fragment of the names, not the 400 naming
    `group_by`): an attribute no audit could read. Both refuse it now, a 400 naming `attributes` (`line N.attributes`),
    nothing stored. Review of left56: a line or paragraph separator (U+2028, U+2029: no control character, but
    `str.splitlines`, with which the job runner reads a worker's lines, ends a line at each) split that error the same
    way, and was taken."""
    user = f"ctl{sum(map(ord, name))}"
    comparison = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"région": "Nord", name: "x"}}
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": user, **comparison})
        assert r.status_code == 400 and r.json()["error"]["param"] == "attributes", r.text
        assert "control character" in r.json()["error"]["message"] or "separator" in r.json()["error"]["message"], r.text
        assert name not in r.json()["error"]["message"], r.text
        r = c.post(f"/v1/users/{user}/import", content=json.dumps(comparison), headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.attributes", r.text
        svc.runtime.ingest.flush("acme")
        assert c.get(f"/v1/users/{user}").status_code == 404  # nothing stored


def test_a_row_stored_with_a_control_character_in_an_attribute_name_stays_readable(svc):
    """What an older release stored under such a name is still exported and counted (the check is where rows come in)."""
    from pluralign.store.tables import StoredPreference

    rt = svc.runtime
    old = StoredPreference(tenant="acme", user_id="ctlold", pref_id="ctl-old", prompt="Tea?", chosen="Yes.", rejected="No.",
                           kind="comparison", created_at=1_700_000_000.0, attributes={"n\x00ul": "x", "seg\nment": "y"})
    vectors = rt.encoder.encode([old.prompt, old.chosen, old.rejected])
    rt.store.add_preferences([old], vectors[:1], vectors[1:2], vectors[2:])
    with svc.client("acme") as c:
        assert c.get("/v1/users/ctlold").json()["counts"]["preferences"] == 1
        lines = [json.loads(line) for line in c.get("/v1/users/ctlold/export").text.splitlines()]
    assert [line["attributes"] for line in lines if line["type"] == "preference"] == [{"n\x00ul": "x", "seg\nment": "y"}], lines


def test_a_preference_file_holding_a_row_stored_with_a_control_character_in_an_attribute_name_re_imports(svc):
    """Review of review newsvc55: feedback and imports refuse an attribute name holding a control character now, but
    the preference file (`format=preferences`: "rows an import would refuse that an older version stored are left out,
    so the file re-imports") still wrote such a row, and the user's own file came back a 400 naming `line 1.attributes`,
    into the same user too (before that check: `already_stored`). Such a row is left out of the preference file, as a
    blank one is; the full export (`format=all`) still holds it."""
    from pluralign.store.tables import StoredPreference

    rt = svc.runtime
    old = StoredPreference(tenant="acme", user_id="ctlfile", pref_id="ctl-file", prompt="Tea?", chosen="Yes.", rejected="No.",
                           kind="comparison", created_at=1_700_000_000.0, attributes={"seg\nment": "y"})
    vectors = rt.encoder.encode([old.prompt, old.chosen, old.rejected])
    rt.store.add_preferences([old], vectors[:1], vectors[1:2], vectors[2:])
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "ctlfile", "prompt": "Coffee?", "chosen": "No.",
                                         "rejected": "Yes.", "attributes": {"segment": "a"}})
        assert r.status_code == 201, r.text
        svc.runtime.ingest.flush("acme")
        file = c.get("/v1/users/ctlfile/export", params={"format": "preferences"}).text
        assert [json.loads(line)["prompt"] for line in file.splitlines()] == ["Coffee?"], file
        r = c.post("/v1/users/ctlfile/import", content=file, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201 and r.json()["stored"] == [] and len(r.json()["already_stored"]) == 1, r.text
        everything = [json.loads(line) for line in c.get("/v1/users/ctlfile/export").text.splitlines()]
    assert sorted(line["prompt"] for line in everything if line["type"] == "preference") == ["Coffee?", "Tea?"], everything


@pytest.mark.slow  # the audit's worker runs to its end (4-5 s); make test-cli. Fast: test_break18_audit's CLI test of the same
def test_an_audit_by_a_misspelt_name_lists_the_stored_names_escaped_in_its_400(svc):
    """A name an older release stored with a newline in it (above) made every misspelt `group_by` of its tenant a 422
    `audit_failed` quoting the last line of the worker's error, a fragment of the names that exist ("ment"), rather than
    the 400 naming `group_by` (the error is read from the worker's last line). The names are listed with their control
    characters escaped, as an error repeats a client's name (a bidi control is not listed: names are read as answers
    are compared, without it). Review of left56: a line separator (U+2028), which feedback took, split the error the
    same way (`str.splitlines`); escaped too."""
    from pluralign.store.tables import StoredPreference

    rt = svc.runtime
    old = StoredPreference(tenant="legacy55", user_id="ctlaudit", pref_id="ctl-audit", prompt="Tea?", chosen="Yes.", rejected="No.",
                           kind="comparison", created_at=1_700_000_000.0, attributes={"seg\nment": "y", "\u202eevil": "z", "sec\u2028tion": "w"})
    vectors = rt.encoder.encode([old.prompt, old.chosen, old.rejected])
    rt.store.add_preferences([old], vectors[:1], vectors[1:2], vectors[2:])
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness", params={"group_by": "segement", "tenant": "legacy55", "min_comparisons": 0, "wait": 60})
    assert r.status_code == 400 and r.json()["error"]["param"] == "group_by", r.text
    message = r.json()["error"]["message"]
    assert "seg\\nment" in message and "\u202e" not in message, message
    assert "sec\\u2028tion" in message and "\u2028" not in message, message  # review left56: a 422 quoting "tion" before


@pytest.mark.slow  # the audit's worker runs to its end (4-5 s); make test-cli. Fast: test_break18_audit's CLI test of the same
def test_a_misspelt_group_by_holding_a_newline_is_a_400_naming_group_by(svc):
    """Review of review newsvc55: a misspelt `group_by` holding a newline (`seg%0Amnt`) was a 422 `audit_failed` quoting
    the worker's last line (`mnt: no stored comparison ...`), not the 400 naming `group_by`: the worker repeated the
    name raw over two lines. The name is repeated with its control characters escaped, on one line."""
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "nlaudit", "prompt": "Tea?", "chosen": "Yes.",
                                         "rejected": "No.", "attributes": {"segment": "a"}})
        assert r.status_code == 201, r.text
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness", params={"group_by": "seg\nmnt", "tenant": "acme", "min_comparisons": 0, "wait": 60})
    assert r.status_code == 400 and r.json()["error"]["param"] == "group_by", r.text
    assert "\n" not in r.json()["error"]["message"], r.text


@pytest.mark.slow  # two audits run to their end (~10 s); make test-cli
def test_an_audit_by_one_attribute_spelt_in_nfd_is_compared_with_the_previous_one_spelt_in_nfc(svc):
    """Review of newsvc55: `group_by` may be spelt in NFC or NFD (one attribute, one set of groups, as the audit reads
    names), but an audit's change since the previous one (`previous_created_at`, `gap_change`) was drawn only from an
    audit whose `group_by` had the same code points: audited by `région` as one browser sent it, then as another
    did, the second said nothing of how the groups moved. The settings compared read the name as the audit does."""
    region = "région"
    svc.keys.setdefault("initech", svc.runtime.keys.issue("initech"))  # a tenant of its own: its audits alone
    with svc.client("initech") as c:
        for i in range(4):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": f"cmp{i}", "prompt": "Où aller ?", "chosen": f"Paris {i}",
                                             "rejected": f"Lyon {i}", "attributes": {region: "Nord" if i % 2 else "Sud"}})
            assert r.status_code == 201, r.text
    reports = []
    with svc.client("admin") as admin:
        for spelt in (region, unicodedata.normalize("NFD", region)):
            r = admin.get("/admin/audits/fairness", params={"group_by": spelt, "tenant": "initech", "min_comparisons": 0, "wait": 120})
            assert r.status_code == 200, r.text
            reports.append(r.json())
    assert reports[1]["previous_created_at"] == reports[0]["created_at"], reports[1]


@pytest.mark.parametrize("query", ["group_by=%FF", "group_by=r%E9gion", "tenant=acme&group_by=r%C3%A9gion%C3"])
def test_an_audit_by_a_group_by_that_is_no_utf_8_is_refused_before_a_job_is_queued(svc, query):
    """Review of review newsvc55: a query's bytes that are no UTF-8 (`%FF`, a Latin-1 `r%E9gion`, a character cut short)
    were read as U+FFFD, and an audit of an attribute no client can name was queued, its worker started to find no
    comparison with it. Now a 400 naming `group_by`, nothing queued."""
    with svc.client("admin") as admin:
        before = len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"])
        r = admin.get(f"/admin/audits/fairness?{query}&wait=0")
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "group_by" and "UTF-8" in error["message"] and "\ufffd" not in error["message"], error
        assert len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"]) == before


def test_an_escaped_name_and_the_same_characters_sent_are_repeated_apart(svc):
    """Session left56: an error repeated a name's control characters as their escapes but its backslashes as sent, so a
    field named ESC + `x` (escaped `\\x1bx`) and one named with the characters backslash, `x`, `1`, `b`, `x` came back
    as the same `param` and message: which was sent could not be told. A backslash is doubled now, as `repr` writes it."""
    params = []
    with svc.client("acme") as c:
        for name in ("\x1bx", "\\x1bx"):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "u", "prompt": "p", "chosen": "a", "rejected": "b", name: 1})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert f"`{error['param']}`" in error["message"], error
            params.append(error["param"])
    assert params == ["\\x1bx", "\\\\x1bx"], params


@pytest.mark.parametrize("name", ["seg\u202ement", "\u2066segment\u2069", "r\u202bégion\u202c"])
def test_an_attribute_name_holding_a_bidi_override_or_isolate_is_refused_where_it_comes_in(svc, name):
    """Session left56: feedback and an import refused an attribute name holding a control character but took one holding
    a bidi embedding, override or isolate (U+202A-E, U+2066-9), which reorders how the name reads on the dashboard and
    in an audit's report ("Trojan Source"). Both refuse it now, a 400 naming `attributes` (`line N.attributes`) that
    names the character by its code point, nothing stored; a right-to-left mark (U+200F) is still taken."""
    user = f"bidi{sum(map(ord, name))}"
    comparison = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"région": "Nord", name: "x"}}
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": user, **comparison})
        assert r.status_code == 400 and r.json()["error"]["param"] == "attributes", r.text
        message = r.json()["error"]["message"]
        assert "bidi control" in message and "U+20" in message and not regex.search(r"[\u202a-\u202e\u2066-\u2069]", message), message
        r = c.post(f"/v1/users/{user}/import", content=json.dumps(comparison), headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.attributes", r.text
        svc.runtime.ingest.flush("acme")
        assert c.get(f"/v1/users/{user}").status_code == 404  # nothing stored
        marked = {**comparison, "attributes": {"\u05d0\u05d6\u05d5\u05e8\u200f": "x"}}  # "area" in Hebrew, a right-to-left mark
        assert c.post("/v1/feedback", json={"type": "comparison", "user": user, **marked}).status_code == 201


def test_a_preference_file_leaves_out_a_row_stored_with_a_bidi_override_in_an_attribute_name(svc):
    """The preference file re-imports (docs/api.md): a row an older release stored under a name an import now refuses
    (a bidi override) is left out of it, as one with a control character is; the full export holds it."""
    from pluralign.store.tables import StoredPreference

    rt = svc.runtime
    old = StoredPreference(tenant="acme", user_id="bidifile", pref_id="bidi-file", prompt="Tea?", chosen="Yes.", rejected="No.",
                           kind="comparison", created_at=1_700_000_000.0, attributes={"seg\u202ement": "y"})
    vectors = rt.encoder.encode([old.prompt, old.chosen, old.rejected])
    rt.store.add_preferences([old], vectors[:1], vectors[1:2], vectors[2:])
    with svc.client("acme") as c:
        assert c.get("/v1/users/bidifile/export", params={"format": "preferences"}).text == ""
        everything = [json.loads(line) for line in c.get("/v1/users/bidifile/export").text.splitlines()]
    assert [line["attributes"] for line in everything if line["type"] == "preference"] == [{"seg\u202ement": "y"}], everything


@pytest.mark.parametrize("name", ["seg\u202ement", "n\x00ul", "sec\u2028tion"])
def test_the_cli_import_refuses_an_attribute_name_the_service_refuses_before_anything_is_sent(svc, tmp_path, capsys, name):
    """Review of left56: the service refuses an attribute name holding a control character, a line or paragraph
    separator or a bidi embedding, override or isolate, but `pluralign data import --url` sent the file a user at a
    time: a file whose second user's row held one stored the first user's rows, then stopped on the 400 (a file
    half-imported; an older release took the bidi names whole). Such a name is found in the file before anything is
    sent, an error naming its line and `attributes`, as a user id the service would refuse is."""
    from tests.unit.clitools import cli

    tag = f"clin{sum(map(ord, name))}"
    rows = [{"user_id": f"{tag}a", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"région": "Nord"}},
            {"user_id": f"{tag}b", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {name: "x"}}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", str(path), "--url", svc.url,
                         "--key", svc.keys["acme"])
    assert code == 2 and out == "", (code, out, err)
    assert f"--path {path}: line 2, field `attributes`: " in err and "nothing was sent" in err and name not in err, err
    svc.runtime.ingest.flush("acme")
    with svc.client("acme") as c:  # before: 404 for the second user only, the first's row stored
        assert c.get(f"/v1/users/{tag}a").status_code == 404
