"""Issue 13, driven over real HTTP the way an attacker would: no 500s (OPTIONS, deep nesting, odd
query values), errors that name the field, strict types, job params as an allow-list (never flags),
and a DELETE that nothing resurrects and that leaves nothing behind."""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding
from tests.processes import workers_of
from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("hostile-data")
    server, service = start_service(
        data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000,
        cors_origins=("https://app.example",),
    )
    service.data_dir = data
    with server:
        yield service


CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "hi"}]}
COMPARISON = {"type": "comparison", "user": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}
TENANT_ROUTES = ["/v1/models", "/v1/chat/completions", "/v1/feedback", "/v1/users/ann", "/v1/users/ann/preferences",
                 "/v1/users/ann/export", "/v1/rewards/score"]
ADMIN_ROUTES = ["/admin/jobs", "/admin/jobs/x", "/admin/jobs/x/cancel", "/admin/audits/fairness", "/admin/dashboard"]
JSON_ROUTES = [("tenant", "/v1/chat/completions"), ("tenant", "/v1/feedback"), ("tenant", "/v1/rewards/score"), ("admin", "/admin/jobs")]


def no_500s(svc) -> None:
    text = httpx.get(svc.url + "/metrics").text
    assert 'status="500"' not in text, [line for line in text.splitlines() if 'status="500"' in line]


@pytest.mark.parametrize("path", TENANT_ROUTES + ADMIN_ROUTES)
def test_options_is_never_a_500(svc, path):
    for who in ("acme", "admin", None):
        with svc.client(who) as c:
            r = c.options(path)
        assert r.status_code == 204, (who, r.status_code, r.text)
        assert "GET" in r.headers["allow"] or "POST" in r.headers["allow"]
        if path == "/v1/users/ann":  # two handlers on one path: both methods listed
            assert r.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"  # HEAD wherever GET is (session 26b)
    preflight = httpx.options(svc.url + path, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    no_500s(svc)


@pytest.mark.parametrize("who,path", JSON_ROUTES)
def test_deeply_nested_json_is_a_400(svc, who, path):
    for body in ("[" * 977 + "]" * 977, '{"a":' * 5000 + "1" + "}" * 5000, '{"model": ' + "[" * 20_000 + "]" * 20_000 + "}"):
        with svc.client("admin" if who == "admin" else "acme") as c:
            r = c.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert field_named(r) in ("body", "model", "a", "type"), r.text  # the first level that does not fit
        if "nested too deeply" in r.text:  # malformed JSON, as an import's too-deep line and Litestar's own decode say
            assert r.json()["error"]["code"] == "invalid_json", r.text
    no_500s(svc)


@pytest.mark.parametrize("query,field", [
    ({"group_by": "--help"}, "group_by"),
    ({"group_by": "-o/tmp/x"}, "group_by"),
    ({"group_by": "g", "since": "-1e-05"}, "since"),
    ({"group_by": "g", "since": "nan"}, "since"),
    ({"group_by": "g", "since": "inf"}, "since"),
    ({"group_by": "g", "tenant": "--store=/"}, "tenant"),
])
def test_audit_query_values_are_checked_and_never_reach_a_job(svc, query, field):
    with svc.client("admin") as admin:
        before = len(admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"])
        r = admin.get("/admin/audits/fairness", params={**query, "wait": 0})
        assert r.status_code == 400, r.text
        assert field_named(r) == field
        after = admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"]
    assert len(after) == before
    # every job record on disk is still readable (since=nan used to write one that was not)
    from training.jobs.record import decode_job

    for path in (svc.data_dir / "jobs").glob("*.job.json"):
        decode_job(path.read_bytes())
    no_500s(svc)


@pytest.mark.parametrize("body,field", [
    (b'{"model": "pluralign", "seed": 18446744073709551616, "messages": [{"role": "user", "content": "hi"}]}', "seed"),
    (b'{"model": "pluralign", "temperature": 1e400, "messages": [{"role": "user", "content": "hi"}]}', "temperature"),
    (b'{"model": "pluralign", "messages": [{"role": "user", "content": "h\xff\xfei"}]}', "messages[0].content"),
    (b'{"model": "pluralign", "user": "a\xc3", "messages": [{"role": "user", "content": "hi"}]}', "user"),
    (b'{"model": "pluralign", "n": "3", "messages": [{"role": "user", "content": "hi"}]}', "n"),
    (b'{"model": "pluralign", "stream": "true", "messages": [{"role": "user", "content": "hi"}]}', "stream"),
    (b'{"model": "pluralign", "temperature": "0.5", "messages": [{"role": "user", "content": "hi"}]}', "temperature"),
    (b'{"model": "pluralign", "pluralign": {"rerank": 1}, "messages": [{"role": "user", "content": "hi"}]}', "pluralign.rerank"),
])
def test_chat_errors_name_the_field(svc, body, field):
    with svc.client("acme") as c:
        r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert field_named(r) == field, r.text
    assert f"`{field}`" in r.text


@pytest.mark.parametrize("who,path,body,field", [
    ("admin", "/admin/jobs", b'{"kind": "pal", "params": {"lr_user": 1e400}}', "params.lr_user"),
    ("admin", "/admin/jobs", b'{"kind": "audit", "params": {"group_by": "g", "min_comparisons": 5, "since": -1e999}}',
     "params.since"),
    ("acme", "/v1/feedback", b'{"type": "comparison", "user": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.",'
                             b' "attributes": {"segment": "trial", "age": 1e400}}', "attributes.age"),
])
def test_a_number_out_of_range_in_a_map_names_its_key(svc, who, path, body, field):
    """An operator's job params, or a client's attributes, holding a number no float holds (JSON's 1e400): the 400
    names the entry, as it names a struct's field (`temperature`), not only the map (`params`)."""
    with svc.client(who) as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert field_named(r) == field, r.text
    assert f"`{field}`: a number out of range: no 64-bit integer or float holds it" in r.text


@pytest.mark.parametrize("change,field", [
    ({"tie": "true"}, "tie"),
    ({"margin": "0.5"}, "margin"),
    ({"prompt": 5}, "prompt"),
    ({"attributes": {"segment": 1}}, "attributes.segment"),
])
def test_feedback_is_decoded_strictly(svc, change, field):
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={**COMPARISON, **change})
    assert r.status_code == 400, r.text
    assert field_named(r) == field, r.text


@pytest.mark.parametrize("params,field", [
    ({"group_by": "g", "out": "/tmp/x.json"}, "params.out"),
    ({"group_by": "g", "store": "/"}, "params.store"),
    ({"group_by": "--help"}, "params.group_by"),
    ({"group_by": "g", "since": "1"}, "params.since"),
    ({"group_by": "g", "data": "/etc/passwd"}, "params.data"),
])
def test_audit_job_params_are_an_allow_list(svc, params, field):
    keys_before = (svc.data_dir / "api_keys.json").read_bytes()
    with svc.client("admin") as admin:
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": params})
    assert r.status_code == 400, r.text
    assert field_named(r) == field
    assert (svc.data_dir / "api_keys.json").read_bytes() == keys_before


def test_an_audit_job_of_the_pal_model_is_refused_where_it_is_asked_for(svc):
    """An audit job reads the service's stored comparisons (`audit --store`), which `--personalized pal` does not read:
    such a job was queued (201), its worker started, and it failed each time ('exit code 2: ... --personalized pal
    needs --pal CHECKPOINT_DIR and a preference file or --source'). Now the request is the 400, nothing queued."""
    with svc.client("admin") as admin:
        before = admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"]
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "personalized": "pal"}})
        assert r.status_code == 400, r.text
        assert field_named(r) == "params.personalized", r.text
        assert "logistic" in r.json()["error"]["message"]
        assert admin.get("/admin/jobs", params={"limit": 1000}).json()["jobs"] == before


@pytest.mark.parametrize("kind,params,field", [
    ("adapter", {"user": "ann", "data": "/etc/passwd"}, "params.data"),
    ("adapter", {"user": "ann", "registry": "/tmp"}, "params.registry"),
    ("adapter", {"user": "ann", "base": "/tmp/model"}, "params.base"),
    ("adapter", {"user": "--help"}, "params.user"),
    ("adapter", {"user": "ann", "tenant": "population"}, "params.tenant"),  # reserved, as for keys and the CLI
    ("audit", {"group_by": "segment", "tenant": "population"}, "params.tenant"),
    ("pal", {"out": "/tmp/pal"}, "params.out"),
    ("pal", {"data_dir": "/"}, "params.data_dir"),
    ("em", {"k": "3"}, "params.k"),
    ("em", {"k": 10**6}, "params.k"),
    ("em", {"quiet": True, "out": "x"}, "params.quiet"),
])
def test_training_job_params_are_an_allow_list(svc, kind, params, field):
    with svc.client("admin") as admin:
        r = admin.post("/admin/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 400, r.text
    assert field_named(r) == field, r.text


def test_a_job_gets_only_typed_flags(svc, tmp_path):
    """Every value goes as `--name=value`, so nothing a client sends can be read as another flag."""
    from training.jobs.kinds import KINDS
    from training.jobs.record import Job

    job = Job(id="j", kind="audit", params={"group_by": "segment", "tenant": "acme", "store": "/srv/lancedb"}, created_at=0.0)
    argv = KINDS["audit"].command(job, tmp_path)
    flags = argv[argv.index("audit") + 1 :]
    assert flags[0] == "--json" and all(f.startswith("--") and "=" in f for f in flags[1:]), flags
    assert "--group-by=segment" in flags and "--store=/srv/lancedb" in flags


@pytest.mark.parametrize("change,field", [
    ({"chosen": "Same answer.", "rejected": "Same answer."}, "rejected"),
    ({"chosen": "   \n\t "}, "chosen"),
    ({"prompt": "  "}, "prompt"),
    ({"margin": -0.5}, "margin"),
    ({"source": "s" * 900_000}, "source"),
    ({"attributes": {"k": "v" * 900_000}}, "attributes.k"),
    ({"attributes": {"k" * 65: "v"}}, "attributes"),
    ({"attributes": {f"k{i}": "v" for i in range(33)}}, "attributes"),
])
def test_loose_feedback_is_refused(svc, change, field):
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={**COMPARISON, **change})
    assert r.status_code in (400, 413), r.text
    if r.status_code == 400:
        assert field_named(r) == field, r.text


def test_a_chat_whose_last_user_message_is_empty_is_refused(svc):
    messages = [{"role": "user", "content": "Plan my weekend"}, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "  "}]
    with svc.client("acme") as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 400, r.text
    assert field_named(r) == "messages[2].content"


def test_idempotency_key_stores_a_retried_feedback_once(svc):
    body = {**COMPARISON, "user": "idem", "prompt": "Retry me?"}
    with svc.client("acme") as c:
        first = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-0001"})
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        again = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-0001"})
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        svc.runtime.ingest.flush()  # moved into the table: a retry still finds it there
        third = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-0001"})
        assert third.json() == first.json() and third.headers["idempotent-replayed"] == "true"
        # concurrent copies of one request: one is stored
        with httpx.Client(base_url=svc.url, headers=c.headers, timeout=60) as h:
            results = []
            threads = [threading.Thread(target=lambda: results.append(h.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-0002"})))
                       for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert {r.status_code for r in results} == {201} and len({r.text for r in results}) == 1
        other = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-0003"})
        assert other.json()["stored"] != first.json()["stored"]
        assert c.get("/v1/users/idem/preferences").json()["total"] == 3  # fb-0001, fb-0002, fb-0003
        bad = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "has space"})
        assert bad.status_code == 400 and field_named(bad) == "Idempotency-Key"
    # another tenant's same key is its own
    with svc.client("globex") as g:
        assert "idempotent-replayed" not in g.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-0001"}).headers


def test_two_idempotency_keys_are_a_400_and_store_nothing(svc):
    """Before: the first of two `Idempotency-Key` headers was used (201, stored under it), so a proxy or
    client library that reads the other one retried under a key the service never saw, storing it twice."""
    row = {"type": "comparison", "user": "twokeys", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
    with svc.client("acme") as c:
        for path, body in (("/v1/feedback", json.dumps(row)), ("/v1/users/twokeys/import", json.dumps({k: row[k] for k in ("prompt", "chosen", "rejected")}))):
            r = c.post(path, content=body, headers=[("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2"), ("Content-Type", "application/json")])
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert r.json()["error"]["param"] == "Idempotency-Key" and "2 `Idempotency-Key` headers" in r.json()["error"]["message"]
        assert c.get("/v1/users/twokeys").status_code == 404


@pytest.mark.parametrize("path, body, field", [
    ("/v1/feedback", b'{"type": "comparison", "user": "dupa", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user": "dupb"}', "user"),
    ("/v1/chat/completions", b'{"model": "pluralign", "messages": [{"role": "user", "content": "Hi", "role": "system"}]}', "messages[0].role"),
    ("/v1/rewards/score", b'{"user": "dupa", "prompt": "Tea?", "responses": ["Yes."], "prompt": "Coffee?"}', "prompt"),
])
def test_a_json_key_given_twice_is_a_400_naming_it(svc, path, body, field):
    """Before: the last of two values was used (a feedback naming `user` twice was stored for the second, 201),
    while a gateway or log reading the first saw another user: a query parameter or header given twice is a
    400 naming it, and so now is a key given twice in one JSON object."""
    with svc.client("acme") as c:
        r = c.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (r.status_code, r.text)
        error = r.json()["error"]
        assert error["param"] == field and "given 2 times" in error["message"], error
        assert c.get("/v1/users/dupb").status_code == 404


def test_truncated_texts_are_counted(svc):
    def truncated() -> float:
        line = next(x for x in httpx.get(svc.url + "/metrics").text.splitlines() if x.startswith("pluralign_embed_truncated_texts"))
        return float(line.split()[-1])

    before = truncated()
    with svc.client("acme") as c:
        long_answer = "word " * 600  # far past MiniLM's 256 word pieces
        assert c.post("/v1/rewards/score", json={"user": "ann", "prompt": "Tea?", "responses": [long_answer, "short"]}).status_code == 200
    assert truncated() == before + 1


def keys_cli(capsys, svc, *args: str) -> list[dict]:
    """`pluralign keys --data-dir <the service's> args...`, run by `training.cli.main` in this process: a key ring of its
    own on the service's key file, which the service's notices by the file's stat alone, as it would another process's
    (a process apiece cost ~0.5 CPU-s, 7 of them)."""
    from tests.unit.test_break37_cli import in_process

    code, out, err = in_process(capsys, "keys", "--data-dir", str(svc.data_dir), *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_keys_cli_create_and_revoke_take_effect_at_once_in_the_running_service(svc, capsys):
    (created,) = keys_cli(capsys, svc, "create", "--tenant", "acme", "--name", "rotating")
    new = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(svc.url + "/v1/models", headers=new).status_code == 200  # usable at once
    listed = keys_cli(capsys, svc, "list")
    assert {"id": created["id"], "tenant": "acme", "admin": False, "name": "rotating"}.items() <= listed[[k["id"] for k in listed[:-1]].index(created["id"])].items()
    assert all("key" not in k for k in listed) and created["key"] not in (svc.data_dir / "api_keys.json").read_text()
    (admin,) = keys_cli(capsys, svc, "create", "--tenant", "ops", "--admin", "--name", "oncall")
    assert httpx.get(svc.url + "/admin/jobs", headers={"Authorization": f"Bearer {admin['key']}"}).status_code == 200
    # revoked by id: the very next request is refused, without any other request reloading the file
    assert keys_cli(capsys, svc, "revoke", created["id"])[0]["revoked"][0]["id"] == created["id"]
    r = httpx.get(svc.url + "/v1/models", headers=new)
    assert r.status_code == 401 and "unknown API key" in r.text
    keys_cli(capsys, svc, "revoke", "oncall")  # by name
    assert httpx.get(svc.url + "/admin/jobs", headers={"Authorization": f"Bearer {admin['key']}"}).status_code == 401
    with svc.client("acme") as c:  # the others still work, and the service can still issue keys
        assert c.get("/v1/models").status_code == 200
    issued = svc.runtime.keys.issue("acme", name="from-the-service")
    assert httpx.get(svc.url + "/v1/models", headers={"Authorization": f"Bearer {issued}"}).status_code == 200
    assert created["id"] not in [k.get("id") for k in keys_cli(capsys, svc, "list")]


def test_a_body_of_many_json_arrays_leaves_the_started_heap_out_of_garbage_collections(svc):
    """Session 42: a tenant's body of ~1 MB holding 240,000 `[]` (refused: `audio` takes null) allocated past the
    collector's threshold several times while it was decoded, and each full collection walked every object the
    started service holds (600,000 and more: torch, the models, LanceDB), 0.7-0.9 s each with the interpreter lock
    held: one such client took another tenant's profile reads from p50 50 ms to 5.4 s. The objects alive at the
    start are frozen (`service.heap`): a collection no longer walks them (what it walks is `gc.get_objects()`)."""
    with svc.client("acme") as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "audio": {"tracks": [[]] * 9_000}})  # under the cap (and the 10,000 it was)
    assert r.status_code == 400 and field_named(r) == "audio", r.text
    walked = {id(o) for o in gc.get_objects()}
    started = [svc.runtime, svc.runtime.store, svc.runtime.settings]
    assert not [o for o in started if id(o) in walked], "objects of the started service are walked by every full collection"


@pytest.mark.parametrize("path, body, cap", [
    ("/v1/chat/completions", {**CHAT, "audio": {"tracks": [[]] * 240_000}}, 62_500),  # wire43: a chat's, 1 MB / 16 bytes
    ("/v1/feedback", {**COMPARISON, "attributes": {"segment": [[]] * 240_000}}, 10_000),
])
def test_a_body_opening_more_json_arrays_than_any_request_needs_is_refused_before_it_is_decoded(svc, path, body, cap):
    """Session 42: a ~1 MB body of 240,000 `[]` was decoded into as many Python lists on the event loop (100-300 ms a
    body with the started heap frozen, seconds before): every tenant's requests waited. It is a 400 naming `body` now,
    read from its bytes; brackets inside strings are text, not counted."""
    with svc.client("acme") as c:
        r = c.post(path, json=body)
        assert r.status_code == 400 and field_named(r) == "body", r.text
        assert f"JSON objects and arrays; a request may open at most {cap}" in r.text, r.text
        code = '[{\\"' * 4000  # `[{\"` 4,000 times in each answer: 16,000 brackets beside escapes, all text
        r = c.post("/v1/feedback", json={**COMPARISON, "user": "bracket-text", "chosen": code, "rejected": "no " + code})
        assert r.status_code == 201, r.text


def test_an_import_line_opening_more_json_arrays_than_any_row_needs_is_refused_before_it_is_decoded(svc):
    """Session 42: an import's line of 240,000 `[]` was decoded whole before its unknown column was refused (~200 ms
    holding the interpreter lock, one import of the tenant at a time): another tenant's reads went from p50 41 ms to
    431 ms under two such clients. A line may open as many objects and arrays as a JSON body."""
    rows = [json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}),
            json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "extra": [[]] * 240_000})]
    with svc.client("acme") as c:
        r = c.post("/v1/users/importer/import", content="\n".join(rows), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 400 and field_named(r) == "line 2", r.text
    assert "opens 240002 JSON objects and arrays; a line may open at most 10000" in r.text, r.text


def test_a_long_chat_of_text_parts_is_not_refused_by_the_container_cap(svc):
    """wire43: 3,400 messages of one text part each open 10,201 objects and arrays (in ~200 KB); under the cap of
    10,000 such a chat was a 400 naming `body` ("opens 10201 JSON objects and arrays"), though it is legal wherever no
    prompt budget applies (a remote generator, `max_prompt_tokens` unset). A chat's cap is now one per 16 bytes of the
    body limit, which no chat of messages and parts under it reaches: this one is refused only by this service's prompt
    budget, which names `messages`. Other routes keep the cap of 10,000 (the test above)."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]} for _ in range(3_400)]
    with svc.client("acme") as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 400 and field_named(r) == "messages", r.text
    assert "JSON objects and arrays" not in r.text and "prompt" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("framing, body", [("Content-Length: 5", b"{...}"), ("Transfer-Encoding: chunked", b"5\r\n{...}\r\n0\r\n\r\n")])
def test_a_delete_whose_client_waits_for_100_continue_deletes_only_once_its_body_is_sent(svc, framing, body):
    """wire43 (`service.strict.body_arrived`): no route runs before the body its request declares has arrived, whether
    or not it reads one. reviewwi43: a client sending `Expect: 100-continue` waits for the service's `100 Continue`
    before its body, which uvicorn sends when the app first asks for the body: the DELETE's first answer is that, not
    its 200, and the user is deleted only once the body came (a chunked body's too: it declares no Content-Length)."""
    user = f"expecting-{framing.split(':')[0].lower()}"
    key = svc.keys["acme"]
    with svc.client("acme") as c:
        assert c.post("/v1/feedback", json={**COMPARISON, "user": user}).status_code == 201
    with socket.create_connection(("127.0.0.1", int(svc.url.rsplit(":", 1)[1])), timeout=60) as sock:
        sock.sendall(f"DELETE /v1/users/{user} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{framing}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 100 "), first  # before: a chunked DELETE ran and answered 200 here
        with svc.client("acme") as c:
            assert c.get(f"/v1/users/{user}").status_code == 200  # not deleted while its body is awaited
        sock.sendall(body)
        answer = first.partition(b"\r\n\r\n")[2]
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    with svc.client("acme") as c:
        assert c.get(f"/v1/users/{user}").status_code == 404


def _all_read(svc, sock: socket.socket) -> bool:
    """Whether every byte sent on `sock` has been read by the app served in this process (none in the client's send
    queue, none in the service's socket, none in uvicorn's buffer of the request's body)."""
    import fcntl
    import struct
    import termios

    def queued(fd: int, request: int) -> int:
        return struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0]

    if queued(sock.fileno(), termios.TIOCOUTQ):
        return False
    (served,) = [p for p in svc.server.server.server_state.connections if p.transport.get_extra_info("peername") == sock.getsockname()]
    cycle = served.cycle
    return not queued(served.transport.get_extra_info("socket").fileno(), termios.FIONREAD) and not (cycle and cycle.body)


def test_a_body_sent_to_a_route_that_takes_none_is_read_and_dropped_not_kept(svc):
    """wire44: a GET, HEAD or DELETE route that takes no body (/health here), sent one anyway, waited for it whole
    (`service.strict.body_arrived`: no route runs before its request has arrived) by keeping it: near 1 MB held for
    each such request under the 1 MB limit while the rest of it came (and twice over as Litestar joined its pieces).
    Now such a body is read and dropped as it arrives (RFC 9110 9.3.1: a GET's content means nothing); it still
    arrives whole before the route runs, and one over the limit is still a 413 (tests/service/test_openapi.py). The
    service runs in this process: what it holds once it has read all but the body's last byte is traced."""
    import tracemalloc

    from tests.service.test_delete_journal import wait_until

    body = b"x" * 900_000
    head = f"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 1}\r\nConnection: close\r\n\r\n".encode()
    tracemalloc.start()
    try:
        with socket.create_connection(("127.0.0.1", int(svc.url.rsplit(":", 1)[1])), timeout=60) as sock:
            sock.sendall(head)
            sock.sendall(body)
            assert wait_until(lambda: _all_read(svc, sock))
            held = tracemalloc.get_traced_memory()[0]
            sock.sendall(b"x")
            answer = b""
            while data := sock.recv(65536):
                answer += data
    finally:
        tracemalloc.stop()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in answer, answer[:300]
    assert held < len(body) / 4, f"{held} bytes held while a body of {len(body) + 1} was arriving"


def test_health_shows_no_paths(svc):
    r = httpx.get(svc.url + "/health")
    assert r.status_code == 200
    assert str(svc.data_dir) not in r.text and "/" not in json.dumps(r.json()["pal"]), r.text
    assert "tmp" not in r.text


def test_no_request_above_produced_a_500(svc):
    no_500s(svc)


# ---- DELETE: nothing resurrected, nothing left behind ---------------------------------------------

@pytest.fixture(scope="module")
def deleting(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    """A service whose adapter trigger fires at 3 comparisons, with one job worker."""
    data = tmp_path_factory.mktemp("delete-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    adapter_every=3, job_workers=1)
    service.data_dir = data
    with server:
        yield service


def test_read_and_score_racing_delete_never_resurrect_the_user(deleting):
    """Profile reads and scores refit (and write) the user's row; one that started before the DELETE
    must not write it back after the DELETE answered."""
    resurrected = []
    with deleting.client("acme") as c:
        for trial in range(12):
            user = f"race{trial}"
            for i in range(2):
                assert c.post("/v1/feedback", json={**COMPARISON, "user": user, "prompt": f"Tea {i}?"}).status_code == 201
            stop = threading.Event()

            def hammer(user=user, stop=stop):
                with deleting.client("acme") as h:
                    while not stop.is_set():
                        h.get(f"/v1/users/{user}")
                        h.post("/v1/rewards/score", json={"user": user, "prompt": "Tea?", "responses": ["Yes.", "No."]})

            threads = [threading.Thread(target=hammer) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.05 * (trial % 4))
            assert c.delete(f"/v1/users/{user}").status_code == 200
            stop.set()
            for t in threads:
                t.join()
            deleting.runtime.wait_for_background()
            if c.get(f"/v1/users/{user}").status_code != 404 or deleting.runtime.store.get_user("acme", user) is not None:
                resurrected.append(user)
    assert resurrected == []


def test_delete_stops_the_users_jobs_and_leaves_no_file_naming_them(deleting):
    user, marker = "uq7zdel", "mk9v3secret"
    with deleting.client("acme") as c, deleting.client("admin") as admin:
        for i in range(3):
            body = {**COMPARISON, "user": user, "prompt": f"{marker} question {i}?", "chosen": f"{marker} yes", "rejected": "no"}
            assert c.post("/v1/feedback", json=body).status_code == 201
        c.post("/v1/chat/completions", json={**CHAT, "user": user, "messages": [{"role": "user", "content": f"hi {marker}"}]})
        deadline = time.monotonic() + 30
        jobs = []
        while time.monotonic() < deadline and not jobs:  # the trigger queues an adapter job behind the reply
            jobs = [j for j in admin.get("/admin/jobs", params={"kind": "adapter"}).json()["jobs"] if j["params"]["user"] == user]
            time.sleep(0.1)
        assert jobs, "an adapter job is queued at 3 comparisons"
        assert files_holding(deleting.data_dir, marker), "the marker is on disk before the DELETE"
        r = c.delete(f"/v1/users/{user}")
        assert r.status_code == 200, r.text
        assert r.json()["deleted"]["job_files"] >= 2  # the snapshot and the job record at least
        assert admin.get(f"/admin/jobs/{jobs[0]['id']}").status_code == 404
        if jobs[0].get("pid"):
            assert not Path(f"/proc/{jobs[0]['pid']}").exists() or b"PLURALIGN_JOB_ID" not in Path(f"/proc/{jobs[0]['pid']}/environ").read_bytes()
        left = files_holding(deleting.data_dir, marker, user)
        assert left == [], "\n".join(left)
        # nothing that could write of them runs on: no worker of their jobs (one begun after the listing too), no refit
        # (a sleep of 2 s for them to write in proved nothing on a machine too busy to run them meanwhile)
        assert [pid for job in jobs for pid in workers_of(job["id"])] == []
        deleting.runtime.wait_for_background()
        assert files_holding(deleting.data_dir, marker, user) == []
        assert c.get(f"/v1/users/{user}").status_code == 404
    # a restart of the runner finds nothing of the user to re-run
    from training.jobs.runner import LocalJobRunner, RunnerConfig

    again = LocalJobRunner(RunnerConfig(folder=deleting.data_dir / "jobs"))
    assert [j.id for j in again.list(limit=1000) if j.params.get("user") == user] == []


@pytest.fixture(scope="module")
def quota(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("quota-data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000, job_workers=1, tenant_queued_jobs=2)
    with server:
        yield service


def test_adapter_jobs_one_pending_per_user_and_a_bounded_queue_per_tenant(quota):
    with quota.client("acme") as c, quota.client("admin") as admin:
        for user in ("qa", "qb", "qc"):
            assert c.post("/v1/feedback", json={**COMPARISON, "user": user}).status_code == 201
        first = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "qa", "steps": 2000}})
        assert first.status_code == 201, first.text
        again = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "qa"}})
        assert again.status_code == 400 and field_named(again) == "params.user", again.text
        assert admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "qb", "steps": 2000}}).status_code == 201
        full = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "qc"}})
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1, full.text
        # the words name the setting and what to do, as the population jobs' 429 does (break37)
        message = full.json()["error"]["message"]
        assert "'acme'" in message and "at most 2" in message and "`tenant_queued_jobs`" in message and "retry" in message, message
        for job in admin.get("/admin/jobs", params={"kind": "adapter"}).json()["jobs"]:
            admin.post(f"/admin/jobs/{job['id']}/cancel")


@pytest.fixture(scope="module")
def labels(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("labels-data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    max_source_chars=10, max_attributes=2, max_attribute_name_chars=4, max_attribute_value_chars=5)
    with server:
        yield service


@pytest.mark.parametrize("change,field", [
    ({"source": "s" * 11}, "source"),
    ({"attributes": {"a": "1", "b": "2", "c": "3"}}, "attributes"),
    ({"attributes": {"abcde": "1"}}, "attributes"),
    ({"attributes": {"g": "123456"}}, "attributes.g"),
])
def test_source_and_attribute_limits_are_the_settings(labels, change, field):
    """The limits follow the settings (here far below the defaults), for feedback and for imports."""
    with labels.client("acme") as c:
        refused = c.post("/v1/feedback", json={**COMPARISON, **change})
        assert refused.status_code == 400 and field_named(refused) == field, refused.text
        line = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", **change}
        imported = c.post("/v1/users/ann/import", content=json.dumps(line).encode() + b"\n")
        assert imported.status_code == 400 and field_named(imported) == f"line 1.{field}", imported.text
        at_limit = {"source": "s" * 10, "attributes": {"abcd": "12345", "g": "x"}}
        assert c.post("/v1/feedback", json={**COMPARISON, **at_limit}).status_code == 201
        line = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", **at_limit}
        assert c.post("/v1/users/ann/import", content=json.dumps(line).encode() + b"\n").status_code == 201
