"""What a client generated from the served OpenAPI document knows of `GET /v1/models` and
`GET /v1/models/{model_id}`, checked against what the real app answers over HTTP.

Before: both 200s were declared `{"type": "object"}` (the handlers returned plain dicts), so the
document said nothing of `data`, `id` or `owned_by`: the Swagger page at /schema showed `{}` as their
example, and a generated client typed the answers as untyped maps. Now they are OpenAI's Model and list
shapes, and the app's answers validate against them."""

from __future__ import annotations

import httpx
import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def response_schema(document: dict, path: str) -> dict:
    return document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_the_models_answers_are_declared_and_match_what_is_served(svc):
    import jsonschema
    from openai import OpenAI

    document = httpx.get(svc.url + "/schema/openapi.json").json()
    schemas = document["components"]["schemas"]
    listed, one = response_schema(document, "/v1/models"), response_schema(document, "/v1/models/{model_id}")
    assert listed == {"$ref": "#/components/schemas/ModelList"} and one == {"$ref": "#/components/schemas/Model"}, (listed, one)
    assert set(schemas["Model"]["required"]) == {"id"} and set(schemas["Model"]["properties"]) == {"id", "object", "created", "owned_by"}
    headers = {"Authorization": f"Bearer {svc.keys['acme']}"}
    answer = httpx.get(svc.url + "/v1/models", headers=headers).json()
    jsonschema.validate(answer, {**listed, "components": document["components"]}, cls=jsonschema.Draft202012Validator)
    for model in answer["data"]:
        got = httpx.get(f"{svc.url}/v1/models/{model['id']}", headers=headers).json()
        jsonschema.validate(got, {**one, "components": document["components"]}, cls=jsonschema.Draft202012Validator)
        assert got == {"id": model["id"], "object": "model", "created": 0, "owned_by": "pluralign"}, got
    client = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0)
    assert [m.id for m in client.models.list()] == [m["id"] for m in answer["data"]]
    assert client.models.retrieve("pluralign").owned_by == "pluralign"
