"""Session 26b: a new user's pass with curl and the openai client over the real app (tiny models,
real LanceDB in a temp dir, uvicorn on 127.0.0.1): what the earlier passes missed in the query
string, the rate-limit headers, HEAD, and the OpenAPI document."""

from __future__ import annotations

import json
import time

import httpx
import msgspec
import pytest

from tests.service.tiny import field_named, serving_a_comparison

COMPARISON = {"type": "comparison", "user": "wire26", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with serving_a_comparison(tmp_path_factory.mktemp("wire26-data"), tiny_generator_dir, tiny_pal_dir, minilm, COMPARISON) as service:
        yield service


@pytest.mark.parametrize("who, path, named, meant", [
    ("acme", "/v1/users/wire26/export?fromat=preferences", "fromat", "format"),  # before: 200, the full export
    ("acme", "/v1/users/wire26/preferences?limt=1", "limt", "limit"),            # before: 200, 50 rows
    ("acme", "/v1/users/wire26/stated-preferences?limit=5&befor=3", "befor", "before"),
    ("acme", "/v1/models?limit=1", "limit", None),
    ("acme", "/v1/users/wire26?verbose=1", "verbose", None),
    ("admin", "/admin/jobs?knd=pal", "knd", "kind"),
])
def test_an_unknown_query_parameter_is_a_400_naming_it(svc, who, path, named, meant):
    """A mistyped query parameter was ignored, so `export?fromat=preferences` answered the full
    export (not a preference file) with 200, as if the request had been understood."""
    with svc.client(who) as c:
        r = c.get(path)
    assert r.status_code == 400, (path, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["param"] == named and error["code"] == "unknown_parameter", error
    assert error["message"].startswith(f"`{named}`: unknown query parameter"), error
    assert (f"did you mean `{meant}`?" in error["message"]) if meant else "takes no query parameters" in error["message"], error


@pytest.mark.parametrize("who, path, named, value", [
    ("acme", "/v1/users?limit=05", "limit", "05"),
    ("acme", "/v1/users/wire26/preferences?offset=007", "offset", "007"),
    ("acme", "/v1/users/wire26/stated-preferences?before=01", "before", "01"),
    ("admin", "/admin/jobs?limit=010", "limit", "010"),
])
def test_an_integer_with_a_leading_zero_is_refused_saying_so(svc, who, path, named, value):
    """Session trial53: `?limit=05` passed the check that an integer is written as digits, then Litestar's own
    conversion (msgspec's, JSON's grammar: no leading zero) refused it as "`limit`: Expected `int`, got `str`",
    a message that named neither the value nor what was wrong with it."""
    with svc.client(who) as c:
        r = c.get(path)
        assert c.get(path.replace(f"={value}", f"={value.lstrip('0')}")).status_code == 200, path
    assert r.status_code == 400, (path, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["param"] == named and error["code"] == "invalid_value", error
    assert error["message"] == f"`{named}`: must be an integer without a leading zero (as in {named}=20), got {value!r}", error


def test_probes_and_the_schema_still_take_any_query(svc):
    """Health checks, scrapers and the docs pages are read by tools that add their own parameters."""
    for path in ("/health?probe=1", "/metrics?format=prometheus", "/schema/openapi.json?v=2"):
        assert httpx.get(svc.url + path).status_code == 200, path


def test_ratelimit_reset_is_never_negative(svc):
    """`RateLimit-Reset` is delta-seconds (a non-negative integer); it was computed when the answer
    started from the window the request began in, so a request longer than the window (a body
    uploaded slowly, a chat of several seconds) said `RateLimit-Reset: -1`."""
    body = json.dumps({**COMPARISON, "user": "slow26"}).encode()

    def trickle():
        yield body[:10]
        time.sleep(2.2)
        yield body[10:]

    with svc.client() as c:
        r = c.post("/v1/feedback", content=trickle(), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert int(r.headers["ratelimit-reset"]) >= 0, dict(r.headers)
    assert 0 <= int(r.headers["ratelimit-remaining"]) <= int(r.headers["ratelimit-limit"]), dict(r.headers)


def test_head_is_answered_wherever_get_is(svc):
    """RFC 9110 9.1: a server supports HEAD wherever it supports GET (`curl -I`, uptime monitors);
    it was a 405 `the path takes OPTIONS, GET`."""
    for who, path in ((None, "/health"), (None, "/metrics"), ("acme", "/v1/models"), ("acme", "/v1/users/wire26/stated-preferences"),
                      ("acme", "/v1/users/wire26/export")):  # the export is streamed (chunked)
        with svc.client(who) as c:
            got, head = c.get(path), c.head(path)
        assert head.status_code == 200 and head.content == b"", (path, head.status_code, head.text[:200])
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers.get("etag") == got.headers.get("etag"), path
    with svc.client("acme") as c:
        assert c.head("/v1/users/nobody26").status_code == 404  # as GET
        wrong = c.head("/v1/feedback")  # POST only: 405, naming HEAD and what the path takes
        options = c.options("/v1/models")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "OPTIONS, POST", (wrong.status_code, dict(wrong.headers))
    assert options.status_code == 204 and options.headers["allow"] == "GET, HEAD, OPTIONS", dict(options.headers)


def test_openapi_declares_the_headers_and_statuses_the_service_answers(svc):
    """docs/api.md promises `Retry-After` with every 429 and 503, an `ETag` from the stated-preferences
    routes (and on their 412), `Idempotent-Replayed` on a replayed feedback or import, and the login
    form's 415 for a body that is not a form; the schema declared none of them."""
    schema = httpx.get(svc.url + "/schema/openapi.json").json()
    operations = {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()
                  if method in ("get", "post", "put", "patch", "delete")}
    for (path, method), op in operations.items():
        for status in ("429", "503"):
            if status in op["responses"]:
                assert "Retry-After" in op["responses"][status].get("headers", {}), (path, method, status)
    stated = "/v1/users/{user_id}/stated-preferences"
    for method, status in (("get", "200"), ("patch", "200"), ("patch", "412")):
        assert "ETag" in operations[(stated, method)]["responses"][status].get("headers", {}), (method, status)
    for path in ("/v1/feedback", "/v1/users/{user_id}/import"):
        assert "Idempotent-Replayed" in operations[(path, "post")]["responses"]["201"].get("headers", {}), path
    assert "WWW-Authenticate" in operations[("/v1/models", "get")]["responses"]["401"]["headers"]
    assert "415" in operations[("/admin/login", "post")]["responses"]
    with svc.client(None) as c:  # and it does answer 415
        assert c.post("/admin/login", json={"key": "k"}).status_code == 415


@pytest.mark.parametrize("authorization, said, challenge", [
    (None, "missing `Authorization: Bearer <API key>` header", 'Bearer realm="pluralign"'),
    ("Basic YTpi", "`Authorization`: the scheme must be `Bearer` (an API key), got `Basic`", 'Bearer realm="pluralign"'),
    ("Bearer pk-not-a-key", "unknown API key", 'Bearer realm="pluralign", error="invalid_token"'),
])
def test_a_401_says_how_to_authenticate(svc, authorization, said, challenge):
    """RFC 9110 15.5.2: a 401 carries `WWW-Authenticate` with a challenge (RFC 6750 3: `Bearer`, and
    `error="invalid_token"` for a key that is not valid); it had none, and a key sent with another
    scheme was called missing."""
    r = httpx.get(svc.url + "/v1/models", headers={"Authorization": authorization} if authorization else {})
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate") == challenge, dict(r.headers)
    assert r.json()["error"]["message"] == said and r.json()["error"]["type"] == "authentication_error", r.text


def test_the_two_exports_are_saved_under_different_names(svc):
    """`curl -OJ` (and a browser) saves under the `Content-Disposition` name: the preference file
    was `<user>.jsonl` too, so downloading both left one, overwritten by the other."""
    with svc.client() as c:
        full, prefs = c.get("/v1/users/wire26/export"), c.get("/v1/users/wire26/export", params={"format": "preferences"})
    assert full.headers["content-disposition"] == 'attachment; filename="wire26.jsonl"', dict(full.headers)
    assert prefs.headers["content-disposition"] == 'attachment; filename="wire26-preferences.jsonl"', dict(prefs.headers)


@pytest.mark.parametrize("user, saved, original", [
    ("org:acme:ann", "org_acme_ann", "org%3Aacme%3Aann"),  # ':' names no file on Windows (a drive, an NTFS stream)
    ("ann@example.com", "ann@example.com", "ann%40example.com"),  # '@' is fine in a file name, not an RFC 8187 attr-char
])
def test_an_export_of_a_user_whose_id_no_file_may_be_named_after_is_saved_under_a_safe_name(svc, user, saved, original):
    """Session small53: `filename` held the user id as it is, ':' included, which Windows refuses in a file name (a
    browser or `curl -OJ` there saved nothing, or a stream of another file). `filename` is now safe on every system
    (each character past letters, digits and `._@+-` an `_`); beside it, where they differ, `filename*` (RFC 6266,
    RFC 8187) holds the original, for a client that reads it; a plain id's header stays as it was (above)."""
    from email.message import Message

    with svc.client() as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea?", "chosen": "Yes.",
                                            "rejected": "No."}).status_code == 201
        full = c.get(f"/v1/users/{user}/export")
        head = c.head(f"/v1/users/{user}/export", params={"format": "preferences"})
    assert full.status_code == 200 and head.status_code == 200, (full.text, head.status_code)
    for r, suffix in ((full, ".jsonl"), (head, "-preferences.jsonl")):
        disposition = r.headers["content-disposition"]
        if saved + suffix == user + suffix:
            assert disposition == f'attachment; filename="{saved}{suffix}"', disposition
            continue
        assert disposition == f"attachment; filename=\"{saved}{suffix}\"; filename*=UTF-8''{original}{suffix}", disposition
        parsed = Message()  # the standard library's reading of it (RFC 2231, of which RFC 8187 is the HTTP profile)
        parsed["Content-Disposition"] = disposition
        params = parsed.get_params(header="content-disposition")[1:]
        assert params == [("filename", saved + suffix), ("filename", ("UTF-8", "", user + suffix))], params


@pytest.mark.parametrize("user", ["con", "Com1", "nul.x", "console"])
def test_an_export_of_a_user_named_as_a_windows_device_is_not_saved_under_the_device_s_name(svc, user):
    """Review reviewsmall53: `filename` is to be a name any system takes, yet `con.jsonl`, `COM1.jsonl` and
    `nul.x.jsonl` name Windows' devices (the console, a serial port, nothing), whatever their extension: a download
    there failed or went to the device. Such a name is saved with a `_` before it, the original in `filename*`;
    `con-preferences.jsonl` and `console.jsonl` are names of files and are kept (`nul.x-preferences.jsonl` is not)."""
    with svc.client() as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea?", "chosen": "Yes.",
                                            "rejected": "No."}).status_code == 201
        full = c.get(f"/v1/users/{user}/export")
        prefs = c.head(f"/v1/users/{user}/export", params={"format": "preferences"})
    device = user != "console"
    assert full.headers["content-disposition"] == (f"attachment; filename=\"_{user}.jsonl\"; filename*=UTF-8''{user}.jsonl"
                                                   if device else f'attachment; filename="{user}.jsonl"'), full.headers
    if user == "nul.x":  # `nul.x-preferences.jsonl` is `nul` too: the name before its first '.'
        assert prefs.headers["content-disposition"] == f"attachment; filename=\"_{user}-preferences.jsonl\"; filename*=UTF-8''{user}-preferences.jsonl"
    else:
        assert prefs.headers["content-disposition"] == f'attachment; filename="{user}-preferences.jsonl"', prefs.headers


def test_an_unknown_job_parameter_is_unknown_parameter_naming_the_closest(svc):
    """A misspelt job parameter had the generic `invalid_value` code and msgspec's words ("Object
    contains unknown field `kk`"), where an unknown field anywhere else is `unknown_parameter`."""
    with svc.client("admin") as c:
        r = c.post("/admin/jobs", json={"kind": "pal", "params": {"kk": 4}})
        jobs = c.get("/admin/jobs").json()["jobs"]
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "params.kk" and error["code"] == "unknown_parameter", error
    assert error["message"].startswith("`params.kk`: unknown parameter of a `pal` job (did you mean `k`?); it takes "), error
    assert jobs == []  # nothing queued


@pytest.mark.parametrize("params", [{"groups": 3}, {"protocol": "ukp", "groups": 3}])
def test_groups_of_a_population_job_not_on_persona_is_a_400_naming_it(svc, params):
    """data session 34: `groups` sizes only the persona protocol's population. Before: a `pal` job on the
    service's own comparisons (the default, protocol `file`) took `groups: 3`, queued, and ignored it."""
    with svc.client("admin") as c:
        r = c.post("/admin/jobs", json={"kind": "pal", "params": params})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "params.groups" and "read only with protocol `persona`" in error["message"], error


def test_a_body_over_the_limit_is_a_413_naming_body_and_the_limit(svc):
    """The 413 said only "Request Entity Too Large" with `param` null: not which limit, nor how far
    over it (the openai client shows `Error code: 413 - Request Entity Too Large`)."""
    limit = svc.runtime.settings.max_body_bytes
    body = json.dumps({**COMPARISON, "prompt": "x" * limit}).encode()

    def chunked():  # no Content-Length: the size is not known up front
        yield body

    with svc.client() as c:
        sized = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/json"})
        unsized = c.post("/v1/feedback", content=chunked(), headers={"Content-Type": "application/json"})
    # the size, then the limit: "N bytes over the limit" read as N bytes too many (session rows42)
    for r, size in ((sized, f"the body is {len(body)} bytes, larger"), (unsized, "the body is larger")):
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["param"] == "body" and error["code"] == "request_too_large", error
        assert error["message"] == f"`body`: {size} than the limit of {limit} bytes a request (PLURALIGN_MAX_BODY_BYTES)", error


@pytest.mark.parametrize("path, body, param, allowed, got", [
    ("/v1/chat/completions", {"model": "pluralign", "messages": [{"role": "user", "content": [
        {"type": "input_text", "text": "hi"}]}]},  # an image part is said unsupported (test_small52_wire)
     "messages[0].content[0].type", "`text`", "'input_text'"),
    ("/v1/chat/completions", {"model": "pluralign", "messages": [{"role": "robot", "content": "hi"}]},
     "messages[0].role", "`system`, `developer`, `user`, `assistant`, `tool`, `function`", "'robot'"),
    ("/v1/feedback", {**COMPARISON, "type": "vote"}, "type", "`choice`, `comparison`, `rating`, `edit`", "'vote'"),
    ("/v1/users/wire26/stated-preferences", {"preferences": {"length": "bigger"}}, "preferences.length", "`more`, `less`", "'bigger'"),
    ("/v1/users/wire26/next-comparison", {"target": "everyone"}, "target", "`coefficients`, `population`, `predictive`", "'everyone'"),
])
def test_a_value_outside_a_fields_choices_names_the_choices(svc, path, body, param, allowed, got):
    """msgspec's "Invalid value 'input_text'" / "Invalid enum value 'robot'" named the field but not
    what it takes: an image part (which the openai client sends as documented) left the user guessing."""
    with svc.client() as c:
        r = c.request("PATCH" if "stated" in path else "POST", path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    said = f"`{param}`: must be one of {allowed}; got {got}"
    # a content part's adds whose parts they are (session small52: a user's were told `text`, `refusal`)
    assert error["param"] == param and error["message"] in (said, f"{said} (the parts of a `user` message)"), error


def test_a_query_value_outside_its_choices_names_the_choices(svc):
    with svc.client() as c:
        r = c.get("/v1/users/wire26/export", params={"format": "csv"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "`format`: must be one of `all`, `preferences`; got 'csv'", r.text


def test_an_optional_field_sent_as_null_is_not_given(svc):
    """Session rows42. Before: `tie` and `attributes` (feedback), `target` (next-comparison), and `params` or one
    parameter (admin jobs) sent as null were 400s ("Expected `bool`, got `null`"), while `margin`, `source`,
    `shown` and `pool` took a null: a client sending every field, null where unset (an openai-style SDK, pydantic's
    `model_dump()`), tripped on the first. Now each takes null as absent, and the OpenAPI document says so."""
    pool = [{"prompt": "Tea?", "answers": ["Green tea.", "Black coffee."]}]
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={**COMPARISON, "user": "nulls42", "tie": None, "attributes": None, "margin": None, "source": None})
        assert r.status_code == 201, r.text
        (row,) = c.get("/v1/users/nulls42/preferences").json()["data"]
        assert (row["tie"], row["attributes"], row["margin"]) == (False, {}, None), row
        absent = c.post("/v1/users/nulls42/next-comparison", json={"pool": pool})
        null = c.post("/v1/users/nulls42/next-comparison", json={"pool": pool, "target": None})
        assert null.status_code == 200 and null.json()["criterion"] == absent.json()["criterion"], null.text
        schemas = c.get("/schema/openapi.json").json()["components"]["schemas"]
    with svc.client("admin") as c:
        k_null = c.post("/admin/jobs", json={"kind": "pal", "params": {"k": None, "groups": 3}})  # k not given: groups is what is wrong
        params_null = c.post("/admin/jobs", json={"kind": "nope", "params": None})
        jobs = c.get("/admin/jobs").json()["jobs"]
    assert (k_null.status_code, k_null.json()["error"]["param"]) == (400, "params.groups"), k_null.text
    assert (params_null.status_code, params_null.json()["error"]["param"]) == (400, "kind"), params_null.text
    assert jobs == []
    comparison = next(s for name, s in schemas.items() if name.endswith("ComparisonFeedback"))
    for field in ("tie", "attributes"):
        assert {"type": "null"} in comparison["properties"][field].get("oneOf", []), (field, comparison["properties"][field])


def test_a_snapshot_a_worker_reads_takes_rows_an_older_version_stored_with_a_time_no_file_takes(svc):
    """Review rw42. Since rows42 a preference file's `created_at` must be Unix seconds in [0, 9999-12-31]; rows an
    older version stored (imports took any finite time: -5, milliseconds, 1e300) went into the adapter job's snapshot
    and the population (pal, em) snapshot as they were, which the worker's reader then refused: every adapter job of
    that user, and every population job of every tenant, failed on reading its `--data`. Such a time is written as
    null, as the export writes it, a time in milliseconds as its seconds (review rows43; a DELETE's rewrite of a snapshot drops a null-time row of its user)."""
    from pluralign.data.io import read_preferences
    from pluralign.store.tables import StoredPreference
    from tests.service.test_blank_answers import stored_as_an_older_version_stored

    rt, user = svc.runtime, "oldtimes-rw42"
    rows = [StoredPreference(tenant="acme", user_id=user, pref_id=f"t{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="choice", created_at=t) for i, t in enumerate((-5.0, 1.7e12, 1_700_000_000.5))]
    stored_as_an_older_version_stored(rt, rows)
    admin = svc.server.server.config.app.state.admin
    adapter_data, population_data = admin.snapshot("acme", user)[0], admin.population_snapshot()
    times = sorted(((r.prompt, r.created_at) for r in read_preferences(adapter_data)[0]), key=lambda t: t[0])
    assert times == [("Tea 0?", None), ("Tea 1?", 1.7e9), ("Tea 2?", 1_700_000_000.5)], times  # milliseconds as seconds (rows43)
    population = [r for r in read_preferences(population_data)[0] if r.user_id == f"acme/{user}"]
    # the population snapshot's time is when the row was received (rows44: an older version's -5 counts as received at
    # 0.0, before any DELETE, as a DELETE reads it; before rows44 it was written null)
    assert sorted(r.created_at for r in population) == [0.0, 1.7e9, 1_700_000_000.5], population


def test_a_parameter_a_job_kind_does_not_take_is_refused_sent_as_null_too(svc):
    """Review rw42. Since rows42 a null parameter is not given; it was dropped before its name was checked, so a
    misspelled one sent as null (`"stesp": null`, pydantic's `model_dump()` of a model with a typo) was queued without
    a word, where before rows42 it was a 400 naming it and any other unknown name still is."""
    with svc.client("admin") as c:
        r = c.post("/admin/jobs", json={"kind": "adapter", "params": {"user": "nobody-rw42", "stesp": None}})
        jobs = c.get("/admin/jobs").json()["jobs"]
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("params.stesp", "unknown_parameter"), r.text
    assert "did you mean `steps`?" in r.json()["error"]["message"], r.text
    assert jobs == []


# ---- session small52: content parts by role, the routing header, and `data import`'s header ----------------------
# Image, audio and file parts in a chat's messages are told as what this text model does not read, with the parts the
# message's role takes; an `X-Pluralign-User` header (what the load balancer routes a user's requests by,
# deploy/README.md) that names another user than the request is a 400 naming both, on every route that reads a user
# from its path or body; `pluralign data import` sends it. On this module's service (no start of their own).

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "A weekend plan?"}], "max_tokens": 2,
        "pluralign": {"candidates": 1}}
HEADER = "X-Pluralign-User"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-abc123"}}


@pytest.fixture(scope="module")
def openai_client(svc):
    import openai

    return openai.OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=60)


@pytest.mark.parametrize(("part", "what"), [(IMAGE, "image"), (AUDIO, "audio"), (FILE, "file")])
def test_an_image_audio_or_file_part_of_a_user_message_is_said_unsupported_by_this_text_model(openai_client, part, what):
    """The openai client's vision (audio, file) input, as an app sends it: a 400 naming the part's `type`, saying this
    text model does not read it and that a `user` message's parts here are `text`. Before: "must be one of `text`,
    `refusal`; got 'image_url'", which names a part a user message may not hold and does not say images are unsupported."""
    import openai

    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this?"}, part]}]
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model="pluralign", user="parts52", messages=messages, max_tokens=2)
    message = caught.value.message
    assert caught.value.param == "messages[0].content[1].type", message
    assert f"`{part['type']}`" in message and what in message and "not supported" in message and "text model" in message, message
    assert "a `user` message's parts are `text`" in message and "refusal" not in message, message
    assert caught.value.code == "unsupported_value", caught.value.body


@pytest.mark.parametrize(("role", "parts"), [("system", "`text`"), ("developer", "`text`"), ("assistant", "`text`, `refusal`"),
                                             ("tool", "`text`")])
def test_a_part_of_another_kind_lists_the_parts_its_messages_role_takes(svc, role, parts):
    """OpenAI's chat API: system and developer parts are text, assistant parts text or refusal, tool parts text; an
    image there (and a part of a kind OpenAI has not, `input_text` of its Responses API, in a user message) is told with
    what that role takes. Before, every role was told `text`, `refusal`."""
    message = {"role": role, "content": [IMAGE]}
    if role == "tool":
        message["tool_call_id"] = "call_1"
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": [message, *CHAT["messages"]]})
        assert r.status_code == 400 and field_named(r) == "messages[0].content[0].type", r.text
        said = r.json()["error"]["message"]
        assert f"must be one of {parts}; got 'image_url'" in said and f"`{role}` message" in said, said
        unknown = {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": [unknown]})
        assert r.status_code == 400 and field_named(r) == "messages[0].content[0].type", r.text
        assert "must be one of `text`; got 'input_text'" in r.json()["error"]["message"], r.text


def _other(r) -> None:
    """`r` is the 400 of a header naming `other` where the request names `routed52`."""
    assert r.status_code == 400 and field_named(r) == HEADER, (r.status_code, r.text)
    said = r.json()["error"]["message"]
    assert "'other52'" in said and "'routed52'" in said, said


def test_a_user_header_naming_another_user_than_the_request_is_a_400_naming_both(svc):
    """deploy/README.md: the load balancer hashes the API key and `X-Pluralign-User`, so a request whose header names
    another user than its path or body reaches that user's replica, not its own: its writes are not read by the user's
    next request there (read-your-writes), nor its reads of what the user's replica holds. Each route that reads a user
    refuses it, nothing done; the same header naming the request's user, or no header, is served. Before, every one of
    these requests was served (200/201)."""
    other = {HEADER: "other52"}
    comparison = {"type": "comparison", "user": "routed52", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
    with svc.client() as c:
        assert c.post("/v1/feedback", json=comparison, headers={HEADER: "routed52"}).status_code == 201
        answered = c.post("/v1/chat/completions", json={**CHAT, "user": "routed52"}, headers={HEADER: "routed52"})
        assert answered.status_code == 200, answered.text
        _other(c.post("/v1/chat/completions", json={**CHAT, "user": "routed52"}, headers=other))
        _other(c.post("/v1/chat/completions", json={**CHAT, "safety_identifier": "routed52"}, headers=other))
        _other(c.post("/v1/feedback", json=comparison, headers=other))
        rating = {"type": "rating", "response_id": answered.json()["id"], "rating": 5}
        _other(c.post("/v1/feedback", json=rating, headers=other))  # the response's user
        _other(c.post("/v1/rewards/score", json={"user": "routed52", "prompt": "Hi?", "responses": ["Hello."]}, headers=other))
        for method, path, body in [("GET", "", None), ("GET", "/preferences", None), ("GET", "/export", None),
                                   ("GET", "/stated-preferences", None),
                                   ("PATCH", "/stated-preferences", {"preferences": {"length": "less"}}),
                                   ("POST", "/next-comparison", {}), ("DELETE", "", None)]:
            _other(c.request(method, f"/v1/users/routed52{path}", json=body, headers=other))
        line = json.dumps({"prompt": "Cats?", "chosen": "Yes.", "rejected": "No."}) + "\n"
        _other(c.post("/v1/users/routed52/import", content=line, headers={**other, "Content-Type": "application/x-ndjson"}))
        # nothing of those was done: one comparison and one chat of the user's, no rating, stated preference nor import
        profile = c.get("/v1/users/routed52", headers={HEADER: "routed52"})
        assert profile.status_code == 200, profile.text
        assert c.get("/v1/users/routed52/preferences").json()["total"] == 1
        assert c.get("/v1/users/routed52/stated-preferences").json().get("preferences") in ({}, None)
        r = c.get("/v1/users/routed52", headers=[(HEADER, "routed52"), (HEADER, "other52")])  # which one routed it?
        assert r.status_code == 400 and field_named(r) == HEADER and "2 `X-Pluralign-User` headers" in r.text, r.text
        # a chat naming no user reads and writes nothing of one: any header is served
        assert c.post("/v1/chat/completions", json=CHAT, headers=other).status_code == 200


@pytest.fixture
def heard(svc):
    """The `X-Pluralign-User` field lines of each request the service receives meanwhile, by path: the real app's
    connections, each new one handed to it through a wrapper that notes the header (uvicorn's protocols take
    `config.loaded_app` as each connection opens)."""
    config = svc.server.server.config
    app, seen = config.loaded_app, []

    async def noting(scope, receive, send):
        if scope["type"] == "http":
            seen.append((scope["path"], [v.decode() for k, v in scope["headers"] if k == HEADER.lower().encode()]))
        await app(scope, receive, send)

    config.loaded_app = noting
    yield seen
    config.loaded_app = app


def test_pluralign_data_import_sends_each_users_routing_header(svc, heard, tmp_path, capsys):
    """`pluralign data import --url` posts each user's rows to /v1/users/{user}/import: behind several replicas the load
    balancer routes them by `X-Pluralign-User` (deploy/README.md), which the command never sent, so every user's import
    reached the replica that an empty header hashes to, not theirs. Now each request names its user."""
    from tests.unit.clitools import cli, write_jsonl

    rows = [{"user_id": user, "prompt": f"Q{i} of {user}?", "chosen": "Yes.", "rejected": "No."} for user in ("imp52a", "imp52b")
            for i in range(2)]
    code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", write_jsonl(tmp_path / "rows.jsonl", rows),
                         "--url", svc.url, "--key", svc.keys["acme"])
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["stored"] == 4, (code, out, err)
    imports = [(path, lines) for path, lines in heard if path.endswith("/import")]
    assert imports == [("/v1/users/imp52a/import", ["imp52a"]), ("/v1/users/imp52b/import", ["imp52b"])], heard


def test_a_part_kind_spelled_with_a_quote_is_told_with_its_messages_role_too(svc):
    """Review of session small52: the role's kinds were added only where msgspec's repr of the kind read back as a Python
    string (`ast.literal_eval`); a kind holding a quote (`'it's'`) did not, and a user's message was told "must be one of
    `text`, `refusal`" again, the words session small52 ended. Now the kind is read from the body itself."""
    for kind in ("it's", "say \"hi\"", "back\\slash"):
        messages = [{"role": "user", "content": [{"type": kind, "text": "Hi"}]}]
        with svc.client() as c:
            r = c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
        assert r.status_code == 400 and field_named(r) == "messages[0].content[0].type", r.text
        said = r.json()["error"]["message"]
        assert said.startswith("`messages[0].content[0].type`: must be one of `text`; got ") and said.endswith(
            "(the parts of a `user` message)"), said


def test_user_and_safety_identifier_naming_two_users_is_a_400_naming_both(svc):
    """review belief52: a chat whose `user` and `safety_identifier` named two users was served as `safety_identifier`'s,
    `user` silently dropped: whose history, adapter and reward applied was the client's guess. OpenAI's
    `safety_identifier` replaces `user` (both name the end user), so two that disagree are a 400 naming both, code
    `invalid_parameter_combination`, as `max_tokens` and `max_completion_tokens` that disagree are; the same id in
    both is served."""
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "user": "named52", "safety_identifier": "safe52"})
        assert r.status_code == 400 and field_named(r) == "safety_identifier", r.text
        error = r.json()["error"]
        assert "'safe52'" in error["message"] and "`user`" in error["message"] and "'named52'" in error["message"], error
        assert error["code"] == "invalid_parameter_combination", error
        empty = c.post("/v1/chat/completions", json={**CHAT, "safety_identifier": ""})  # was served as no user's
        assert empty.status_code == 400 and field_named(empty) == "safety_identifier", empty.text
        both = c.post("/v1/chat/completions", json={**CHAT, "user": "safe52", "safety_identifier": "safe52"})
        assert both.status_code == 200, both.text


def test_an_empty_user_header_is_no_header(svc):
    """review belief52: `X-Pluralign-User:` sent empty was a 400 ("names '' but `user_id` names 'probe52'") where no
    header passes, while the load balancer's hash (nginx's `$http_x_pluralign_user`) reads both as "": an empty header
    routes as no header does, so it is taken as none; one naming another user, or two, are still refused."""
    comparison = {"type": "comparison", "user": "probe52", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
    with svc.client() as c:
        assert c.post("/v1/feedback", json=comparison, headers={HEADER: ""}).status_code == 201
        r = c.get("/v1/users/probe52", headers={HEADER: ""})
        assert r.status_code == 200, r.text
        assert c.post("/v1/chat/completions", json={**CHAT, "user": "probe52"}, headers={HEADER: ""}).status_code == 200
        two = c.get("/v1/users/probe52", headers=[(HEADER, ""), (HEADER, "")])
        assert two.status_code == 400 and field_named(two) == HEADER, two.text


def test_feedback_on_a_response_not_found_behind_replicas_names_the_routing_header(svc, monkeypatch):
    """review belief52: behind replicas, a rating (choice, edit) whose `X-Pluralign-User` names another user than the
    response's reaches that user's replica, where within `store_sync_ms` the response is not yet read: the client got
    404 "response ... is not stored" and no word of the header, which `routed_to` only compares once the response (and
    so its user) is found. The header cannot be checked first (the response's user is known from the lookup alone), so
    with replicas the 404 says the response may not be visible on this replica yet and names the header it was routed by."""
    rt = svc.runtime
    rating = {"type": "rating", "response_id": "chatcmpl-0123456789abcdef0123456789abcdef", "rating": 5}
    with svc.client() as c:
        alone = c.post("/v1/feedback", json=rating, headers={HEADER: "other52"})  # one replica: the 404 as it was
        assert alone.status_code == 404 and HEADER not in alone.text, alone.text
        monkeypatch.setattr(rt, "settings", msgspec.structs.replace(rt.settings, store_sync_ms=1000))
        routed = c.post("/v1/feedback", json=rating, headers={HEADER: "other52"})
        plain = c.post("/v1/feedback", json=rating)
    assert routed.status_code == 404 and field_named(routed) == "response_id", routed.text
    said = routed.json()["error"]["message"]
    assert "is not stored" in said and f"`{HEADER}`" in said and "'other52'" in said and "1000 ms" in said, said
    assert plain.status_code == 404 and f"`{HEADER}`" in plain.json()["error"]["message"], plain.text


def test_an_empty_user_beside_a_safety_identifier_is_a_400_naming_the_empty_one(svc):
    """review of belief52: `user` "" beside `safety_identifier` "x" was refused as "`safety_identifier`: 'x' and `user`
    '' name two users", the field named the one that was fine and '' called a user (and "" beside "x" the other way
    round likewise): an empty id names no user. Each one sent is now checked as a user id on its own, so the 400 names
    the empty field and says what a user id is; two that do name two users are still refused as a combination."""
    with svc.client() as c:
        for empty, other in (("user", "safety_identifier"), ("safety_identifier", "user")):
            r = c.post("/v1/chat/completions", json={**CHAT, empty: "", other: "empty52"})
            assert r.status_code == 400 and field_named(r) == empty, (empty, r.text)
            assert "name two users" not in r.text and "a user id is 1-128 characters" in r.text, r.text


@pytest.mark.parametrize("who, path", [
    ("acme", "/v1/users?after=%FF"),
    ("acme", "/v1/users?after=w%E9ire"),  # a Latin-1 cursor
    ("admin", "/admin/tenants/acme/users?after=%FF&limit=5"),
])
def test_a_users_page_after_a_cursor_that_is_no_utf_8_is_a_400_naming_after(svc, who, path):
    """newsvc56: `GET /v1/users?after=%FF` answered 200 with no users and `next` null, the last page, as if the tenant
    had no users after that point: Litestar reads the byte as U+FFFD, which sorts after every user id, so a client
    paging with a cursor it had mangled (a Latin-1 `%E9`) was told the listing was over. A 400 naming `after` now, as
    `group_by` of an audit (service.errors.query_not_utf8)."""
    with svc.client(who) as c:
        r = c.get(path)
    assert r.status_code == 400, (path, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["param"] == "after" and "UTF-8" in error["message"] and "\ufffd" not in error["message"], error


@pytest.mark.parametrize("path", ["/admin", "/admin/"])
def test_the_admin_area_s_own_url_says_where_the_dashboard_is(svc, path):
    """newsvc56: `http://HOST:8000/admin`, typed in a browser by an operator looking for the dashboard, answered
    "no route `GET /admin`: docs/admin.md lists the routes", where the service's root names /admin/dashboard."""
    r = httpx.get(svc.url + path, headers={"Accept": "text/html"})
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"no route `GET {path}`: ") and "the operator's dashboard is at /admin/dashboard" in message, message
    assert "docs/admin.md" in message, message


@pytest.mark.parametrize("since, hint", [
    ("2026-01-01", "1767225600.0 for this one read as UTC"),
    ("2026-01-01T00:00:00+01:00", "1767222000.0 for this one"),
    ("1767225600000", "milliseconds? divide by 1000: 1767225600.0"),  # JavaScript's Date.now()
])
def test_an_audit_since_given_as_a_date_or_in_milliseconds_is_told_its_seconds(svc, since, hint):
    """newsvc56: `since=2026-01-01` (or a time in milliseconds) was '`since`: must be a number from 0 to 253402300799,
    ..., got '2026-01-01'', where an import's `created_at`, the same Unix seconds, names the date's seconds or the
    division. Still a 400 naming `since`, nothing queued, now with that hint."""
    with svc.client("admin") as admin:
        r = admin.get(f"/admin/audits/fairness?group_by=segment&since={since.replace('+', '%2B')}&wait=0")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "since" and hint in error["message"], error


@pytest.mark.parametrize("since, hint", [("2026-01-01", "1767225600.0 for this one read as UTC"),
                                         (1767225600000, "milliseconds? divide by 1000: 1767225600.0")])
def test_an_audit_job_s_since_given_as_a_date_or_in_milliseconds_is_told_its_seconds(svc, since, hint):
    """newsvc56: POST /admin/jobs of an audit with `"since": "2026-01-01"` was '`params.since`: Expected `float | null`,
    got `str`' (in milliseconds: 'Expected `float` <= 253402300799.0'); now with the date's seconds or the division,
    as the audit route's `since` and an import's `created_at` say it. Nothing queued."""
    with svc.client("admin") as admin:
        before = len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"])
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "since": since}})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "params.since" and hint in error["message"], error
        assert len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"]) == before


ROWS56 = [{"user_id": "csv56", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."},
          {"user_id": "csv56", "prompt": "Cats?", "chosen": "Yes!", "rejected": "No!"}]


@pytest.mark.parametrize("written_by, hint", [
    ("datasets to_csv", "a CSV file"),
    ("pandas to_json", "orient='records', lines=True"),
])
def test_an_import_of_a_csv_or_of_pandas_columns_says_what_the_file_is(svc, hf, tmp_path, written_by, hint):
    """newsvc56: a preference file written with `datasets`' `to_csv` was '`line 1`: malformed JSON (JSON is
    malformed: invalid character (byte 0))', and one written with pandas' `DataFrame.to_json` (whose default,
    orient='columns', is one object of columns keyed by row number) '`line 1.prompt`: expected a string or a non-empty
    list of messages': neither said what the file was nor how to write JSON lines. Still a 400 naming line 1, nothing
    stored, now saying so. The files are written by `datasets` in a process of its own (the `hf` fixture), never in
    the worker beside the service's LanceDB threads (tests/unit/test_crash38_datasets_apart.py)."""
    path = tmp_path / "prefs"
    write = "ds.to_csv(path, index=False)" if written_by == "datasets to_csv" else "ds.to_pandas().to_json(path)"
    hf.run(f"ds = datasets.Dataset.from_list(rows)\n{write}", rows=ROWS56, path=str(path))
    with svc.client() as c:
        r = c.post("/v1/users/csv56/import", content=path.read_bytes())
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"].startswith("line 1") and hint in error["message"], error
        assert c.get("/v1/users/csv56").status_code == 404  # nothing stored


@pytest.mark.parametrize("since, edge", [("1969-12-31", "a date before 1970-01-01 UTC"),
                                         ("9999-12-31T23:59:59-01:00", "a date after 9999-12-31T23:59:59 UTC")])
def test_an_audit_since_of_a_date_out_of_range_is_told_of_the_times_it_takes_not_of_an_import_s(svc, since, edge):
    """review newsvc56: an audit's `since` of a date before 1970 (or after 9999), on the audit route and an audit job's
    `params.since`, got an import's hint, '... outside the times a created_at takes: give none to have the row stamped
    on receipt': no row is stamped, and `since` is no created_at. Still a 400 naming it, nothing queued; the hint says
    which times a `since` takes."""
    with svc.client("admin") as admin:
        before = len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"])
        routed = admin.get("/admin/audits/fairness", params={"group_by": "segment", "since": since, "wait": 0})
        job = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "since": since}})
        assert len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"]) == before
    for r, param in ((routed, "since"), (job, "params.since")):
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and f"({edge}, outside the times taken: Unix seconds from 0 (1970-01-01) to " \
            "253402300799 (9999-12-31T23:59:59 UTC))" in error["message"], error
        assert "created_at" not in error["message"] and "stamped" not in error["message"], error


@pytest.mark.parametrize("since, hint", [
    ("1767225600", "(a number as text? give it as a number (1767225600 without quotes in JSON))"),
    ("1767225600000", "(a number as text? give it as a number (1767225600000 without quotes in JSON), in seconds: "
                      "milliseconds? divide by 1000: 1767225600.0)"),
])
def test_an_audit_job_s_since_as_a_number_in_quotes_is_told_to_give_a_number(svc, since, hint):
    """review newsvc56: an audit job's `"since": "1767225600"` (a number as JSON text, as a form or a CSV's column
    gives it) was '`params.since`: Expected `float | null`, got `str`' with no hint, and one in milliseconds was told
    only to divide by 1000, so the client sent `"1767225600.0"`, still text, and was refused again. An import's
    `created_at` given so says to drop the quotes; so does `params.since` now. Nothing queued."""
    with svc.client("admin") as admin:
        before = len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"])
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "since": since}})
        assert len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"]) == before
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "params.since" and error["message"].endswith(hint), error


def test_an_audit_since_of_a_date_whose_offset_s_plus_was_not_encoded_is_told_so_and_its_seconds(svc):
    """review newsvc56: `since=2026-01-01T00:00:00+01:00` typed into a URL as `date -Iseconds` prints it (curl sends the
    `+` as it is) reads as `2026-01-01T00:00:00 01:00` (a query's `+` is a space), which is no ISO date, so the 400 had
    none of the hint a date gets. It says now that the `+` was read as a space and the date's seconds."""
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness?group_by=segment&since=2026-01-01T00:00:00+01:00&wait=0")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "since" and error["message"].endswith(
        "got '2026-01-01T00:00:00 01:00' (a `+` in a query string is read as a space: send it as %2B) (a date: give its "
        "Unix time, 1767222000.0 for this one: Python's `datetime.fromisoformat(text).timestamp()`)"), error
