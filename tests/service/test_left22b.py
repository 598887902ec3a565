"""Session 22b: wire details real clients stumble on, each driven over HTTP against the real app."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.conftest import REPO
from tests.service.tiny import free_port, start_service
from tests.serving import left_as_found
from training.cli import make_parser

APP = "https://app.example"
ASK = {"model": "pluralign", "user": "lena", "messages": [{"role": "user", "content": "Suggest a weekend plan"}]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("left22b-data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, cors_origins=(APP,))
    with server:
        yield service


def assert_error_shape(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), (r.request.method, r.request.url, r.headers["content-type"], r.text[:200])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}, error
    assert error["request_id"] == r.headers["X-Request-Id"], (error, r.headers)  # obs30: the answer's id, beside the fields
    return error


@pytest.mark.parametrize("path", ["/schema/nope", "/schema/swagger.css", "/schema/openapi.yaml", "/schema/nope/deeper",
                                  "/schema/assets/nope.js", "/nope", "/v1/nope", "/v1/chat/completion", "/admin/nope"])
def test_an_unknown_path_is_a_json_404_naming_it(svc, path):
    """Before: `GET /schema/nope` (any one segment under /schema that Litestar's OpenAPI plugin does
    not serve) answered Litestar's HTML page `<h1>Error 404</h1>` (text/html), while every other
    error of the API is OpenAI's JSON shape; and an unknown route's 404 said only "Not Found", as
    an unknown user's does, so a typo in a route read like a missing resource."""
    with svc.client() as c:
        error = assert_error_shape(c.get(path), 404)
    assert error["type"] == "not_found_error" and error["code"] == "not_found", error
    if not path.startswith("/schema/assets/"):  # the static files router names the file itself
        assert f"GET {path}" in error["message"], error


@pytest.mark.parametrize("method,path,allowed", [
    ("POST", "/v1/models", "GET"), ("DELETE", "/schema/openapi.json", "GET"), ("PUT", "/health", "GET"),
    ("POST", "/schema/nope", "GET"), ("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/users/lena", "DELETE"),
])
def test_a_method_a_path_does_not_take_is_a_json_405_naming_what_it_takes(svc, method, path, allowed):
    """Before: 405s were JSON, but said only "Method Not Allowed": the methods the path takes were in
    the `Allow` header alone."""
    with svc.client() as c:
        r = c.request(method, path)
    error = assert_error_shape(r, 405)
    assert allowed in r.headers["allow"], r.headers
    assert f"{method} {path}" in error["message"] and allowed in error["message"], error


@pytest.mark.parametrize("extra,param", [
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": False, "stream_options": {"include_usage": False}}, "stream_options"),
    ({"max_tokens": 8, "max_completion_tokens": 16}, "max_tokens"),
    ({"response_format": {"type": "text", "json_schema": {"name": "plan", "schema": {"type": "object"}}}}, "response_format.json_schema"),
])
def test_fields_that_only_make_sense_together_are_refused_naming_the_field(svc, extra, param):
    """Before: each was a 200 that silently ignored one field: `stream_options` without `stream: true`
    (OpenAI: 400 "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param
    `stream_options`), `max_tokens` and `max_completion_tokens` that disagree (OpenAI: 400 "Setting
    'max_tokens' and 'max_completion_tokens' at the same time is not supported.", param
    `max_tokens`; the service silently used max_completion_tokens), a `json_schema` under
    `response_format.type: text` (the schema was dropped and plain text served)."""
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**ASK, **extra})
    error = assert_error_shape(r, 400)
    assert error["param"] == param and error["code"] == "invalid_parameter_combination", error
    assert error["message"].startswith(f"`{param}`"), error


def test_the_fields_agreeing_are_still_served(svc):
    """What the checks above must not refuse: stream_options with a stream, both token limits equal."""
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**ASK, "max_tokens": 4, "max_completion_tokens": 4, "stream_options": None,
                                                 "response_format": {"type": "text"}})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 4
        with c.stream("POST", "/v1/chat/completions", json={**ASK, "max_tokens": 4, "stream": True,
                                                            "stream_options": {"include_usage": True}}) as s:
            assert s.status_code == 200 and '"usage"' in s.read().decode()


def test_stream_options_sent_with_nulls_are_its_defaults(svc):
    """Review rw42. rows42 made an optional field's null "not given" in every body docs/api.md lists, but
    `stream_options.include_usage` (a bool defaulting to false) still refused null: a client sending every field
    (`{"include_usage": null}`) got 400 "Expected `bool`, got `null`" where leaving it out streams without usage."""
    with svc.client() as c:
        with c.stream("POST", "/v1/chat/completions", json={**ASK, "max_tokens": 2, "stream": True,
                                                            "stream_options": {"include_usage": None, "include_obfuscation": None}}) as s:
            body = s.read().decode()
    assert s.status_code == 200, body
    assert body.rstrip().endswith("data: [DONE]") and '"usage":{' not in body, body[-400:]


@pytest.mark.parametrize("body,param", [
    ({"prompt": "What should I cook?", "responses": ["A curry.", " \n\t"]}, "responses[1]"),
    ({"prompt": "What should I cook?", "responses": ["\u200b"]}, "responses[0]"),
    ({"prompt": "What should I cook?", "responses": [""]}, "responses[0]"),
    ({"prompt": "   ", "responses": ["A curry.", "A steak."]}, "prompt"),
])
def test_a_blank_text_to_score_is_a_400_naming_it(svc, body, param):
    """Before: `POST /v1/rewards/score` scored a whitespace-only or zero-width answer (200 with a
    score and possibly `best_index` on it) and a blank prompt, while a comparison, a next-comparison
    pool and a chat's question refuse blank texts with a 400 naming the field."""
    with svc.client() as c:
        r = c.post("/v1/rewards/score", json={"user": "lena", **body})
    error = assert_error_shape(r, 400)
    assert error["param"] == param and error["message"].startswith(f"`{param}`"), error


@pytest.mark.parametrize("content_type,body", [
    ("application/json", b'{"key": "pk-secret-json"}'),
    ("application/x-www-form-urlencoded", b'{"key": "pk-secret-json"}'),  # curl -d '{...}' without -H: a form type
    ("text/plain", b"key=pk-secret-json"),
    ("application/json", b'{"' + b"k" * 200_000 + b'": 1}'),  # was named by its 200 KB field (test_break19)
    ("multipart/form-data; boundary=xyz", b'--xyz\r\nContent-Disposition: form-data; name="key"\r\n\r\npk-secret-json\r\n--xyz--\r\n'),
])
def test_a_login_body_that_is_not_a_form_is_a_415_saying_the_route_takes_a_form(svc, content_type, body):
    """Before: a JSON body (`{"key": "pk-..."}`) to the form-only `POST /admin/login` was a 400 naming
    one unknown field called `{"key": "pk-..."}`: the key sent came back in `param` and `message`.
    A multipart body was named the same way (its boundary and headers as a field name)."""
    r = httpx.post(svc.url + "/admin/login", content=body, headers={"Content-Type": content_type})
    error = assert_error_shape(r, 415)
    assert error["param"] == "body" and error["code"] == "unsupported_media_type", error
    assert "application/x-www-form-urlencoded" in error["message"] and "`key`" in error["message"], error
    assert "pk-secret-json" not in r.text and "kkkk" not in r.text and len(r.content) < 1000, r.text[:300]
    assert r.headers["accept"] == "application/x-www-form-urlencoded"


def test_the_login_form_still_signs_in(svc):
    r = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]})
    assert r.status_code == 303 and r.headers["location"] == "/admin/dashboard", r.text
    r = httpx.post(svc.url + "/admin/login", content=f"key={svc.keys['admin']}".encode())  # no Content-Type at all
    assert r.status_code == 303, r.text


def test_a_browser_may_send_the_routing_header_deploy_readme_asks_clients_for(svc):
    """Before: deploy/README.md routes a user's requests to one replica by `X-Pluralign-User` (clients
    send it), but CORS allowed only Authorization, Content-Type and Idempotency-Key: a browser app's
    preflight naming it was refused (400 "Headers not allowed"), so the app could not call the API."""
    preflight = httpx.options(svc.url + "/v1/chat/completions", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-pluralign-user"})
    assert preflight.status_code in (200, 204), preflight.text
    assert "x-pluralign-user" in preflight.headers["access-control-allow-headers"].lower(), preflight.headers


def test_serve_takes_the_data_folder_as_keys_does(tmp_path, tiny_generator_dir, tiny_pal_dir, monkeypatch):
    """Before: `pluralign serve --data-dir D` exited 2 ("unrecognized arguments: --data-dir D") while
    `pluralign keys --data-dir D` names the same folder; the service's folder could only be set by
    PLURALIGN_DATA_DIR. Now the key a first start issues lands in D (checked before any model loads).
    The key comes once the models are loaded: tiny ones, generating in the service's own process.
    In-process, the serving itself stubbed as tests/service/test_startup41_stop.py does: a process of its own
    (torch's imports, ~9 CPU-s) checked nothing more; the app's startup and shutdown still run around it."""
    from training.cli import main
    from training.commands import serve

    folder, cwd = tmp_path / "served", tmp_path / "cwd"
    cwd.mkdir()
    for name, value in {"PLURALIGN_DATA_DIR": tmp_path / "not-this-one", "PLURALIGN_GENERATOR": tiny_generator_dir,
                        "PLURALIGN_PAL_DIR": tiny_pal_dir, "PLURALIGN_GENERATION_PROCESS": "false"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(cwd)
    keys_at_serving = []

    def served(app, args, **_):
        keys_at_serving.append((folder / "api_keys.json").exists())
        from tests.service.tiny import LiveServer

        with LiveServer(app):  # the app's startup and shutdown (its runtime's threads end)
            pass
        return True, serve.CancelledRequests(app)

    monkeypatch.setattr(serve, "serve_until_stopped", served)
    handlers = logging.getLogger().handlers[:]
    with left_as_found():  # its logging, umask and data folder's lock put back; no thread of its left running
        assert main(["serve", "--data-dir", str(folder), "--port", str(free_port())]) == 0
    assert keys_at_serving == [True]
    assert not (tmp_path / "not-this-one").exists() and not (cwd / "data").exists()
    assert logging.getLogger().handlers == handlers  # a later test's lines go where pytest has them, not to this one's stderr


def test_every_exported_metric_is_in_the_docs_table(svc):
    """The other direction of test_break21a's check (documented => exported). Before:
    `pluralign_embed_truncated_texts_total` was exported but missing from docs/api.md's /metrics table
    (named only in a duplicated comment of the Operations block)."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.service.test_break21a import documented_metrics

    exported = {family.name for family in text_string_to_metric_families(httpx.get(svc.url + "/metrics").text)
                if family.name.startswith("pluralign_") and not family.name.endswith("_created")}  # prometheus_client's own
    documented = {name.removesuffix("_total") for name in documented_metrics(conditional=True)}
    assert exported <= documented, sorted(exported - documented)


def test_a_response_id_that_is_not_one_says_what_one_looks_like(svc):
    """Before: docs/api.md's `choice` example as written (`"response_id": "chatcmpl-…"`, a placeholder)
    answered "`response_id`: Expected `str` matching regex '^chatcmpl-[0-9a-f]{32}$(?!\\\\n)'": the
    service's own regex, with a lookahead only a Python reader can parse."""
    with svc.client() as c:
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": "chatcmpl-…", "chosen_index": 2})
    error = assert_error_shape(r, 400)
    assert error["param"] == "response_id" and "regex" not in error["message"], error
    assert "pluralign.response_id" in error["message"] and "32 hex digits" in error["message"], error


def test_serve_embeddings_starts_without_litestar_warnings(minilm):
    """Before: `pluralign serve-embeddings --port 8001` (deploy/README.md) printed two
    LitestarWarnings at every start ("Use of an asynchronous callable ... with sync_to_thread;
    sync_to_thread has no effect on async callable"), for its two async handlers."""
    import warnings

    from litestar.utils.warnings import LitestarWarning

    from service.embeddings.app import create_embeddings_app

    with warnings.catch_warnings():
        warnings.simplefilter("error", LitestarWarning)
        create_embeddings_app(minilm)


DOCS = ("README.md", "docs/api.md", "docs/admin.md", "deploy/README.md")
_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:\S*/)?(?:pluralign|python -m training\.cli)((?: [a-z][a-z-]+)+)(.*)"
                      r"|^(?:[A-Z_]+=\S+ )*\S*python (?:-m )?(benchmarks[./]\w+)(?:\.py)?(.*)")


def documented_command_lines() -> dict[tuple[str, ...], set[str]]:
    """{command words: options} of every `pluralign ...` and benchmark command line in DOCS's code
    blocks (continuation lines joined; a comment ends a line)."""
    found: dict[tuple[str, ...], set[str]] = {}
    for doc in DOCS:
        text = (REPO / doc).read_text().replace("\\\n", " ")
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for line in block.splitlines():
                match = _COMMAND.search(line.split("  #")[0])
                if not match:
                    continue
                if match[3]:
                    words, rest = ("-m", match[3].replace("/", ".")), match[4]
                else:
                    words, rest = tuple(match[1].split()), match[2]
                found.setdefault(words, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest))
    return found


def _help(parser, words: list[str]) -> tuple[str, int]:
    """What `pluralign <words> --help` prints (help, or the usage error) and its exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser.parse_args([*words, "--help"])
        except SystemExit as exc:
            return out.getvalue() + err.getvalue(), int(exc.code or 0)
    return out.getvalue(), 0


def _script_help(module: str) -> tuple[str, int]:
    """What `python -m <module> --help` prints (help, or the usage error) and its exit code: the script's
    `main()` (its `__main__` calls it) with `sys.argv` as `-m` sets it, in this process. A fresh interpreter
    for each of the four scripts took 1.6-2 s of CPU (torch and the store imported), 20 s and more under load."""
    import importlib

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [str(REPO / (module.replace(".", "/") + ".py")), "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            importlib.import_module(module).main()
    except SystemExit as exc:
        return out.getvalue() + err.getvalue(), int(exc.code or 0)
    finally:
        sys.argv = argv
    return out.getvalue() + err.getvalue(), 0


def test_every_option_a_documented_command_line_gives_exists():
    """Before: deploy/README.md's `benchmarks/replicas.py --seconds 30 --probes 60 --sync-ms 500`
    exited 2 ("unrecognized arguments: --seconds 30"): the script has no --seconds. Each command
    line of the docs' code blocks is checked against its own `--help`."""
    parser = make_parser()
    missing = []
    for words, options in documented_command_lines().items():
        if words[0] == "-m":  # a benchmark script
            if not options:
                continue
            text, code = _script_help(words[1])
            assert code == 0, (words, text[-500:])
        else:  # `pluralign ...`: the CLI's own parser, in this process
            command = list(words)
            while True:  # `pluralign keys create ...`: the longest prefix of words that is a command
                text, code = _help(parser, command)
                if code == 0 or len(command) <= 1:
                    break
                command = command[:-1]
            assert code == 0, (words, text[-500:])
        missing += [f"{' '.join(words)} {option}" for option in sorted(options) if option not in text]
    assert not missing, missing
