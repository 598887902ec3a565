"""Session 40, left over from 39's content types on JSON routes: a `charset` was ignored (a UTF-16 or
Latin-1 body read as UTF-8), `application/+json` (no subtype) was taken, a UTF-8 byte order mark
before the JSON was a generic `invalid_json` 400, and `pluralign serve-embeddings` read a body of any
type as JSON. Over HTTP, on the real app (uvicorn) and the real embeddings app."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.embeddings.app import create_embeddings_app
from tests.service.test_break19 import JSON_ROUTES
from tests.service.tiny import LiveServer, field_named, start_service

BOM = b"\xef\xbb\xbf"
FEEDBACK = {"type": "comparison", "user": "edge40", "prompt": "Café or tea?", "chosen": "Café crème.", "rejected": "Tea."}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("edge40"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000)
    with server:
        yield service


def error(r) -> dict:
    return r.json()["error"]


def stored_prompts(svc, user: str) -> list[str]:
    with svc.client() as c:
        r = c.get(f"/v1/users/{user}/preferences")
    assert r.status_code == 200, r.text
    return [row["prompt"] for row in r.json()["data"]]


@pytest.mark.parametrize("charset,codec", [("utf-16", "utf-16"), ("UTF-16LE", "utf-16-le"), ("utf-16be", "utf-16-be"),
                                           ("utf-32", "utf-32"), ('"utf-8"', "utf-8"),
                                           ('"UTF-16"; format=flowed', "UTF-16")])  # review 40: quoted, upper case, another parameter
def test_a_body_in_the_utf_charset_its_content_type_declares_is_read_in_it(svc, charset, codec):
    """A UTF-16 body declared `charset=utf-16` was read as UTF-8: a 400 `invalid_json` for a body the
    client had labelled rightly (RFC 4627 allowed UTF-16 and UTF-32; Express's body-parser reads
    them). It is read as declared: the text stored is the text sent."""
    user = f"cs-{codec}"
    body = json.dumps({**FEEDBACK, "user": user}, ensure_ascii=False).encode(codec)
    with svc.client() as c:
        r = c.post("/v1/feedback", content=body, headers={"Content-Type": f"application/json; charset={charset}"})
    assert r.status_code == 201, r.text
    assert stored_prompts(svc, user) == ["Café or tea?"]


@pytest.mark.parametrize("charset", ["latin-1", "ISO-8859-1", "windows-1252", "no-such-charset"])
def test_a_charset_other_than_unicode_is_a_415_naming_it(svc, charset):
    """`charset=latin-1` was ignored and the body read as UTF-8: an ASCII body was served, one holding
    `é` a 400 'not valid UTF-8' that did not say the charset was the problem. A Latin-1 decode cannot
    fail, so a UTF-8 body labelled Latin-1 (a client's default label) would have been stored as `CafÃ©`:
    it is a 415 naming `Content-Type` and the charset instead, for any body."""
    for body in (json.dumps(FEEDBACK).encode(), json.dumps(FEEDBACK, ensure_ascii=False).encode("latin-1")):
        with svc.client() as c:
            r = c.post("/v1/feedback", content=body, headers={"Content-Type": f"application/json; charset={charset}"})
        assert r.status_code == 415 and field_named(r) == "Content-Type", r.text
        assert error(r)["code"] == "unsupported_media_type" and r.headers["accept"] == "application/json", r.text
        assert f"charset={charset}" in error(r)["message"] and "UTF-8" in error(r)["message"], r.text


def test_a_body_that_is_not_valid_in_its_declared_charset_is_a_400_naming_it(svc):
    body = json.dumps(FEEDBACK).encode("utf-16-le") + b"\x00\xd8"  # a lone high surrogate at the end
    with svc.client() as c:
        r = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/json; charset=utf-16le"})
    assert r.status_code == 400 and field_named(r) == "body", r.text
    assert "not valid UTF-16LE" in error(r)["message"], r.text


@pytest.mark.parametrize("content_type", ["application/+json", "+json", "application/json+", "/+json"])
def test_a_json_suffix_without_a_subtype_is_not_a_json_type(svc, content_type):
    """`application/+json` ended with `+json` and was taken; it names no media type (RFC 6838 4.2: a
    subtype's name comes before its `+suffix`)."""
    with svc.client() as c:
        r = c.post("/v1/feedback", content=json.dumps(FEEDBACK).encode(), headers={"Content-Type": content_type})
    assert r.status_code == 415 and field_named(r) == "Content-Type", r.text


@pytest.mark.parametrize("who,method,path,body", JSON_ROUTES)
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded", None])
def test_a_utf8_byte_order_mark_before_the_json_is_ignored(svc, who, method, path, body, content_type):
    """RFC 8259 8.1: a parser MAY ignore a BOM. Notepad and PowerShell's `Out-File` write one, so
    `curl --data-binary @body.json` sent it, and every JSON route answered a 400 `invalid_json`
    ('invalid character') that did not name it. The BOM is ignored, under every type that is taken."""
    headers = {"Content-Type": content_type} if content_type else {}
    with svc.client(who) as c:
        r = c.request(method, path, content=BOM + json.dumps(body).encode(), headers=headers)
    assert r.status_code < 300 or field_named(r) == "params.min_group_size", r.text


def test_a_bom_before_something_that_is_not_json_is_still_a_400_naming_body(svc):
    with svc.client() as c:
        r = c.post("/v1/feedback", content=BOM + b"hello", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and field_named(r) == "body" and error(r)["code"] == "invalid_json", r.text


class ZeroEncoder:
    encoder_id, dim = "zero", 3

    def encode(self, texts):
        return np.zeros((len(texts), self.dim), dtype=np.float32)


@pytest.fixture(scope="module")
def embeddings():
    with LiveServer(create_embeddings_app(ZeroEncoder())) as server:
        yield server


def test_the_embeddings_server_takes_json_bodies_as_the_api_service_does(embeddings):
    """`pluralign serve-embeddings`' `/v1/embeddings` read a body of any type as JSON (a `text/plain`
    body was served, a UTF-16 one a 400, a BOM a 400): it follows the service's rules now, its 415s
    in OpenAI's error shape naming `Content-Type`."""
    import httpx

    valid = json.dumps({"input": "café", "model": "zero"}, ensure_ascii=False)
    url = f"{embeddings.url}/v1/embeddings"
    for content_type, raw in [("text/plain", valid.encode()), ("application/+json", valid.encode()),
                              ("application/json; charset=latin-1", valid.encode("latin-1")),
                              ("application/x-www-form-urlencoded", b"input=a&model=zero")]:
        r = httpx.post(url, content=raw, headers={"Content-Type": content_type})
        assert r.status_code == 415 and field_named(r) == "Content-Type", (content_type, r.text)
        assert error(r)["type"] == "invalid_request_error" and error(r)["code"] == "unsupported_media_type", r.text
    for content_type, raw in [("application/json", BOM + valid.encode()), ("application/json; charset=utf-16", valid.encode("utf-16")),
                              ("application/x-www-form-urlencoded", valid.encode()), (None, valid.encode())]:
        r = httpx.post(url, content=raw, headers={"Content-Type": content_type} if content_type else {})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 3, (content_type, r.text)


@pytest.mark.parametrize("charset,codec", [("utf-16", "utf-16-be"), ("utf-16", "utf-16-le"), ("utf-32", "utf-32-be"), ("utf-32", "utf-32-le")])
def test_a_utf_16_or_32_body_without_a_byte_order_mark_is_read_in_the_order_its_bytes_show(svc, charset, codec):
    """Review 40: `charset=utf-16` (or `utf-32`) without a BOM was read in Python's native order (little-endian):
    a big-endian body, the order RFC 2781 4.3 takes when there is no BOM, was a 400 'not valid JSON' (UTF-16) or
    'not valid UTF-32' for a body labelled rightly. JSON's first character is ASCII, so its zero bytes show the
    order (RFC 4627 section 3): both orders are read."""
    user = f"nobom-{codec}"
    body = json.dumps({**FEEDBACK, "user": user}, ensure_ascii=False).encode(codec)
    with svc.client() as c:
        r = c.post("/v1/feedback", content=body, headers={"Content-Type": f"application/json; charset={charset}"})
    assert r.status_code == 201, r.text
    assert stored_prompts(svc, user) == ["Café or tea?"]


def test_an_import_body_starting_with_a_utf8_bom_is_read_as_json_routes_read_one(svc):
    """Review 40: the JSON routes ignore a leading UTF-8 BOM; the import route (JSON lines) refused one,
    a 400 `line 1` 'save the file as UTF-8 without one' (`curl --data-binary @file.jsonl` of a Notepad file)."""
    rows = [{"prompt": "Café or tea?", "chosen": "Café.", "rejected": "Tea."}, {"prompt": "Q?", "chosen": "A.", "rejected": "B."}]
    body = BOM + b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    with svc.client() as c:
        r = c.post("/v1/users/bom-import/import", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 201 and len(r.json()["stored"]) == 2, r.text
        r = c.post("/v1/users/bom-import2/import", content=BOM, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400 and field_named(r) == "body", r.text  # a lone BOM is an empty body, as on the JSON routes
    assert sorted(stored_prompts(svc, "bom-import")) == ["Café or tea?", "Q?"]


def test_the_import_route_reads_a_charset_as_the_json_routes_do(svc):
    """Review 40: the import route (JSON lines, any type) ignored its `charset`: a UTF-16 body labelled
    `charset=utf-16` was a 400 'save the file as UTF-8', and `charset=latin-1` was read as UTF-8 (an ASCII
    or UTF-8 body stored, a Latin-1 one a 400 'not valid UTF-8'), where the JSON routes read UTF-16/32 and
    refuse other charsets with a 415 naming `Content-Type`. It reads them as they do now."""
    rows = [{"prompt": "Café or tea?", "chosen": "Café.", "rejected": "Tea."}, {"prompt": "Q?", "chosen": "A.", "rejected": "B."}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with svc.client() as c:
        for user, charset, codec in [("imp-16", "utf-16", "utf-16"), ("imp-16be", "utf-16", "utf-16-be"), ("imp-32", "UTF-32LE", "utf-32-le")]:
            r = c.post(f"/v1/users/{user}/import", content=text.encode(codec),
                       headers={"Content-Type": f"application/x-ndjson; charset={charset}"})
            assert r.status_code == 201 and len(r.json()["stored"]) == 2, (codec, r.text)
            assert sorted(stored_prompts(svc, user)) == ["Café or tea?", "Q?"]
        for raw in (text.encode("latin-1"), text.encode()):
            r = c.post("/v1/users/imp-latin/import", content=raw, headers={"Content-Type": "application/x-ndjson; charset=latin-1"})
            assert r.status_code == 415 and field_named(r) == "Content-Type" and "charset=latin-1" in error(r)["message"], r.text
        assert c.get("/v1/users/imp-latin/preferences").status_code == 404  # nothing stored
    import httpx

    declared = httpx.get(svc.url + "/schema/openapi.json").json()["paths"]["/v1/users/{user_id}/import"]["post"]["responses"]["415"]
    assert "charset" in declared["description"], declared  # the document said a 415 was for the type or coding alone


def test_an_idempotent_retry_in_another_charset_is_the_same_request(svc):
    """Review 40: the key names the rows, and the body is read into the same text whatever its charset:
    the same feedback sent as UTF-8, then again as UTF-16 under the same `Idempotency-Key`, is a replay
    of the first receipt, not a second row or a conflict."""
    body = {**FEEDBACK, "user": "idem-cs"}
    with svc.client() as c:
        first = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "edge40-cs"})
        again = c.post("/v1/feedback", content=json.dumps(body, ensure_ascii=False).encode("utf-16"),
                       headers={"Idempotency-Key": "edge40-cs", "Content-Type": "application/json; charset=utf-16"})
    assert first.status_code == 201 and again.status_code == 201, (first.text, again.text)
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json(), again.text
    assert stored_prompts(svc, "idem-cs") == ["Café or tea?"]


def test_curl_sends_a_notepad_file_and_a_utf16_one_as_users_do(svc, tmp_path):
    """The real curl: `--json @file` of a file Notepad saved with a BOM, and `--data-binary @file` of a UTF-16
    file (PowerShell 5's `Out-File` default) labelled `charset=utf-16`."""
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("no curl")
    for name, raw, options in [
        ("notepad.json", BOM + json.dumps({**FEEDBACK, "user": "curl-bom"}, ensure_ascii=False).encode(), ["--json"]),
        ("ps.json", json.dumps({**FEEDBACK, "user": "curl-16"}, ensure_ascii=False).encode("utf-16"),
         ["-H", "Content-Type: application/json; charset=utf-16", "--data-binary"]),
    ]:
        (tmp_path / name).write_bytes(raw)
        done = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", f"Authorization: Bearer {svc.keys['acme']}",
                               *options, f"@{tmp_path / name}", f"{svc.url}/v1/feedback"], capture_output=True, text=True, timeout=60)
        assert done.stdout.rstrip().endswith("201"), (name, done.stdout, done.stderr)
    assert stored_prompts(svc, "curl-bom") == stored_prompts(svc, "curl-16") == ["Café or tea?"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf_16_or_32_body_sent_without_its_charset_is_a_400_saying_how_to_send_it(svc, codec):
    """Review 40: a UTF-16 file (PowerShell 5's `>` and `Out-File` write one) sent as `application/json` with no
    charset was a 400 'not valid JSON: invalid character (byte 0)' that did not say why, though session 40 reads
    such a body once its charset is declared. The 400 now says it looks UTF-16 or UTF-32 and how to send it."""
    body = json.dumps({**FEEDBACK, "user": "no-charset"}, ensure_ascii=False).encode(codec)
    with svc.client() as c:
        r = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and field_named(r) == "body" and error(r)["code"] == "invalid_json", r.text
    assert "UTF-16" in error(r)["message"] and "charset=utf-16" in error(r)["message"], r.text


def test_the_body_limit_counts_the_bytes_sent_before_any_charset_is_read(svc):
    """Review 40: the limit (`PLURALIGN_MAX_BODY_BYTES`, 1 MB here) is Litestar's, on the bytes as they arrive,
    before `read_json_body` decodes them: a UTF-16 body over it is a 413 like any other, and one under it is read
    (UTF-8 text is at most 1.5 times its UTF-16 bytes, so what is kept stays within a small multiple of the limit)."""
    limit = svc.runtime.settings.max_body_bytes
    over = json.dumps({**FEEDBACK, "user": "big16", "prompt": "x" * (limit // 2)}).encode("utf-16")
    under = json.dumps({**FEEDBACK, "user": "big16"}, ensure_ascii=False).encode("utf-16")
    with svc.client() as c:
        r = c.post("/v1/feedback", content=over, headers={"Content-Type": "application/json; charset=utf-16"})
        assert len(over) > limit and r.status_code == 413, r.text
        r = c.post("/v1/feedback", content=under, headers={"Content-Type": "application/json; charset=utf-16"})
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("body,charset", [(b"", None), (BOM, None), (BOM + b" \r\n\t", None), (b"\xff\xfe", "utf-16"),
                                          ("  ".encode("utf-16"), "utf-16")])
def test_an_empty_body_after_its_byte_order_mark_says_it_is_empty(svc, body, charset):
    """Review 40: a lone BOM, or one before white space only, in UTF-8 or in a declared UTF-16, is the empty
    body's 400 (what to send), not 'invalid character'."""
    content_type = "application/json" + (f"; charset={charset}" if charset else "")
    with svc.client() as c:
        r = c.post("/v1/feedback", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400 and field_named(r) == "body" and "the request body is empty" in error(r)["message"], r.text


def test_a_form_typed_json_body_in_a_declared_utf_16_is_read_as_the_utf8_one_is(svc):
    """Review 40: a JSON body under the form type is taken (`curl -d`, session 19), but its JSON was told from a
    form on the bytes as sent, before its charset was read: a UTF-16 one labelled `charset=utf-16` was a 415
    'a form body'. Its charset is read first now."""
    body = json.dumps({**FEEDBACK, "user": "form16"}, ensure_ascii=False).encode("utf-16")
    with svc.client() as c:
        r = c.post("/v1/feedback", content=body, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"})
    assert r.status_code == 201, r.text
    assert stored_prompts(svc, "form16") == ["Café or tea?"]


def test_a_streamed_chat_sent_in_utf_16_streams(svc):
    """Review 40: the body read in its charset by `read_json_body` (`DecodedRequest.read_as`, session edge41)
    is what a streaming handler reads too: a chat sent in UTF-16 streams its chunks to `[DONE]`."""
    chat = {"model": "pluralign", "user": "stream16", "stream": True, "max_tokens": 4, "seed": 1,
            "messages": [{"role": "user", "content": "Café?"}]}
    with svc.client() as c, c.stream("POST", "/v1/chat/completions", content=json.dumps(chat, ensure_ascii=False).encode("utf-16"),
                                     headers={"Content-Type": "application/json; charset=utf-16"}) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and any('"delta"' in line for line in lines), lines[-3:]


# session edge41: the dashboard's login form and the embeddings server read a body as the JSON routes do


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be"])
def test_the_login_form_reads_the_charset_its_content_type_declares(svc, codec):
    """The admin login form (`POST /admin/login`, a form) read its body as UTF-8 whatever its `charset`: a form
    labelled `charset=utf-16` was parsed from its bytes, NULs and all: the right key was a 400 naming an unknown
    field `\x00k\x00e\x00y\x00` (`\xff\xfek...` after a BOM). It is read in its charset, as the JSON routes read
    theirs (`service.strict.body_in_utf8`)."""
    import httpx

    body = f"key={svc.keys['admin']}".encode(codec)
    r = httpx.post(f"{svc.url}/admin/login", content=body, follow_redirects=False,
                   headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/dashboard", (r.status_code, r.text[:300])
    assert "pluralign_admin" in r.headers.get("set-cookie", ""), r.headers


def test_the_login_form_refuses_a_charset_the_json_routes_refuse_naming_content_type(svc):
    """`charset=latin-1` (any charset not UTF) was read as UTF-8 by the login form; the JSON routes answer it 415
    naming `Content-Type` (a Latin-1 decode never fails, so a mislabelled body would pass unseen): so does the form."""
    import httpx

    r = httpx.post(f"{svc.url}/admin/login", content=f"key={svc.keys['admin']}".encode(), follow_redirects=False,
                   headers={"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"})
    assert r.status_code == 415 and field_named(r) == "Content-Type", (r.status_code, r.text[:300])
    assert "charset=latin-1 is not taken" in error(r)["message"], r.text
    # review e41: the form's own words; it said "JSON is read as UTF-8 (RFC 8259 ...)" to an admin sending a form
    assert "form is read as UTF-8" in error(r)["message"] and "JSON" not in error(r)["message"], r.text
    r = httpx.post(f"{svc.url}/admin/login", content="key=ab".encode("utf-16-le")[:-1], follow_redirects=False,
                   headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-16le"})
    assert r.status_code == 400 and field_named(r) == "body" and error(r)["code"] == "invalid_value", r.text  # not `invalid_json`
    assert "not valid UTF-16LE" in error(r)["message"], r.text


@pytest.mark.parametrize("codec", ["utf-16", "utf-32"])
def test_the_embeddings_server_says_a_body_sent_without_its_charset_looks_utf_16(embeddings, codec):
    """`pluralign serve-embeddings` answered a UTF-16 body sent as `application/json` without a charset with
    Litestar's bare "not valid JSON: ... invalid character (byte 0)"; the API service's JSON routes say it looks
    UTF-16 and how to send it (`service.strict`): the embeddings server now says the same."""
    import httpx

    body = json.dumps({"input": "café", "model": "zero"}, ensure_ascii=False).encode(codec)
    r = httpx.post(f"{embeddings.url}/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and field_named(r) == "body" and error(r)["code"] == "invalid_json", r.text
    assert "looks UTF-16 or UTF-32" in error(r)["message"] and "charset=utf-16" in error(r)["message"], r.text
    assert error(r)["type"] == "invalid_request_error", r.text


def test_the_embeddings_server_answers_a_body_nested_too_deeply_as_the_api_service_does(embeddings):
    """Review e41: edge41 said a too-deep body is the API service's 400 on the embeddings server too, untested:
    without `check_json_body`'s catch it is Litestar's decode's RecursionError, a 500 `internal error` logged
    as an unhandled error."""
    import httpx

    r = httpx.post(f"{embeddings.url}/v1/embeddings", content=b"[" * 100_000 + b"]" * 100_000,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and field_named(r) == "body" and "nested too deeply" in error(r)["message"], r.text
    assert error(r)["code"] == "invalid_json", r.text  # as the API service and an import's too-deep line say


def test_the_embeddings_server_logs_a_client_gone_while_its_body_arrives_as_499(embeddings):
    """Review e41: as on the API service (test_exportcap38), a client that went while its body was arriving is its
    hang-up, not the server's failure: serve-embeddings' access line said 500 (Litestar's "client disconnected
    prematurely" answered as any HTTPException)."""
    import logging
    import socket
    import time

    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append
    logging.getLogger("pluralign.access").addHandler(handler)
    try:
        s = socket.create_connection(("127.0.0.1", embeddings.port))
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        s.close()
        deadline = time.time() + 20
        while not lines and time.time() < deadline:
            time.sleep(0.02)
    finally:
        logging.getLogger("pluralign.access").removeHandler(handler)
    assert [r.access["status"] for r in lines] == [499], [r.getMessage() for r in lines]


def test_a_file_uploaded_as_a_multipart_form_to_the_import_route_is_a_415_saying_to_send_it_as_the_body(svc):
    """Session user42: a preference file uploaded as a form (`curl -F file=@prefs.jsonl`, requests' or httpx's
    `files=`), the way many upload APIs take a file, was read as JSON lines: a 400 "`line 1`: malformed JSON
    (invalid character (byte 1))" that did not say the form was the problem. It is a 415 naming `Content-Type`
    that says how to send the file (as the body), nothing stored."""
    import httpx

    rows = b'{"prompt": "Tea?", "chosen": "Tea.", "rejected": "Coffee."}\n'
    r = httpx.post(svc.url + "/v1/users/upload42/import", files={"file": ("prefs.jsonl", rows, "application/x-ndjson")},
                   headers={"Authorization": f"Bearer {svc.keys['acme']}"})
    assert r.status_code == 415, r.text
    assert error(r)["param"] == "Content-Type" and "--data-binary" in error(r)["message"], r.text
    assert r.headers["accept"] == "application/x-ndjson"
    with svc.client() as c:
        assert c.get("/v1/users/upload42").status_code == 404  # nothing stored


def test_the_embeddings_server_refuses_two_content_types_and_a_content_coding_as_the_api_service_does(embeddings):
    """Review reviewtrial51: docs/api.md names `/v1/embeddings` among the JSON routes whose rules the embeddings
    server follows, and says a body sent with `Content-Type` twice is a 400 naming it (session trial51), and one with a
    `Content-Encoding` a 415 naming that, with `Accept-Encoding: identity`. The embeddings server read the first type
    (`application/json` then `text/plain` was served, the other order a 415), read a gzipped body as JSON (a 400
    `invalid_json` naming `body`) and served a plain one labelled gzip."""
    import gzip

    import httpx

    url = f"{embeddings.url}/v1/embeddings"
    valid = json.dumps({"input": "a", "model": "zero"}).encode()
    for types in (("application/json", "text/plain"), ("text/plain", "application/json"), ("application/json", "application/json")):
        r = httpx.post(url, content=valid, headers=[("Content-Type", t) for t in types])
        assert r.status_code == 400 and field_named(r) == "Content-Type", (types, r.text)
        assert error(r)["type"] == "invalid_request_error" and "2 `Content-Type` headers" in error(r)["message"], r.text
    for codings, raw in ((("gzip",), gzip.compress(valid)), (("gzip",), valid), (("identity", "gzip"), gzip.compress(valid))):
        r = httpx.post(url, content=raw, headers=[("Content-Type", "application/json")] + [("Content-Encoding", c) for c in codings])
        assert r.status_code == 415 and field_named(r) == "Content-Encoding", (codings, r.text)
        assert r.headers["accept-encoding"] == "identity" and error(r)["code"] == "unsupported_media_type", r.text
    r = httpx.post(url, content=valid, headers=[("Content-Type", "application/json"), ("Content-Encoding", "identity")])
    assert r.status_code == 200, r.text


def raw_feedback(port: int, key: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, dict]:
    """A feedback POST sent on a raw socket with `headers` (each line as given) and `body` as it goes on the wire;
    (the answer's status, its JSON body)."""
    import socket

    head = (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            "Connection: close\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(head.encode() + body)
        answer = b""
        while piece := client.recv(65536):
            answer += piece
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_body_with_a_transfer_coding_besides_chunked_is_refused_naming_transfer_encoding(svc, monkeypatch, http):
    """Session small53, before (pluralign serve's protocol): httptools, uvicorn's default parser, took `Transfer-Encoding:
    gzip, chunked`, undid the chunks alone and handed the app the gzip bytes (a 400 'not valid JSON' naming `body`), or a
    plain body labelled gzip, which was stored; h11 refused it, and `gzip` alone or `chunked, gzip` on both parsers, as
    'not HTTP/1.1 this service can read', naming nothing. Now: a coding besides a final `chunked` is a 415 naming
    `Transfer-Encoding` (bodies are read as sent, as a `Content-Encoding` is refused), one where `chunked` is not last a
    400 naming it (RFC 9112 6.3: the body's length cannot be known), on both parsers; plain `chunked` is read."""
    import gzip

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    user = f"coded-{http}"
    plain = json.dumps({**FEEDBACK, "user": user}).encode()
    packed = gzip.compress(plain)
    refused = [
        ([("Transfer-Encoding", "gzip, chunked")], chunked(packed), 415, "Transfer-Encoding"),
        ([("Transfer-Encoding", "gzip, chunked")], chunked(plain), 415, "Transfer-Encoding"),  # labelled gzip, sent plain
        ([("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], chunked(packed), 415, "Transfer-Encoding"),
        ([("Transfer-Encoding", "gzip")], packed, 400, "Transfer-Encoding"),
        ([("Transfer-Encoding", "chunked, gzip")], chunked(plain), 400, "Transfer-Encoding"),
        # review reviewsmall53: chunked twice (on one line or two) was the 415 saying to send it uncompressed
        ([("Transfer-Encoding", "chunked, chunked")], chunked(chunked(plain)), 400, "Transfer-Encoding"),
        ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], chunked(chunked(plain)), 400, "Transfer-Encoding"),
        ([("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")], chunked(packed), 415, "Content-Encoding"),
    ]
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        answers = [(raw_feedback(port, svc.keys["acme"], headers, body), status, param) for headers, body, status, param in refused]
        taken = raw_feedback(port, svc.keys["acme"], [("Transfer-Encoding", "chunked")], chunked(plain))
    for (got, body), status, param in answers:
        assert (got, body["error"]["param"]) == (status, param), (got, body)
    assert taken[0] == 201, taken  # chunked alone: decoded and stored
    assert stored_prompts(svc, user) == [FEEDBACK["prompt"]]  # only the chunked one: nothing refused was stored


def answers_on_the_wire(port: int, *writes: bytes) -> list[tuple[int, dict]]:
    """Each of `writes` sent on one raw connection (a short pause between them, so each is a read of its own); every
    answer read to the server's close, as (status, its JSON body)."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        for data in writes:
            client.sendall(data)
            time.sleep(0.05)
        answer = b""
        while piece := client.recv(65536):
            answer += piece
    out = []
    while answer.startswith(b"HTTP/1.1 "):
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
        out.append((int(head.split()[1]), json.loads(rest[:length])))
        answer = rest[length:]
    return out


def test_httptools_refusal_names_transfer_encoding_of_the_refused_request_alone(svc, monkeypatch):
    """Review reviewsmall53: the parser's refusal read the Transfer-Encoding of the first head in the bytes it was
    reading, not of the request it refused. A request pipelined behind one labelled `gzip, chunked` (the app's 415) and
    refused for a malformed header was answered a second 415 naming `Transfer-Encoding`, a header it did not have; a
    `chunked, gzip` head that came in two reads, or behind another request in one, was the 400 naming nothing. httptools
    gives the refused request's own headers: they are read."""
    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, "httptools")
    key = svc.keys["acme"]
    plain = json.dumps({**FEEDBACK, "user": "coded-pipelined"}).encode()

    def head(*lines: str) -> bytes:
        return (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()

    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        labelled = answers_on_the_wire(port, head("Transfer-Encoding: gzip, chunked") + chunked(plain)
                                       + b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        behind = answers_on_the_wire(port, head(f"Content-Length: {len(plain)}") + plain
                                     + head("Transfer-Encoding: chunked, gzip", "Connection: close") + plain)
        bad = head("Transfer-Encoding: chunked, gzip", "Connection: close")
        split = answers_on_the_wire(port, bad[:-30], bad[-30:] + plain)
        both = answers_on_the_wire(port, head("Transfer-Encoding: gzip, chunked", f"Content-Length: {len(chunked(plain))}",
                                              "Connection: close") + chunked(plain))
    assert [(status, body["error"]["param"], body["error"]["code"]) for status, body in labelled] == [
        (415, "Transfer-Encoding", "unsupported_media_type"), (400, None, "invalid_http")], labelled
    assert [status for status, _ in behind] == [201, 400] and behind[1][1]["error"]["param"] == "Transfer-Encoding", behind
    assert [(status, body["error"]["param"]) for status, body in split] == [(400, "Transfer-Encoding")], split
    assert [(status, body["error"]["param"]) for status, body in both] == [(400, "Transfer-Encoding")], both  # a 415 before


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_transfer_encoding_beside_content_length_is_refused_and_the_connection_closed(svc, monkeypatch, http):
    """Review reviewlate53b: h11 read the chunks of a request sent with `Transfer-Encoding: chunked` and `Content-Length`
    both, answered it and kept the connection open, so what followed the chunks was served as a request of its own:
    request smuggling behind a proxy that frames by `Content-Length` (RFC 9112 6.3: such a request ought to be handled
    as an error, and the server MUST close the connection after responding to it). httptools refused it (the 400 naming
    `Transfer-Encoding`); h11 now does too, and neither reads anything after it."""
    import socket

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    key = svc.keys["acme"]
    user = f"framed-twice-{http}"
    body = chunked(json.dumps({**FEEDBACK, "user": user}).encode())
    smuggled = f"GET /v1/users/{user}/preferences HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    request = (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
               f"Transfer-Encoding: chunked\r\nContent-Length: {len(body) + len(smuggled)}\r\n\r\n").encode() + body + smuggled
    with timed_server(svc.server.server.config.app, timeout_s=10) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(request)
        answer = b""
        while piece := client.recv(65536):  # to the server's close (uvicorn's keep-alive closed it after 5 s before)
            answer += piece
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the smuggled GET was answered too
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"connection: close" in head.lower(), head
    assert json.loads(rest)["error"]["param"] == "Transfer-Encoding", rest
    with svc.client() as c:  # nothing of the refused request stored
        assert c.get(f"/v1/users/{user}/preferences").status_code == 404


def test_h11_refusal_names_transfer_encoding_of_a_request_pipelined_behind_another(svc, monkeypatch):
    """Review reviewlate53b: on h11 a request refused for its `Transfer-Encoding` (`gzip, chunked`, `chunked, gzip`) that
    came behind another in one read was the 400 naming nothing (`invalid_http`): h11 parses it once the first is
    answered, outside any read, and the refusal read the head from the bytes of the read it was refused in. It is the
    415 or 400 naming `Transfer-Encoding`, as alone, and as on httptools."""
    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, "h11")
    key = svc.keys["acme"]
    plain = json.dumps({**FEEDBACK, "user": "coded-behind-h11"}).encode()

    def head(*lines: str) -> bytes:
        return (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                + "".join(f"{line}\r\n" for line in lines) + "\r\n").encode()

    first = head(f"Content-Length: {len(plain)}") + plain
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        coded = answers_on_the_wire(port, first + head("Transfer-Encoding: gzip, chunked", "Connection: close") + chunked(plain))
        last = answers_on_the_wire(port, first + head("Transfer-Encoding: chunked, gzip", "Connection: close") + plain)
        malformed = answers_on_the_wire(port, head("Transfer-Encoding: chunked") + chunked(plain)
                                        + b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert [(status, body.get("error", {}).get("param")) for status, body in coded] == [(201, None), (415, "Transfer-Encoding")], coded
    assert [(status, body.get("error", {}).get("param")) for status, body in last] == [(201, None), (400, "Transfer-Encoding")], last
    # the refused request's own head is read, not the one before it
    assert [(status, body.get("error", {}).get("param")) for status, body in malformed] == [(201, None), (400, None)], malformed


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_an_http10_request_with_transfer_encoding_is_refused_and_the_connection_closed(svc, monkeypatch, http):
    """Session http54: both parsers read an HTTP/1.0 request's `Transfer-Encoding: chunked` body, and the service stored it
    and kept a keep-alive connection open for what followed, though HTTP/1.0 has no chunked framing (RFC 9112 6.1: a
    server MUST treat such a message as having faulty framing and close the connection): a proxy of HTTP/1.0 framing it
    otherwise smuggles what comes after. Now the 400 naming `Transfer-Encoding`, `Connection: close`, nothing stored, and
    nothing after it answered; an HTTP/1.0 request with `Content-Length` is still served."""
    import socket

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    key = svc.keys["acme"]
    user = f"http10-chunked-{http}"
    body = chunked(json.dumps({**FEEDBACK, "user": user}).encode())
    smuggled = f"GET /v1/users/{user}/preferences HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    request = (f"POST /v1/feedback HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
               "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + body + smuggled
    plain = json.dumps({**FEEDBACK, "user": f"http10-plain-{http}"}).encode()
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            client.sendall(request)
            answer = b""
            while piece := client.recv(65536):  # to the server's close
                answer += piece
        taken = answers_on_the_wire(port, (f"POST /v1/feedback HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                                           f"Content-Type: application/json\r\nContent-Length: {len(plain)}\r\n\r\n").encode() + plain)
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # before: the 201, then the GET's 200 on the same connection
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"connection: close" in head.lower(), head
    refusal = json.loads(rest)["error"]
    assert refusal["param"] == "Transfer-Encoding" and "HTTP/1.0" in refusal["message"], refusal
    assert [status for status, _ in taken] == [201], taken
    with svc.client() as c:  # nothing of the refused request stored
        assert c.get(f"/v1/users/{user}/preferences").status_code == 404


def read_answers(client, count: int) -> list[tuple[bytes, bytes]]:
    """`count` answers read from `client` as they come (not to the server's close): (head, body) each, a `100 Continue`
    among them too."""
    data, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            data += client.recv(65536) or b"<closed>"
            assert not data.endswith(b"<closed>"), (data, out)
        head, _, data = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        while len(data) < length:
            data += client.recv(65536)
        out.append((head, data[:length]))
        data = data[length:]
    return out


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_an_expectation_besides_100_continue_is_a_417_naming_expect_before_the_body_is_read(svc, monkeypatch, http):
    """Session http54: a request whose `Expect` held anything but `100-continue` was served as if the header were not
    there (RFC 9110 10.1.1: a server may answer 417 to an expectation it cannot meet). Now the 417 naming `Expect`
    (`code: expectation_failed`), at once, before its body has come (a client waiting to send it is answered), and
    nothing stored; `100-continue` still gets its 100 and is served."""
    import socket

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    key = svc.keys["acme"]

    def head(user: str, expect: str, length: int) -> bytes:
        return (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                f"Expect: {expect}\r\nContent-Length: {length}\r\n\r\n").encode()

    answers = {}
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        for expect in ("x-wait-for-me", "100-continue, x-also", "100-Continue"):
            user = f"expects-{len(answers)}-{http}"
            body = json.dumps({**FEEDBACK, "user": user}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(head(user, expect, len(body)))  # the body waits for the answer, as a client expecting does
                first = read_answers(client, 1)
                if first[0][0].startswith(b"HTTP/1.1 100 "):
                    client.sendall(body)
                    first += read_answers(client, 1)
            answers[expect] = (user, first)
    for expect in ("x-wait-for-me", "100-continue, x-also"):
        user, [(status, body)] = answers[expect]
        assert status.startswith(b"HTTP/1.1 417 "), (expect, status, body)
        error = json.loads(body)["error"]
        assert (error["param"], error["code"]) == ("Expect", "expectation_failed") and "x-" in error["message"], error
        with svc.client() as c:
            assert c.get(f"/v1/users/{user}/preferences").status_code == 404
    user, [(continued, _), (status, body)] = answers["100-Continue"]
    assert continued.startswith(b"HTTP/1.1 100 ") and status.startswith(b"HTTP/1.1 201 "), (continued, status, body)
    assert stored_prompts(svc, user) == [FEEDBACK["prompt"]]
    import httpx

    paths = httpx.get(svc.url + "/schema/openapi.json").json()["paths"]  # every operation declares the 417
    assert all("417" in op["responses"] for ops in paths.values() for op in ops.values() if isinstance(op, dict) and "responses" in op)


def test_the_embeddings_server_answers_an_unknown_expectation_417_as_the_api_service_does(embeddings):
    """Session http54: `pluralign serve-embeddings` served a request whose `Expect` it cannot meet, as the API service did;
    both now answer the 417 naming `Expect` before reading the body (`service.strict.refuse_expectation`)."""
    import httpx

    body = {"input": ["hello"], "model": "zero"}
    refused = httpx.post(embeddings.url + "/v1/embeddings", json=body, headers={"Expect": "x-priority"})
    assert refused.status_code == 417, refused.text
    assert (error(refused)["param"], error(refused)["code"]) == ("Expect", "expectation_failed"), refused.text
    assert httpx.post(embeddings.url + "/v1/embeddings", json=body).status_code == 200


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_an_http10_request_expecting_100_continue_gets_no_100_and_is_served(svc, monkeypatch, http):
    """Review reviewhttp54: httptools (uvicorn's default parser) answered an HTTP/1.0 request's `Expect: 100-continue`
    with `HTTP/1.1 100 Continue`, which an HTTP/1.0 client does not know of and reads as the answer (RFC 9110 10.1.1: a
    server MUST ignore that expectation in an HTTP/1.0 request; 15.2: it MUST NOT send a 1xx to an HTTP/1.0 client);
    h11 ignored it. Now neither sends it: the body sent after the head is read and the request answered once, 201."""
    import socket

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    key, user = svc.keys["acme"], f"http10-expects-{http}"
    body = json.dumps({**FEEDBACK, "user": user}).encode()
    head = (f"POST /v1/feedback HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            client.sendall(head)
            client.settimeout(0.3)  # an HTTP/1.1 client waits up to a second for the 100 before it sends the body anyway
            with pytest.raises(TimeoutError):
                early = client.recv(65536)
                pytest.fail(f"answered before the body: {early!r}")
            client.settimeout(20)
            client.sendall(body)
            answer = b""
            while piece := client.recv(65536):  # an HTTP/1.0 connection closes after its answer
                answer += piece
    assert answer.startswith(b"HTTP/1.1 201 ") and answer.count(b"HTTP/1.1 ") == 1, answer
    assert stored_prompts(svc, user) == [FEEDBACK["prompt"]]


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_streamed_answer_to_an_http10_request_is_not_chunked(svc, monkeypatch, http):
    """Review reviewhttp54: HTTP/1.0 has no chunked framing (RFC 9112 6.1: a server MUST NOT send `Transfer-Encoding` in
    a response to an HTTP/1.0 request), yet on httptools, uvicorn's default parser, an answer of no `Content-Length` (a
    user's export, a streamed chat) went to an HTTP/1.0 client chunked: the chunk sizes ("1f4\r\n") read as part of the
    JSON lines. h11 ended such an answer by closing the connection, as HTTP/1.0 frames it; now httptools does too."""
    import socket

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    user = f"http10-export-{http}"
    with svc.client() as c:
        assert c.post("/v1/feedback", json={**FEEDBACK, "user": user}).status_code == 201
    request = f"GET /v1/users/{user}/export HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {svc.keys['acme']}\r\n\r\n".encode()
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            client.sendall(request)
            answer = b""
            while piece := client.recv(65536):  # to the server's close: what frames an HTTP/1.0 answer
                answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding" not in head.lower(), head
    assert b"connection: close" in head.lower() and b"content-length" not in head.lower(), head
    lines = [json.loads(line) for line in body.splitlines()]  # before: "1f4" (a chunk's size) is no JSON line
    assert [row["prompt"] for row in lines if row.get("prompt")] == [FEEDBACK["prompt"]], lines


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_json_route_sent_text_expecting_100_continue_is_a_415_before_the_100(svc, monkeypatch, http):
    """Review misc54a: a JSON route's request of `Content-Type: text/plain` with `Expect: 100-continue` was sent the
    `100 Continue`, its body read, then answered 415: the type alone decides it (RFC 9110 10.1.1: a server may answer
    the final status instead of the 100). Now the 415 naming `Content-Type` comes at once, no 100 before it, the body
    never sent, nothing stored."""
    import socket

    from tests.serving import on_parser, timed_server

    on_parser(monkeypatch, http)
    user = f"expects-text-{http}"
    body = json.dumps({**FEEDBACK, "user": user}).encode()
    head = (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.keys['acme']}\r\nContent-Type: text/plain\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with timed_server(svc.server.server.config.app, timeout_s=10) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(head)  # the body waits for the answer, as a client expecting does
            [(status, answer)] = read_answers(client, 1)
    assert status.startswith(b"HTTP/1.1 415 "), (status, answer)
    refusal = json.loads(answer)["error"]
    assert (refusal["param"], refusal["code"]) == ("Content-Type", "unsupported_media_type") and "text/plain" in refusal["message"], refusal
    with svc.client() as c:
        assert c.get(f"/v1/users/{user}/preferences").status_code == 404


def test_the_embeddings_server_answers_text_expecting_100_continue_415_before_the_100(embeddings):
    """Review misc54a, as the API service's JSON routes: `pluralign serve-embeddings` sent `100 Continue` to a
    `text/plain` request expecting it and read its body before the 415 its type alone decides."""
    import socket
    from urllib.parse import urlsplit

    body = json.dumps({"input": "hello", "model": "zero"}).encode()
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", urlsplit(embeddings.url).port), timeout=5) as client:
        client.sendall(head)  # the body waits for the answer
        [(status, answer)] = read_answers(client, 1)
    assert status.startswith(b"HTTP/1.1 415 "), (status, answer)
    assert json.loads(answer)["error"]["param"] == "Content-Type", answer
