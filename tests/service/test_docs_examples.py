"""The docs' examples, run as a new user runs them: every `curl` line of README.md's, docs/api.md's and
docs/admin.md's bash blocks, in the order the docs give them, against the real app over HTTP, and
docs/api.md's `openai` client snippet. Each must answer the status its comment shows (2xx when it
shows none) and carry every field its comment shows; the JSON fragments the docs show (the chat's
`pluralign` object, the profile's `user_model` and `summary`, the error shape) must name only
fields some answer carries. A reader substitutes only the variables a doc step exports (`URL`,
`KEY`, ...) and the response id `chatcmpl-…`: any other `…` in a command, or a variable no doc
exports, is a step the reader cannot follow."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.conftest import REPO
from tests.service.tiny import start_service

DOCS = ("README.md", "docs/api.md", "docs/admin.md")
RESPONSE_ID = "chatcmpl-…"  # the one placeholder a reader fills in: the id of a chat they made
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_OUTPUT_COMMENT = re.compile(r"#(?: \{| {2}|\s*HTTP/)")  # a line showing what the command above prints
_STATUS = re.compile(r"(?:HTTP/1\.1 |(?<![\d\"]): )([1-5]\d\d)(?= [A-Z{])")  # `# HTTP/1.1 412 ...`, `...: 201 {"user", ...}`
_QUOTED = re.compile(r'"([A-Za-z_]\w*)"')
_CURL = re.compile(r"(?<![\w-])curl\s")  # the command, not a word in a JSON body ("curl's")


@dataclass(frozen=True)
class Example:
    where: str  # doc:line
    command: str
    comment: str
    assign: str | None = None  # `export NAME=$(command | jq -r .field)`: the variable it sets


def _scan(text: str) -> tuple[int | None, bool]:
    """(index of the `#` starting a shell comment or None, whether every quote is closed)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return i, True
    return None, quote is None


def fenced_blocks(doc: str, language: str) -> list[tuple[int, str]]:
    """(first line, text) of each ```language block of `doc`."""
    text = (REPO / doc).read_text()
    return [(text[: m.start()].count("\n") + 2, m[2]) for m in _BLOCK.finditer(text) if m[1] == language]


def documented_curl_examples(doc: str) -> list[Example]:
    """Every `curl` command of `doc`'s bash blocks (and `export NAME=$(curl|pluralign ... | jq -r .f)`),
    continuation lines and quotes spanning lines joined, with its comment: the rest of its line after
    `#`, and the comment lines right below that show its output (`# {...`, `# HTTP/1.1 ...`, `#  ...`)."""
    examples = []
    text = (REPO / doc).read_text()
    for m in _BLOCK.finditer(text):  # curl in a block of another language (`sh`, none): not run, so refused
        if m[1] != "bash" and _CURL.search(m[2]):
            raise AssertionError(f"{doc}:{text[: m.start()].count(chr(10)) + 1}: a curl example this test cannot run "
                                 f"(a block fenced `{m[1]}`, not `bash`)")
    for first, block in fenced_blocks(doc, "bash"):
        lines, i = block.splitlines(), 0
        while i < len(lines):
            start, text = i, lines[i]
            while True:
                hash_at, closed = _scan(text)
                if text.endswith("\\") and hash_at is None:
                    i += 1
                    text = text[:-1] + " " + lines[i]
                elif not closed:
                    i += 1
                    text = text + "\n" + lines[i]
                else:
                    break
            command, comment = (text[:hash_at], text[hash_at + 1 :]) if hash_at is not None else (text, "")
            i += 1
            while i < len(lines) and _OUTPUT_COMMENT.match(lines[i]):
                comment += " " + lines[i][1:]
                i += 1
            command, assign = command.strip(), None
            if m := re.fullmatch(r"export ([A-Z_]+)=\$\((.*)\)", command, re.S):
                assign, command = m[1], m[2]
            if command.startswith("curl ") or (assign and command.startswith("pluralign ")):
                examples.append(Example(f"{doc}:{first + start}", command, comment, assign))
            elif _CURL.search(command):  # `ID=$(curl ...)`, a loop, `time curl`: a step left out would pass unseen
                raise AssertionError(f"{doc}:{first + start}: a curl example this test cannot run: {command[:120]!r} "
                                     "(write it as `curl ...` or `export NAME=$(curl ... | jq -r .field)`, or teach the test)")
    return examples


def exported_variables() -> set[str]:
    """Variables a doc step sets (`export URL=... KEY=...`)."""
    names = set()
    for doc in DOCS:
        for _, block in fenced_blocks(doc, "bash"):
            for line in block.splitlines():
                if line.startswith("export "):
                    names |= set(re.findall(r"\b([A-Z_]+)=", line.split("#")[0]))
    return names | set(re.findall(r"`export ([A-Z_]+)=", "".join((REPO / doc).read_text() for doc in DOCS)))


def documented_fields(comment: str) -> set[str]:
    """The field names of the JSON a comment shows (`{"user", "stored": [...]}`): names in quotes that
    are not a value (after `:`)."""
    shown = comment[comment.index("{"):] if "{" in comment else ""
    return {m[1] for m in _QUOTED.finditer(shown) if not shown[: m.start()].rstrip().endswith(":")}


def keys_in(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def body_values(r: httpx.Response) -> list:
    """The JSON an answer carries: its body, or each `data:` event of a stream."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    if r.headers.get("content-type", "").startswith("application/json") and r.content:
        return [r.json()]
    return []


class Reader:
    """Runs documented commands as curl would, with the variables a reader has set."""

    def __init__(self, svc, folder):
        # the key `pluralign serve` prints is tenant `default`'s; an admin key as docs/admin.md issues one
        known = {"URL": svc.url, "KEY": svc.runtime.keys.issue("default"), "ADMIN": svc.keys["admin"]}
        self.variables = {name: value for name, value in known.items() if name in exported_variables()}
        self.folder, self.response_id, self.seen = folder, None, []

    def run_cli(self, example: Example, words: list[str]) -> str:
        """`pluralign ...` in this process, on the service's data folder (PLURALIGN_DATA_DIR): its last line."""
        from training.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main([self.expand(w, example.where) for w in words[1:]]) == 0, example.where
        return out.getvalue().splitlines()[-1]

    def take(self, example: Example, value: str) -> None:
        """What `export NAME=$(... | jq -r .field)` sets."""
        words = shlex.split(example.command)
        field = [w for w in words[words.index("jq") + 1 :] if not w.startswith("-")][0]
        found = json.loads(value)
        for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", field):  # `.stored[0]`: a field, then an item of it
            found = found[name] if name else found[int(index)]
        self.variables[example.assign] = found

    def expand(self, word: str, where: str) -> str:
        def value(m):
            assert m[1] in self.variables, f"{where}: `${m[1]}` is set by no step of the docs"
            return self.variables[m[1]]

        word = re.sub(r"\$([A-Z_]+)", value, word)
        if self.response_id:
            word = word.replace(RESPONSE_ID, self.response_id)
        assert "…" not in word, f"{where}: a placeholder a reader cannot fill in: {word[:120]!r}"
        return word

    def run(self, example: Example) -> httpx.Response | None:
        words = shlex.split(example.command)
        if words[0] == "pluralign":
            self.take(example, self.run_cli(example, words[: words.index("|")]))
            return None
        pipes = [i for i, w in enumerate(words) if w in ("|", ">")]
        curl, rest = words[1 : pipes[0] if pipes else None], words[pipes[0] :] if pipes else []
        method, headers, data, url, it = None, {}, None, None, iter(curl)
        as_query, encoded = False, []  # curl -G sends the -d/--data-urlencode data as the URL's query
        for word in it:
            if word in ("-s", "-N", "-i"):
                continue
            if word == "-G":
                as_query = True
                continue
            if word == "--data-urlencode":  # `name=value`: the value percent-encoded (curl's man page)
                name, _, value = self.expand(next(it), example.where).partition("=")
                encoded.append(f"{name}={quote(value, safe='')}")
                continue
            if word == "-I":
                method = "HEAD"
            elif word == "-X":
                method = next(it)
            elif word == "-H":
                name, _, value = self.expand(next(it), example.where).partition(":")
                headers[name.strip()] = value.strip()
            elif word in ("-d", "--data-binary"):
                data = self.expand(next(it), example.where)
                data = (self.folder / data[1:]).read_bytes() if data.startswith("@") else data.encode()
            elif word.startswith("-"):
                raise AssertionError(f"{example.where}: curl option {word} is not run by this test: teach it")
            else:
                url = self.expand(word, example.where)
        if encoded:
            data = "&".join(([data.decode()] if data is not None else []) + encoded).encode()
        if as_query and data is not None:
            url, data = url + ("&" if "?" in url else "?") + data.decode(), None
        if data is not None:
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")  # what curl -d sends
        r = httpx.request(method or ("POST" if data is not None else "GET"), url, headers=headers, content=data, timeout=120)
        if rest[:1] == [">"]:
            (self.folder / rest[1]).write_bytes(r.content)
        elif rest[:2] and rest[1] == "jq":
            path = [w for w in rest[2:] if not w.startswith("-")][0]
            value = r.json()
            for key, index in re.findall(r"\.(\w+)(?:\[(\d+)\])?", path):  # `.next_after`, `.letters[0].name`
                assert key in value, f"{example.where}: `jq {path}`: the answer has no `{key}`"
                value = value[key]
                if index:
                    assert len(value) > int(index), f"{example.where}: `jq {path}`: `{key}` has no item {index}"
                    value = value[int(index)]
            if example.assign:
                self.variables[example.assign] = value
        values = body_values(r)
        self.seen += values
        chats = [v for v in values if v.get("object") == "chat.completion" and len(v.get("choices", ())) >= 3]
        if chats:
            self.response_id = chats[-1]["id"]  # what `"response_id": "chatcmpl-…"` with chosen_index 2 needs
        return r


ADMIN_WORK = re.compile(r"/admin/(?:jobs|audits)")  # starts worker processes (an adapter job, an audit): seconds each


def follow_the_docs(svc, folder, admin_work: bool) -> int:
    """Runs every example in doc order (those of ADMIN_WORK only if `admin_work`), asserting each answers
    its documented status and fields, then the JSON blocks' fields; returns how many ran."""
    reader, ran = Reader(svc, folder), 0
    for doc in DOCS:
        for example in documented_curl_examples(doc):
            if not admin_work and ADMIN_WORK.search(example.command):
                continue
            r = reader.run(example)
            if r is None:  # `pluralign ...`: its output is the variable it set
                continue
            status = _STATUS.search(example.comment)
            if status:
                assert r.status_code == int(status[1]), (example.where, r.status_code, r.text[:300])
            else:
                assert 200 <= r.status_code < 300, (example.where, r.status_code, r.text[:300])
            missing = documented_fields(example.comment) - {k for v in body_values(r) for k in keys_in(v)}
            assert not missing, (example.where, "fields the doc shows that the answer lacks", missing, r.text[:300])
            ran += 1

    for doc in DOCS:  # the JSON the docs show beside the examples: `"pluralign": {...}`, `{"error": {...}}`, ...
        for first, block in fenced_blocks(doc, "json"):
            top = re.match(r'\s*\{?\s*"(\w+)"', block)[1]
            answered = [v[top] for v in reader.seen if isinstance(v, dict) and isinstance(v.get(top), dict)]
            assert answered, f"{doc}:{first}: no answer of the examples carries `{top}`"
            missing = documented_fields(block) - {top} - {k for v in answered for k in keys_in(v)}
            assert not missing, f"{doc}:{first}: `{top}` in no answer has {sorted(missing)}"
    return ran


def serve_docs_reader(tmp_path_factory, generator_dir, pal_dir, encoder):
    data = tmp_path_factory.mktemp("docs-data")
    server, service = start_service(data, generator_dir, pal_dir, encoder, admin_handlers=ADMIN_HANDLERS)
    service.data_dir = data
    set_aside_two_records(service.runtime)
    return server, service


def set_aside_two_records(runtime) -> None:
    """docs/admin.md's dead-letter examples list, requeue and discard letters: two records a damaged feedback log held
    (a blank `user_id`, which the routes refuse), set aside as the worker sets them aside after 3 tries."""
    from tests.service.test_feedback_log import feedback

    for i in range(2):
        rows = [msgspec.structs.replace(r, user_id="") for r in feedback("ann", i, tenant="default")]
        runtime.ingest.dead_letters.put(rows, "StoreError: `user_id` of row 0 is blank", tries=3, at=time.time())


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = serve_docs_reader(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def test_every_curl_example_of_the_docs_answers_as_documented(svc, tmp_path, monkeypatch):
    """Before: docs/api.md's onboarding example sent `"…"` as a third answer (and was answered with it:
    `"answers": ["- Saturday: hike\\n- Sunday: rest", "…"]`, not the pair the doc shows); its import
    example used `$OTHER_KEY`, which no step set; and its DELETE of alice left bob's `{}` onboarding
    example nothing to ask (400 naming `pool`). The admin examples that start worker processes are
    left to the slow test below."""
    monkeypatch.setenv("PLURALIGN_DATA_DIR", str(svc.data_dir))  # where `pluralign keys create` writes, as `serve`'s ./data
    assert follow_the_docs(svc, tmp_path, admin_work=False) >= 35  # the parser found the examples


@pytest.mark.slow
def test_the_admin_examples_too(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm, tmp_path, monkeypatch):
    """Every example with docs/admin.md's jobs and audit (worker processes; ~10 s more). Before: the job
    examples used `$ID`, which no step set, and the audit by `segment` answered 400 naming `group_by`:
    no step gave any comparison that attribute."""
    server, service = serve_docs_reader(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm)
    monkeypatch.setenv("PLURALIGN_DATA_DIR", str(service.data_dir))
    with server:
        assert follow_the_docs(service, tmp_path, admin_work=True) >= 40


# python blocks of the docs not run here: their first line -> the test that makes the same calls (their
# imports take seconds, and litellm asks the network for a price list first)
RUN_ELSEWHERE = {"import litellm": "tests/service/test_openai_clients.py::test_litellm_with_user_in_extra_body and "
                                   "::test_langchain_chat_openai_with_user_in_extra_body",
                 "import datasets": "tests/unit/test_rows42_trl_export.py (the TRL recipe, run as written)"}


def test_the_openai_client_snippet_of_the_docs_runs(svc):
    """docs/api.md's `openai` snippets, run as written with only its base URL and KEY filled in. Any other
    python block of the docs is one RUN_ELSEWHERE names, or this test fails naming it (a new snippet is
    run somewhere, not left out unseen)."""
    unrun = [f"{doc}:{first}" for doc in DOCS for first, block in fenced_blocks(doc, "python")
             if "from openai import OpenAI" not in block and block.splitlines()[0] not in RUN_ELSEWHERE]
    assert not unrun, f"python blocks of the docs that no test runs: {unrun} (run them here, or name their test in RUN_ELSEWHERE)"
    snippets = [(first, block) for first, block in fenced_blocks("docs/api.md", "python") if "from openai import OpenAI" in block]
    assert len(snippets) == 2  # the client, and a stream's `pluralign` object read from its chunks
    for first, snippet in snippets:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            # KEY: tenant `default`'s, as the docs' (acme's keys go with docs/admin.md's removal of acme, since session 51)
            exec(snippet.replace("http://127.0.0.1:8000", svc.url), {"KEY": svc.runtime.keys.issue("default")})  # noqa: S102
        assert "chatcmpl-" in out.getvalue(), f"docs/api.md:{first}"


def test_a_curl_example_the_parser_cannot_run_fails_loudly(tmp_path):
    """A curl line in a form the reader above does not run (an assignment without `export`, a loop, a
    block fenced `sh` rather than `bash`) is an error naming it, not an example silently left out."""
    doc = tmp_path / "doc.md"
    for block in ("```bash\nID=$(curl -s $URL/health | jq -r .status)\n```\n",
                  "```bash\nfor u in alice bob; do curl -s $URL/v1/users/$u; done\n```\n",
                  "```sh\ncurl -s $URL/health\n```\n"):
        doc.write_text(f"# A doc\n\n{block}")
        with pytest.raises(AssertionError, match=rf"^{re.escape(str(doc))}:\d+: a curl example this test cannot run"):
            documented_curl_examples(str(doc))


_READS = re.compile(r"(?:--path|--data|--pairs|--user-groups)[ =]([\w.-]+\.jsonl?\b)|--data-binary @(\S+)")
_WRITES = re.compile(r"(?:>|--out)\s*([\w.-]+)")


def test_every_file_a_documented_command_reads_is_written_by_an_earlier_step():
    """A file in the checkout that a doc's command reads (`--path alice-prefs.jsonl`, `--data-binary @f`) is
    written by a step before it, in the docs' order (README first), as a new user follows them. Before:
    README's `pluralign data import --path alice-prefs.jsonl` read a file no step of the README made (only
    docs/api.md's export, read later, wrote it): `--path alice-prefs.jsonl: no such file or folder`."""
    written, unmade = set(), []
    for doc in DOCS:
        for first, block in fenced_blocks(doc, "bash"):
            for n, line in enumerate(block.splitlines()):
                command = line.split(" #")[0]
                unmade += [f"{doc}:{first + n}: {name}" for m in _READS.finditer(command)
                           for name in [m[1] or m[2]] if name not in written]
                written |= set(_WRITES.findall(command))
    assert not unmade, f"files read before any step of the docs writes them: {unmade}"


# `POST /v1/feedback`, `DELETE /v1/users/{id}` in prose, in backquotes (a message quoted in ``...`` is an answer's text, not a claim)
_ROUTE = re.compile(r"`(GET|HEAD|POST|PUT|PATCH|DELETE)\s+(/(?:v1|admin)/[^\s`?#,;)\"'<]+|/health\b|/metrics\b)")
_ROUTE_STATUS = re.compile(r"\s+(?:answers|is(?: then)? a)\s+([1-5]\d\d)\b")  # "`POST /v1/feedback` answers 201"
_MESSAGE = re.compile(r"^```.*?^```|(?<!`)``(?!`).*?(?<!`)``(?!`)", re.S | re.M)  # blocks, and ``quoted messages``
ROUTE_DOCS = ("docs/api.md", "docs/admin.md")
# the other docs that name routes: checked the same way, each name a route of the app, but for these on purpose
NAMING_ROUTES = (*ROUTE_DOCS, "README.md", "docs/operations.md", "docs/library.md", "deploy/README.md")
NOT_THE_APP_S = {
    ("POST", "/v1/embeddings"),  # `pluralign serve-embeddings`' route, on its own server
    ("PUT", "/v1/users/{user_id}"),  # operations.md's example of a method its route does not take, logged as a 405
}


def _operation(paths: dict, method: str, path: str) -> dict | None:
    """The OpenAPI operation `method path` names (`alice` or `{id}` for a parameter), None when the app has none."""
    path = path.rstrip(".:")
    for template, operations in paths.items():
        if re.fullmatch(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)), path):
            return operations.get(("get" if method == "HEAD" else method).lower())
    return None


def _named_routes(doc: str) -> list[tuple[int, str, str, str | None]]:
    """(line, method, path, status the doc says it answers or None) of each route `doc`'s prose names."""
    text = _MESSAGE.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), (REPO / doc).read_text())
    found = []
    for m in _ROUTE.finditer(text):
        if "…" in m[2] or "..." in m[2]:
            continue
        status = _ROUTE_STATUS.match(text, m.end() + (text[m.end()] == "`"))
        found.append((text[: m.start()].count("\n") + 1, m[1], m[2], status[1] if status else None))
    return found


def test_every_route_the_docs_name_is_the_app_s_with_that_method_and_status(svc):
    """Each `METHOD /path` the docs name (docs/api.md and docs/admin.md, and README.md, docs/operations.md,
    docs/library.md and deploy/README.md, but for NOT_THE_APP_S) is an operation of the app's OpenAPI document (a `HEAD`
    where it has the GET), and a status the doc says it answers ("`POST /v1/feedback` answers 201") is one the
    operation declares."""
    paths = httpx.get(f"{svc.url}/schema/openapi.json", timeout=60).raise_for_status().json()["paths"]
    wrong = []
    for doc in NAMING_ROUTES:
        for line, method, path, status in _named_routes(doc):
            if (method, path.rstrip(".:")) in NOT_THE_APP_S:
                continue
            operation = _operation(paths, method, path)
            if operation is None:
                wrong.append(f"{doc}:{line}: {method} {path}: the app has no such route")
            elif status and status not in operation["responses"]:
                wrong.append(f"{doc}:{line}: {method} {path} answers {status}: the app declares {sorted(operation['responses'])}")
    assert len(_named_routes("docs/api.md")) > 30  # the reading still finds the routes
    assert not wrong, "\n".join(wrong)


def _curl_route(command: str) -> tuple[str, str] | None:
    """(method, path) a documented curl command sends, or None."""
    url = re.search(r"\$URL(/[^\s\"'?]*)", command)
    if not url:
        return None
    method = re.search(r"-X\s+([A-Z]+)", command)
    return (method[1] if method else "POST" if re.search(r"\s(?:-d|--data\S*)\s", command) else "GET"), url[1]


def test_every_route_of_the_app_is_named_in_the_docs(svc):
    """Each operation of the app's OpenAPI document is named in docs/api.md or docs/admin.md: in prose (`PUT
    /v1/calibration-pool`), by a curl example that sends it, or, for a page a browser opens, by its path."""
    paths = httpx.get(f"{svc.url}/schema/openapi.json", timeout=60).raise_for_status().json()["paths"]
    named = [(method, path) for doc in ROUTE_DOCS for _, method, path, _ in _named_routes(doc)]
    named += [route for doc in ROUTE_DOCS for example in documented_curl_examples(doc) if (route := _curl_route(example.command))]
    text = "".join((REPO / doc).read_text() for doc in ROUTE_DOCS)
    unnamed = [f"{method.upper()} {template}" for template, operations in paths.items() for method in operations
               if not any(_operation({template: operations}, m, p) is operations[method] for m, p in named)
               and not (method == "get" and f"`{template}" in text)]
    assert not unnamed, f"routes the docs never name: {unnamed}"
