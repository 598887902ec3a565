"""The OpenAPI document validates (openapi-spec-validator) and tells what the service does: security
schemes, the real media types, params a validator accepts, and every status a client can get."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_service_security import BAD_REQUESTS
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("openapi-data"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server:
        yield service


@pytest.fixture(scope="module")
def schema(svc) -> dict:
    return httpx.get(svc.url + "/schema/openapi.json").json()


def test_document_validates_and_declares_security_and_media_types(schema):
    from openapi_spec_validator import validate

    validate(schema)  # raises on any violation of OpenAPI 3.1
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["adminSession"]["in"] == "cookie"
    paths = schema["paths"]
    assert paths["/v1/chat/completions"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in paths["/health"]["get"]
    chat = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(chat)
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain; version=0.0.4", "text/plain; version=1.0.0", "application/openmetrics-text; version=1.0.0"]  # by `Accept`
    assert list(paths["/admin/dashboard"]["get"]["responses"]["200"]["content"]) == ["text/html"]
    assert list(paths["/v1/users/{user_id}/export"]["get"]["responses"]["200"]["content"]) == ["application/x-ndjson"]
    for status in ("400", "401", "403", "404", "429"):
        body = paths["/v1/feedback"]["post"]["responses"][status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}


def test_integer_job_params_match_exactly_what_the_schema_says(schema):
    import jsonschema

    params = schema["components"]["schemas"]["Job"]["properties"]["params"]
    resolver = {"components": schema["components"], **params}
    for value in ({"k": 4}, {"rate": 0.5}, {"user": "alice"}, {"dry": True}):
        jsonschema.validate(value, resolver, cls=jsonschema.Draft202012Validator)


def _template(paths: dict, path: str) -> str | None:
    for template in paths:
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path.split("?")[0]):
            return template
    return None


def test_every_status_the_service_answers_is_declared(svc, schema):
    """A fuzzer's tour: each request of the bad-input table, missing and wrong keys, the wrong kind of
    key, and good requests; every (route, status) seen must be declared on that operation."""
    calls = [(m, p, b, "acme") for m, p, b, *_ in BAD_REQUESTS] + [
        ("GET", "/v1/models", None, None), ("GET", "/v1/models", None, "admin"), ("GET", "/admin/jobs", None, "acme"),
        ("GET", "/v1/models/pluralign", None, "acme"), ("GET", "/v1/models/nope", None, "acme"),
        ("GET", "/admin/jobs/nope", None, "admin"), ("POST", "/admin/jobs", {"kind": "nope"}, "admin"),
        ("GET", "/admin/dashboard", None, "admin"), ("GET", "/metrics", None, None), ("GET", "/health", None, None),
        ("POST", "/v1/rewards/score", {"user": "a", "prompt": "p", "responses": ["x", "y"]}, "acme"),
    ]
    seen, undeclared = 0, []
    for method, path, body, who in calls:
        with svc.client(who) as c:
            if isinstance(body, (bytes, str)):
                r = c.request(method, path, content=body, headers={"content-type": "application/json"})
            else:
                r = c.request(method, path, json=body)
        template = _template(schema["paths"], path)
        if template is None or method.lower() not in schema["paths"][template]:
            assert r.status_code in (404, 405), (method, path, r.status_code)  # no such operation: nothing to declare
            continue
        seen += 1
        declared = schema["paths"][template][method.lower()]["responses"]
        if str(r.status_code) not in declared:
            undeclared.append((method, template, r.status_code))
    assert seen > 30 and undeclared == []


def test_every_operation_declares_the_request_id_it_takes_and_answers(schema):
    """Every answer carries `X-Request-Id` and every route takes one (service.requestid): the document
    said neither, so a generated client had no field for it (review31a)."""
    import jsonschema
    from openapi_spec_validator import validate

    validate(schema)
    components = schema["components"]
    resolve = lambda node, kind: components[kind][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node  # noqa: E731
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()
                  if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) > 20
    for path, method, op in operations:
        taken = [resolve(p, "parameters") for p in op.get("parameters", [])]
        header = [p for p in taken if p["in"] == "header" and p["name"] == "X-Request-Id"]
        assert len(header) == 1 and header[0]["required"] is False, (path, method, op.get("parameters"))
        for status, response in op["responses"].items():
            assert "X-Request-Id" in response.get("headers", {}), (path, method, status)
    pattern = header[0]["schema"]
    for value, ok in (("x" * 128, True), ("gw-0001", True), ("x" * 129, False), ("has space", False), ("", False), ("é", False)):
        assert jsonschema.Draft202012Validator(pattern).is_valid(value) is ok, value


def test_a_415_for_the_body_s_type_or_coding_is_declared_with_the_header_that_says_what_is_taken(svc, schema):
    """Review of ops39: the JSON routes answer 415 for a body declared as another `Content-Type` (with
    `Accept: application/json`), and every POST/PUT/PATCH a 415 for a `Content-Encoding` (with
    `Accept-Encoding: identity`), but the document declared 415 on the admin login form alone: a client
    generated from it, or a fuzzer checking status conformance, met an undeclared status."""
    from tests.service.test_break19 import JSON_ROUTES

    undeclared = []
    for who, method, path, body in [*JSON_ROUTES, ("acme", "POST", "/v1/users/wire19/import", None)]:
        sent = [({"Content-Encoding": "gzip", "Content-Type": "application/json"}, "Accept-Encoding")]
        if body is not None:  # the import route takes its JSON lines whatever the type
            sent.append(({"Content-Type": "text/plain"}, "Accept"))
        for headers, says in sent:
            with svc.client(who) as c:
                r = c.request(method, path, content=json.dumps(body or {}).encode(), headers=headers)
            assert r.status_code == 415 and says in r.headers, (method, path, headers, r.status_code, r.text)
            declared = schema["paths"][_template(schema["paths"], path)][method.lower()]["responses"]
            if "415" not in declared or says not in declared["415"].get("headers", {}):
                undeclared.append((method, path, says))
    assert undeclared == []


def _examples(node, where: str = ""):
    """(where, the schema it must keep to, value) of every example in the document: a media type's or a
    parameter's `examples` (named Example objects) and `example`, and a JSON Schema's `examples` list."""
    if isinstance(node, dict):
        examples = node.get("examples")
        if isinstance(examples, dict) and "schema" in node:
            yield from ((f"{where}/examples/{name}", node["schema"], e["value"]) for name, e in examples.items())
        elif isinstance(examples, list):
            schema = {k: v for k, v in node.items() if k != "examples"}
            yield from ((f"{where}/examples/{i}", schema, value) for i, value in enumerate(examples))
        if "example" in node:
            yield f"{where}/example", node.get("schema", node), node["example"]
        for key, value in node.items():
            yield from _examples(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _examples(value, f"{where}/{i}")


def test_every_app_builds_the_same_document_whose_examples_keep_to_their_schemas(svc, schema):
    """Before: the 200 of POST /admin/jobs and the 202 of GET /admin/audits/fairness (Litestar's `ResponseSpec`,
    whose `generate_examples` defaults to True) showed polyfactory's random strings as a job (`"kind":
    "psxSmwtEmkVBOmIxyHqA"`, `"progress": -957436772648.507`), drawn from a generator seeded once per process:
    each document a process built (one per set of routes, `service.openapi.install`) showed others, so what a
    reader saw depended on what the process had built before. Now every example is a real answer, the same in
    every build: an app with other admin routes (a document built anew) shows the same examples."""
    import jsonschema
    from litestar._openapi.plugin import OpenAPIPlugin
    from litestar.serialization import encode_json

    from service.admin.controllers import create_job, fairness_audit
    from service.app import create_app

    served = httpx.get(svc.url + "/schema/openapi.json").content
    reader = svc.runtime.metrics.state_reader  # create_app points /metrics at the app it builds: the served one keeps it
    try:  # a later app of this process with the same routes, and one with only the two routes that show examples
        again, other = (json.loads(encode_json(create_app(runtime=svc.runtime, admin_handlers=handlers).plugins.get(OpenAPIPlugin)
                                                   .provide_openapi_schema())) for handlers in (ADMIN_HANDLERS, [fairness_audit, create_job]))
    finally:
        svc.runtime.metrics.state_reader = reader
    assert encode_json(again) == served
    shown = lambda doc: (doc["paths"]["/admin/jobs"]["post"]["responses"]["200"], doc["paths"]["/admin/audits/fairness"]["get"]["responses"]["202"],  # noqa: E731
                         doc["components"]["schemas"]["Job"], doc["components"]["schemas"]["AuditPending"])
    assert shown(other) == shown(schema)
    examples = list(_examples(schema))
    assert {"/paths//admin/jobs/post/responses/200/content/application/json/examples/job-example-1",
            "/paths//admin/audits/fairness/get/responses/202/content/application/json/examples/auditpending-example-1"} <= {
        where for where, _, _ in examples}
    # a request body's example names no field its route refuses: every body is decoded with unknown fields
    # forbidden (a 400 "unknown field"), which msgspec's schemas do not say, so the check says it for them
    closed = _closed(schema["components"])
    for where, kept_to, value in examples:
        components = closed if "/requestBody/" in where else schema["components"]
        errors = [e.message for e in jsonschema.Draft202012Validator({"components": components, **kept_to}).iter_errors(value)]
        assert errors == [], (where, errors)


def _closed(node):
    """`node` with every object schema that lists its `properties` closed to others (`additionalProperties: false`)."""
    if isinstance(node, list):
        return [_closed(value) for value in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def test_a_body_over_the_limit_on_a_get_or_delete_is_a_413_the_operation_declares(svc, schema):
    """Since wire43 every body a request declares is read before its route runs, whatever the method, so a GET or
    DELETE sent with one over PLURALIGN_MAX_BODY_BYTES answers 413: the document declared a 413 for POST, PUT and
    PATCH only, and a fuzzer (or a client generated from it) met an undeclared status (fuzz43)."""
    too_large = b"x" * 1_000_001
    calls = [("GET", "/metrics", None), ("GET", "/health", None), ("GET", "/admin/login", None), ("GET", "/v1/models", "acme"),
             ("DELETE", "/v1/users/nobody", "acme"), ("GET", "/admin/jobs/nope/report", "admin")]
    for method, path, who in calls:
        with svc.client(who) as c:
            r = c.request(method, path, content=too_large)
        assert r.status_code == 413 and r.json()["error"]["param"] == "body", (method, path, r.status_code, r.text[:200])
        template = _template(schema["paths"], path)
        assert "413" in schema["paths"][template][method.lower()]["responses"], (method, template)


def test_an_audit_s_200_is_described_as_its_report(schema):
    """The audit route and GET /admin/jobs/{id}/report answer 200 with an AuditReport: the document said `{}` (any
    JSON) for both, so a client generated from it had no report type and a fuzzer checked nothing (fuzz43)."""
    import jsonschema
    import msgspec

    from pluralign.fairness.report import AuditReport

    report = msgspec.to_builtins(AuditReport(group_by="age", created_at=1.7e9, encoder_id="minilm", personalized_model="pal",
                                             base_model="bt", users=3, comparisons=40))
    for path in ("/admin/audits/fairness", "/admin/jobs/{job_id}/report"):
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({**ok, "components": schema["components"]})
        assert validator.is_valid(report), path
        assert not validator.is_valid({"job": {"id": "x"}}) and not validator.is_valid({}), path  # a pending audit is no report


def test_health_s_answer_is_described_field_by_field(svc, schema):
    """/health's 200 was `{"type": "object"}`: none of its fields, `replicas` (replicas43) and `clocks` among them,
    was in the document, so a client generated from it could read none. Each field the service answers is
    declared and the answer validates against it (fuzz43)."""
    import jsonschema

    answer = httpx.get(svc.url + "/health").json()
    ok = schema["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    resolved = {**ok, "components": schema["components"]}
    jsonschema.validate(answer, resolved, cls=jsonschema.Draft202012Validator)
    body = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[1]] if "$ref" in ok else ok
    assert set(body.get("properties", {})) == set(answer), answer
    assert {"status", "storage", "clocks", "replicas", "feedback_pending"} <= set(body.get("required", []))


def test_the_audit_s_since_is_declared_with_the_range_it_takes(svc, schema):
    """`since` takes 0 to the end of year 9999 (MAX_CREATED_AT, every time an import takes; 1e11 until session rows44) or nothing: the document lost its lower bound (Litestar skips a `ge` of 0, falsy) and
    put the upper one beside the `oneOf` rather than on its number, so `since=-1`, a 400, read as valid (fuzz43)."""
    import jsonschema

    since = next(p for p in schema["paths"]["/admin/audits/fairness"]["get"]["parameters"] if p.get("name") == "since")
    validator = jsonschema.Draft202012Validator(since["schema"])
    assert [validator.is_valid(v) for v in (0, 1.5e9, 253402300799, None, -1, -0.5, 253402300800)] == [True] * 4 + [False] * 3
    with svc.client("admin") as admin:
        assert admin.get("/admin/audits/fairness", params={"group_by": "age", "since": -1}).status_code == 400


def test_bounds_of_bodies_are_declared_as_msgspec_checks_them(svc, schema):
    """Litestar's reading of msgspec's `Meta` lost `ComparisonFeedback.margin`'s `ge=0` (a falsy 0) and put its
    maximum beside the `oneOf`; the constraints of a list's items (`PoolItem.answers`' characters, `shown`'s
    indices) were lost too. A value the document allows is now one the service takes, and one it refuses a 400 (wire44)."""
    import jsonschema

    components = schema["components"]["schemas"]

    def valid(component: str, field: str, value) -> bool:
        spec = components[component]["properties"][field]
        return jsonschema.Draft202012Validator({**spec, "components": schema["components"]}).is_valid(value)

    assert [valid("ComparisonFeedback", "margin", v) for v in (0, 0.5, 1e6, None, -1, -0.001, 1e6 + 1)] == [True] * 4 + [False] * 3
    assert not valid("ChoiceFeedback", "shown", [0, -1]) and valid("ChoiceFeedback", "shown", [0, 1])
    assert not valid("PoolItem", "answers", ["a", "b" * 20_001]) and valid("PoolItem", "answers", ["a", "b"])
    assert "description" in components["ComparisonFeedback"]["properties"]["attributes"]  # the words are kept
    comparison = {"type": "comparison", "user": "mona", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}
    with svc.client("acme") as c:
        assert c.post("/v1/feedback", json={**comparison, "margin": -0.001}).json()["error"]["param"] == "margin"
        assert c.post("/v1/feedback", json={**comparison, "margin": 0}).status_code == 201


def test_what_the_server_answers_on_any_route_is_declared_on_every_operation(schema):
    """`pluralign serve` answers 408 (a request that did not arrive in time), 431 (a head too long) and 503 (over
    PLURALIGN_MAX_CONNECTIONS, or stopping) before any route runs, whatever the route: the 408 and 431 were in no
    operation, the 503 in those whose own handlers answer it (wire44)."""
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                for status in ("408", "431", "503"):
                    assert op["responses"][status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert "Retry-After" in schema["paths"]["/health"]["get"]["responses"]["503"]["headers"]

def test_metrics_401_and_403_say_when_they_are_answered(schema):
    """/metrics answers 401 and 403 only under the setting `metrics_admin_only`, and then an admin key is what it takes:
    until review session 44 its 403 said what it says of every route, "admin keys: /admin only", the key /metrics then
    needs."""
    responses = schema["paths"]["/metrics"]["get"]["responses"]
    for status in ("401", "403"):
        said = responses[status]["description"]
        assert "metrics_admin_only" in said and "/admin only" not in said, (status, said)
    assert "admin key" in responses["403"]["description"]


def test_the_stated_preferences_conditional_answers_are_declared_as_answered(svc, schema):
    """(session reviewtrial16_51) A GET of stated preferences with `If-None-Match` naming the current version is a 304
    with the `ETag` (session trial16_51): the operation declares it, with the header; and the PATCH's 412, answered for
    `If-None-Match` too, says so. Until then a schema fuzzer sending the header met an undeclared 304, and the 412 and
    the `ETag` named `If-Match` alone."""
    url = "/v1/users/openapi_304/stated-preferences"
    with svc.client() as c:
        tag = c.patch(url, json={"preferences": {"length": "less"}}).headers["etag"]
        r = c.get(url, headers={"If-None-Match": tag})
        assert r.status_code == 304, r.text
        r412 = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-None-Match": tag})
        assert r412.status_code == 412, r412.text
    operations = schema["paths"]["/v1/users/{user_id}/stated-preferences"]
    answered = operations["get"]["responses"]["304"]
    assert "content" not in answered and "If-None-Match" in answered["description"]
    assert "ETag" in answered["headers"] and "If-None-Match" in answered["headers"]["ETag"]["description"]
    assert "If-None-Match" in operations["patch"]["responses"]["412"]["description"]
