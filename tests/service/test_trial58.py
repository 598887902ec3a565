"""The API docs page's "Try it out" (Swagger UI at /schema/swagger) starts each request from a body the service takes.

Before (trial58): the document declared no request examples, so Swagger UI filled every field from the schema alone: a
chat's body was `"model": "string"`, `"max_tokens": 0`, `"pluralign": {"candidates": 0}`, ... (a 400 naming `model`),
a feedback's the first kind of its `oneOf`, a `choice` of a random `response_id` (a 404). A new user's first request
from the docs page failed. Now each operation that takes a body declares examples, the first of which the page shows."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# each operation a tenant key calls with a body, in an order a user would (the calibration pool before the
# next-comparison that reads it), and the status its examples answer
TENANT_BODIES = [
    ("/v1/chat/completions", "post", 200),
    ("/v1/feedback", "post", 201),
    ("/v1/rewards/score", "post", 200),
    ("/v1/users/{user_id}/stated-preferences", "patch", 200),
    ("/v1/calibration-pool", "put", 200),
    ("/v1/users/{user_id}/next-comparison", "post", 200),
    ("/v1/users/{user_id}/import", "post", 201),
]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("try-it-out"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS)
    with server:
        yield service


@pytest.fixture(scope="module")
def schema(svc) -> dict:
    return httpx.get(svc.url + "/schema/openapi.json").json()


def _send(client: httpx.Client, path: str, method: str, media: str, body) -> httpx.Response:
    url = path.replace("{user_id}", "alice")
    if isinstance(body, str):
        return client.request(method.upper(), url, content=body.encode(), headers={"Content-Type": media}, timeout=120)
    return client.request(method.upper(), url, json=body, timeout=120)


def test_every_body_a_route_takes_has_examples_that_it_answers(svc, schema):
    """Each example of each operation, sent as the docs page sends it, is answered as the route answers a good request;
    a `choice`, `rating` or `edit` example names a response to replace by one of the user's chats (`n`: 2)."""
    operations = {(path, method) for path, item in schema["paths"].items() for method, op in item.items()
                  if isinstance(op, dict) and "requestBody" in op and not path.startswith("/admin/log")}
    assert operations >= {(path, method) for path, method, _ in TENANT_BODIES} | {("/admin/jobs", "post")}
    for path, method in sorted(operations):
        for media, spec in schema["paths"][path][method]["requestBody"]["content"].items():
            assert spec.get("examples"), f"{method.upper()} {path} ({media}): no example; the docs page fills the body from the schema alone"
    response_id = None
    with svc.client("acme") as client:
        for path, method, status in TENANT_BODIES:
            [(media, spec)] = schema["paths"][path][method]["requestBody"]["content"].items()
            for name, example in spec["examples"].items():
                body = example["value"]
                if isinstance(body, dict) and "response_id" in body:
                    assert response_id is not None
                    body = {**body, "response_id": response_id}
                answer = _send(client, path, method, media, body)
                assert answer.status_code == status, (path, name, answer.text)
                if path == "/v1/chat/completions" and body.get("n", 1) >= 2:
                    response_id = answer.json()["id"]
    assert response_id is not None  # a chat example with n >= 2 made a response the choice examples name


def test_every_path_user_id_has_the_example_the_docs_page_fills_in(schema):
    """The path's user id the docs page's "Try it out" fills in (the test below reads it off the page in Chromium, `make
    test-http`): each operation's `user_id` carries an example, one that the routes answer in the test above."""
    user_ids = [parameter for item in schema["paths"].values() for op in item.values() if isinstance(op, dict)
                for parameter in op.get("parameters", []) if (parameter.get("name"), parameter.get("in")) == ("user_id", "path")]
    assert len(user_ids) > 5 and {parameter.get("example") for parameter in user_ids} == {"alice"}, user_ids[:2]


@pytest.mark.slow  # Chromium (~4 CPU-s): `make test-http`; the bodies the page shows are the schema's examples, which
# test_every_body_a_route_takes_has_examples_that_it_answers sends in the default suite
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="Debian's chromium and chromium-driver are not installed")
def test_try_it_out_on_the_docs_page_shows_a_body_the_route_takes(svc, tmp_path):
    """As a user does: open /schema/swagger in Chromium, open an operation, press "Try it out" and send the body (and
    the path's user id) the page shows, with the tenant's key."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000",
                f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(svc.url + "/schema/swagger")
        shown = {}
        for operation, path in (("V1ChatCompletionsCreateChatCompletion", "/v1/chat/completions"),
                                ("V1FeedbackCreateFeedback", "/v1/feedback"),
                                ("V1UsersUserIdNextComparisonNextComparison", "/v1/users/{user_id}/next-comparison")):
            block = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"[id$='-{operation}']")))
            driver.execute_script("arguments[0].scrollIntoView()", block)
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
            wait.until(lambda d, b=block: b.find_elements(By.CSS_SELECTOR, ".try-out__btn"))[0].click()
            text = wait.until(lambda d, b=block: b.find_elements(By.CSS_SELECTOR, "textarea.body-param__text"))[0]
            user = [field.get_attribute("value") for field in block.find_elements(By.CSS_SELECTOR, "input[placeholder='user_id']")]
            shown[path] = (json.loads(text.get_attribute("value")), user)
    finally:
        driver.quit()
    with svc.client("acme") as client:
        chat, _ = shown["/v1/chat/completions"]
        answer = client.post("/v1/chat/completions", json=chat, timeout=120)
        assert answer.status_code == 200, answer.text
        feedback, _ = shown["/v1/feedback"]
        assert client.post("/v1/feedback", json=feedback).status_code == 201
        question, user = shown["/v1/users/{user_id}/next-comparison"]
        assert user == ["alice"]  # the path's user id is filled in too
        assert client.post("/v1/users/alice/next-comparison", json=question).status_code == 200


# Intel/orca_dpo_pairs' columns: a popular DPO dataset whose prompt is `question`, beside a system turn
ORCA_ROW = {"system": "You are a helpful assistant.", "question": "What is 2 + 2?", "chosen": "4.", "rejected": "5."}
ORCA_SAID = ("the row's `system`, `question` are columns no row takes: if one holds the prompt, name it `prompt` "
             "(`datasets`: ds.rename_column('question', 'prompt'))")


def test_a_dataset_whose_prompt_column_has_another_name_is_told_to_rename_it(tmp_path, capsys):
    """Before (trial58): a row without `prompt` whose prompt is under another column (`question`, `instruction`) was
    refused as `prompt`: "missing, and `chosen` and `rejected` share no prompt (implicit-prompt form)", never naming the
    column the file has, which README says an unknown key is. Now the refusal names the row's columns no row takes."""
    from tests.unit.clitools import cli, write_jsonl

    path = write_jsonl(tmp_path / "orca.jsonl", [ORCA_ROW])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--user", "ann")
    assert code == 2 and out == "", out
    assert "line 1, field `prompt`: missing" in err and ORCA_SAID in err, err
    write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."}])
    code, _, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(tmp_path / "alpaca.jsonl"), "--user", "ann")
    assert code == 2 and ("the row's `instruction` is a column no row takes: if it holds the prompt, name it `prompt` "
                          "(`datasets`: ds.rename_column('instruction', 'prompt'))") in err, err


def test_the_import_route_names_the_column_too(svc):
    with svc.client("acme") as client:
        answer = client.post("/v1/users/ann/import", content=json.dumps(ORCA_ROW).encode() + b"\n",
                             headers={"Content-Type": "application/x-ndjson"})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == "line 1.prompt" and ORCA_SAID in error["message"], answer.text


@pytest.mark.parametrize(("field", "value", "said"), [
    ("prompt", "Hi", "is the prompt of OpenAI's legacy Completions API that this API does not take (send it as a `user` "
                     'message in `messages`: [{"role": "user", "content": "..."}])'),
    ("input", "Hi", "is the input of OpenAI's Responses API that this API does not take (send it as `messages`"),
    ("instructions", "Be brief.", "is the system prompt of OpenAI's Responses API that this API does not take (send it "
                                  "as a `system` message in `messages`)"),
    ("max_output_tokens", 16, "is the length bound of OpenAI's Responses API that this API does not take (send it as `max_tokens`)"),
])
def test_a_chat_sent_with_another_openai_api_s_fields_is_told_what_the_chat_takes(svc, field, value, said):
    """Before (trial58): a chat body shaped as OpenAI's legacy Completions (`prompt`) or Responses API's (`input`,
    `instructions`, `max_output_tokens`) request, which the openai client's `completions.create` or `responses.create`
    users bring over, was "`prompt`: unknown field", with no word of `messages` (or a misleading closest field)."""
    body = {"model": "pluralign", "user": "alice", field: value}
    if field != "prompt" and field != "input":
        body["messages"] = [{"role": "user", "content": "Hi"}]
    with svc.client("acme") as client:
        answer = client.post("/v1/chat/completions", json=body)
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == field and error["code"] == "unknown_parameter", answer.text
    assert said in error["message"], error["message"]


def test_a_stated_preference_sent_without_its_preferences_object_is_told_where_it_goes(svc):
    """Before (trial58): `{"length": "less"}` (the statement without `preferences` around it) was "`length`: unknown
    field (docs/api.md lists the fields this API takes)"."""
    with svc.client("acme") as client:
        answer = client.patch("/v1/users/alice/stated-preferences", json={"length": "less"})
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["param"] == "length", answer.text
        assert ("`length`: is a feature's name, whose statement goes in `preferences`, {\"preferences\": {\"length\": \"less\"}} (`more`, `less`, "
                "or null to clear it)") in error["message"], error["message"]  # review trial58: the statement sent, not "more"
        for sent, shown in ((None, "null"), ("fewer", '"more"'), (3, '"more"')):
            error = client.patch("/v1/users/alice/stated-preferences", json={"length": sent}).json()["error"]
            assert f'{{"preferences": {{"length": {shown}}}}}' in error["message"], (sent, error["message"])
        other = client.patch("/v1/users/alice/stated-preferences", json={"lenght": "less"}).json()["error"]
        assert "goes in `preferences`" not in other["message"], other  # not a feature's name: the usual unknown field


@pytest.mark.parametrize(("path", "body", "field", "hint"), [
    ("/v1/chat/completions", {"model": "pluralign", "user": "alice", "max_tokens": "64", "messages": [{"role": "user", "content": "Hi"}]},
     "max_tokens", "`max_tokens`: must be an integer or null, not text (send the number without quotes: 3, not \"3\")"),
    ("/v1/chat/completions", {"model": "pluralign", "user": "alice", "stream": "true", "messages": [{"role": "user", "content": "Hi"}]},
     "stream", "`stream`: must be true, false or null, not text (send true or false without quotes)"),
    ("/v1/feedback", {"type": "comparison", "user": "alice", "prompt": "p", "chosen": "a", "rejected": "b", "margin": "1"},
     "margin", "`margin`: must be a number or null, not text (send the number without quotes: 3, not \"3\")"),
])
def test_a_number_or_boolean_sent_as_text_is_told_to_drop_the_quotes(svc, path, body, field, hint):
    """Before (trial58): `"max_tokens": "64"` (a form's value, or a script's, stringified) was "Expected `int | null`, got
    `str`" alone, where its opposite (`"user": 3`) was told to add the quotes."""
    with svc.client("acme") as client:
        answer = client.post(path, json=body)
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == field and error["message"] == hint, answer.text
