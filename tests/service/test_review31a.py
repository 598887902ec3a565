"""Session 31's hostile review of request ids (obs30) and one answer in any spelling (i18n30): each case
failed before its fix. A browser reads the 400 of a malformed `X-Request-Id` (CORS), the feedback rows'
request ids survive many threads, a stored pair written in NFC and NFD is drawn once, and text that is
not Unicode (a lone UTF-16 surrogate) is refused where it enters the library."""

from __future__ import annotations

import ast
import logging
import threading
import time
import unicodedata
from types import SimpleNamespace

import numpy as np
import pytest

from pluralign.store import Store, StoredPreference

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):  # noqa: F811
    """One service for the HTTP cases (each server start costs seconds): CORS on, the admin routes,
    an adapter job due at every comparison."""
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.tiny import start_service

    server, service = start_service(tmp_path_factory.mktemp("review31a"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    cors_origins=(ORIGIN,), admin_handlers=ADMIN_HANDLERS, adapter_every=1, deletion_sweep_s=3600)
    with server:
        yield service


def test_a_browser_reads_the_refusal_of_a_malformed_request_id(live):
    """The 400 naming `X-Request-Id` carries the CORS headers every other answer has: without them a
    browser shows its client a network error instead of the reason (the 404 beside it had them)."""
    with live.client() as c:
        refused = c.get("/v1/models", headers={"Origin": ORIGIN, "X-Request-Id": "has space"})
        unrouted = c.get("/v1/nope", headers={"Origin": ORIGIN})
        elsewhere = c.get("/v1/models", headers={"Origin": "https://evil.example", "X-Request-Id": "has space"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "X-Request-Id", refused.text
    assert unrouted.status_code == 404 and unrouted.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert refused.headers.get("Access-Control-Allow-Origin") == ORIGIN, dict(refused.headers)
    assert "X-Request-Id" in [h.strip() for h in refused.headers["Access-Control-Expose-Headers"].split(",")]  # among others since browser43
    assert refused.json()["error"]["request_id"] == refused.headers["X-Request-Id"]
    assert elsewhere.status_code == 400 and "Access-Control-Allow-Origin" not in elsewhere.headers  # an origin not allowed


def test_feedback_rows_request_ids_are_kept_whatever_threads_remember_and_move_them(monkeypatch):
    """`remember` runs on the event loop, `per_request` on the ingest worker and on request threads that
    flush: one unguarded LRU between them raised KeyError / 'OrderedDict mutated during iteration'
    (a 500 on POST /v1/feedback, or the moved rows' refits skipped) and lost ids."""
    import sys

    from cachetools import LRUCache

    from service import requestid

    monkeypatch.setattr(requestid, "_CAUSES", LRUCache(maxsize=100))  # full at once: remember evicts as well
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often, as a loaded server's do
    errors, given = [], {}

    def sender(k: int) -> None:
        with requestid.as_request(f"req-{k}"):
            try:
                for i in range(20000):
                    requestid.remember([f"{k}-{i}"])
            except Exception as exc:  # noqa: BLE001 (the test reports it)
                errors.append(exc)

    def mover(k: int) -> None:
        hook = lambda rows: given.setdefault(rows[0].pref_id, requestid.current())  # noqa: E731
        try:
            for i in range(20000):
                requestid.per_request([hook], [SimpleNamespace(pref_id=f"{k}-{i}")])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=f, args=(k,)) for k in range(3) for f in (sender, mover)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors[:3]
    assert all(rid in (None, f"req-{pref.split('-')[0]}") for pref, rid in given.items())  # never another request's id
    assert len(requestid._CAUSES) <= 100


DIM = 8


def test_a_pair_stored_in_nfc_and_in_nfd_is_drawn_once(tmp_path):
    """`answers_sample` draws distinct pairs: two users' rows of one pair, one typed on macOS (NFD),
    were two pairs (the profile's examples and next-comparison's candidates held it twice)."""
    store = Store(str(tmp_path), "enc", DIM)
    answers = [("Café crème.", "Thé noir."), ("Crêpe.", "Gaufre."), ("Oui.", "Non.")]
    rows = []
    for user, form in (("mac", "NFD"), ("pc", "NFC")):
        for i, (chosen, rejected) in enumerate(answers):
            rows.append(StoredPreference(
                tenant="t", user_id=user, pref_id=f"{user}-{i}", prompt=unicodedata.normalize(form, "Un café ?"),
                chosen=unicodedata.normalize(form, chosen), rejected=unicodedata.normalize(form, rejected),
                kind="comparison", created_at=time.time()))
    vecs = np.random.default_rng(0).standard_normal((len(rows), DIM)).astype(np.float32)
    store.add_preferences(rows, vecs, vecs + 1, vecs - 1)
    _, drawn, _, _ = store.answers_sample("t", 100)
    pairs = [frozenset(unicodedata.normalize("NFC", a) for a in drawn[k : k + 2]) for k in range(0, len(drawn), 2)]
    assert sorted(map(sorted, pairs)) == sorted(sorted(p) for p in answers), drawn


@pytest.mark.parametrize("text", ["half an emoji \ud83d", "\udc00 a low half"])
def test_a_lone_surrogate_is_refused_where_a_preference_is_read(text):
    """JSON text cut by a UTF-16 slice (JavaScript's `slice`) holds "\\ud83d": Python's json reads it,
    msgspec (the service's bodies) refuses it. `read_rows` took it, and the store, the export and the
    encoder then failed on it ('surrogates not allowed') far from the row at fault."""
    from pluralign.data.io import PreferenceError, read_rows

    with pytest.raises(PreferenceError) as refused:
        read_rows([{"user_id": "u", "prompt": "p", "chosen": text, "rejected": "b"}])
    assert refused.value.field == "chosen" and "surrogate" in str(refused.value), str(refused.value)
    _, report = read_rows([{"user_id": "u", "prompt": "p", "chosen": text, "rejected": "b"},
                           {"user_id": "u", "prompt": "p", "chosen": "a", "rejected": "b"}], skip_bad=True)
    assert report.loaded == 1 and report.skipped == 1 and "surrogate" in report.errors[0]


FAMILY, THUMB = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F44D\U0001F3FD"


def whole_graphemes(shown: str, sent: str) -> bool:
    """`shown` is `sent`'s first clusters, none cut in two."""
    import regex

    clusters = regex.findall(r"\X", sent)
    return regex.findall(r"\X", shown) == clusters[: len(regex.findall(r"\X", shown))] and sent.startswith(shown)


@pytest.mark.parametrize("where", ["value", "query"])
def test_an_error_echoing_a_long_value_or_query_cuts_it_between_graphemes(live, where):
    """The echo of a value outside a field's choices and of a query value was cut at a fixed count of
    code points (`[:64]`, `[:24]`): inside an emoji's ZWJ sequence or skin tone, or inside the `\\u200d`
    Python writes for its joiner."""
    with live.client() as c:
        if where == "value":
            sent = "x" + FAMILY * 20
            r = c.post("/v1/chat/completions", json={"model": "pluralign", "messages": [{"role": sent, "content": "Hi"}]})
            shown = r.json()["error"]["message"].split("got ", 1)[1]
            shown = ast.literal_eval(shown).removesuffix("...")  # the value as Python writes it: '\\u200d' for a ZWJ
        else:
            sent = "1" + THUMB * 20
            r = c.get("/v1/users/u1/stated-preferences", params={"limit": sent})
            shown = r.json()["error"]["message"].split("got '", 1)[1].removesuffix("...'")
    assert r.status_code == 400, r.text
    assert shown != sent and len(shown) > 1 and whole_graphemes(shown, sent), (shown, r.json()["error"])


def test_a_generation_servers_long_error_is_cut_between_graphemes():
    """`RemoteGeneratorError` repeats the server's error, cut at 300 code points: it was `[:300]`, inside
    an emoji's ZWJ sequence when the server echoed the user's prompt (as vLLM's errors do)."""
    import http.server
    import json

    from pluralign.policy.remote import RemoteGenerator, RemoteGeneratorError, RemotePolicy

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": {"message": "prompt too long: " + FAMILY * 60, "type": "BadRequestError"}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = RemoteGenerator(f"http://127.0.0.1:{server.server_port}/v1", "m", policy=RemotePolicy(timeout_s=5, max_retries=0))
        with pytest.raises(RemoteGeneratorError) as refused:
            remote.generate([{"role": "user", "content": "Hi"}])
    finally:
        server.shutdown()
        server.server_close()
    # a 400 is the client's fault since remote49 (GenerationRefused, a RemoteGeneratorError): the server's own words
    shown = str(refused.value).split("refused it: ", 1)[1]
    assert FAMILY in shown and len(shown) <= 300, shown
    head = shown.rstrip("\u2026.")
    assert head.endswith(FAMILY) or not head.endswith(("\u200d", "\U0001F468", "\U0001F469", "\U0001F467")), head[-20:]


from tests.service.test_obs30_request_ids import collect, lines_of  # noqa: E402, F401 (the fixture)

MARKED_USER = "user-marker-Rv93"


@pytest.mark.parametrize("failure", ["storage", "unhandled"])
def test_a_failed_requests_log_line_names_the_route_not_the_users_id(live, collect, monkeypatch, failure):  # noqa: F811
    """A storage failure's line and an unhandled error's named the raw path, the user's id in it (the
    access log writes the route template: user ids are personal data); now the template, with the id."""
    from pluralign.store.failures import StoreUnavailable

    logs = collect()

    def broken(*args, **kwargs):
        if failure == "storage":
            raise StoreUnavailable("table users", "/data/store", "read", "full", "No space left on device")
        raise RuntimeError("a bug")

    monkeypatch.setattr(live.runtime.store, "get_user", broken)
    with live.client() as c:
        r = c.get(f"/v1/users/{MARKED_USER}", headers={"X-Request-Id": "fail-7"})
    assert r.status_code == (507 if failure == "storage" else 500), r.text
    failed = [rec for rec in logs.records if rec.levelno >= logging.ERROR and rec.request_id == "fail-7"]
    assert failed and "/v1/users/{user_id}" in failed[0].getMessage(), [rec.getMessage() for rec in failed]
    assert not [line for line in lines_of(logs) if MARKED_USER in line]


def test_a_background_failure_names_a_user_of_a_tenant_not_the_users_id(live, collect, monkeypatch):  # noqa: F811
    """The lines a user's feedback causes behind the reply (a refit that failed, an adapter trigger that
    failed) named `tenant/user`: a user's id in the operator's log, kept after their DELETE, where the
    DELETE's and the fit's own lines say 'a user of tenant X'. The request id leads to the request."""
    from service.users import services

    logs = collect()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(services, "refit", broken)
    monkeypatch.setattr(live.runtime.store, "count_comparisons", broken)  # the adapter trigger's count
    with live.client() as c:
        fb = {"type": "comparison", "user": MARKED_USER, "prompt": "p", "chosen": "a", "rejected": "b"}
        assert c.post("/v1/feedback", json=fb, headers={"X-Request-Id": "bg-fail-8"}).status_code == 201
        live.runtime.ingest.flush()
        live.runtime.wait_for_background()
    failed = [rec.getMessage() for rec in logs.records if rec.levelno >= logging.ERROR and rec.request_id == "bg-fail-8"]
    assert any("refit" in m for m in failed) and any("adapter trigger" in m for m in failed), failed
    assert all("a user of tenant acme" in m for m in failed), failed
    assert not [line for line in lines_of(logs) if MARKED_USER in line]


def test_a_long_value_outside_the_choices_that_is_not_a_string_is_cut_too():
    """msgspec writes the value it refused: a number is no quoted string to cut between graphemes."""
    from service.strict import one_of

    assert one_of(("a", "b"), int("1" * 80)) == "must be one of `a`, `b`; got " + "1" * 64 + "..."
    assert one_of(("a", "b"), "x" * 80) == "must be one of `a`, `b`; got '" + "x" * 63 + "...'"  # as before for ASCII


def test_an_audit_counts_a_label_that_reads_the_same_as_one_group(live):
    """Labels from clients as they come: a CSV's trailing space, a zero-width space or a BOM pasted
    before the text. Each was a group of its own on the dashboard, looking like the others ("Paris"
    three times, each smaller than it is); the audit reads names and labels as answers are compared
    (`answer_key`: the visible text in NFC)."""
    from pluralign.fairness.store_source import comparisons_from_store

    spellings = [("ville", "Paris"), ("ville ", "Paris "), ("\u200bville", "\ufeffParis"), ("ville", "Pari\u0073\u200b")]
    with live.client("acme") as c:
        for i, (name, label) in enumerate(spellings):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": f"lbl{i}", "prompt": "Où aller ?", "chosen": f"Paris {i}",
                                             "rejected": f"Lyon {i}", "attributes": {name: label}})
            assert r.status_code == 201, r.text
    live.runtime.ingest.flush("acme")
    comparisons = comparisons_from_store(live.runtime.store.uri, "ville", "acme")
    mine = {comparisons.groups[g] for g, u in zip(comparisons.group, comparisons.user, strict=True) if comparisons.users[u].startswith("acme/lbl")}
    assert mine == {"Paris"}, mine
