"""A generation server that answers as vLLM's OpenAI-compatible server does where pluralign's remote generator
(`PLURALIGN_GENERATOR=openai:URL`) depends on its behaviour, run as a process of its own:
`python -m tests.vllm_like PORT [--refuse-loads | --lose-adapters | --hang-tokenize | --slow-stream SECONDS]` (PORT 0: any free one, said on stdout). vLLM needs a GPU; this runs on the test machine's CPU.

What it copies from vLLM (`vllm/entrypoints/openai/serving_engine.py`, `serving_models.py`):
- adapters loaded at run time (`POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`) live in the process's memory
  only: a restart forgets them; a second load of one loaded is a 400 ("has already been loaded");
- a chat for a model it does not hold (neither the base, `BASE`, nor a loaded adapter) is a 404 NotFoundError,
  "The model `x` does not exist.";
- a chat whose messages and max_tokens exceed the context (`CONTEXT` tokens; a token is 4 characters here) is a 400
  BadRequestError, "This model's maximum context length is ...".
An answer says which model wrote it (`answered by <model>`) and, for an adapter loaded from a folder holding peft's
weights, which weights (`answered by <model> with weights <first 8 hex digits of the weights file's sha256>`, read at the
load as vLLM reads them: a file changed since is not what it serves); `GET /v1/models` lists the base and the adapters
(as vLLM's, each adapter's `root` its path); each load, unload and chat is said on stdout (`load NAME 200`,
`unload NAME 404`, `chat MODEL 200`, `models 200` for a listing), for a test to count them; `POST /tokenize` (beside /v1, as vLLM's) counts a
chat's prompt as its chats do. `--refuse-loads` answers every adapter load 500;
`--lose-adapters` answers loads 200 and holds nothing (a server whose loads do not take); `--hold-load NAME:PATH` answers
the load of adapter NAME only once file PATH exists (a load that takes long: a large adapter on a slow disk), saying
"holding the load of NAME" when it begins; `--hang-tokenize` takes every `/tokenize` request and never answers it (a server
hung or overloaded: vLLM's API process answers its tokenizer's count in milliseconds), saying "tokenize hangs";
`--slow-stream SECONDS` sends a streamed answer's events that many seconds apart (a long generation), and a stream its
client closes before its end (vLLM aborts such a request) is said as `stream MODEL closed after N events`;
`--stall-stream N:SECONDS` sends nothing for SECONDS after a stream's first N events (an engine stalled mid-way)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from http.server import ThreadingHTTPServer

from tests.stub_openai import JSONHandler

_SAYING = threading.Lock()


def say(line: str) -> None:
    """One line of the log, written whole: `print` writes the text and its newline apart, and two request threads'
    lines came out run together ("unload ... 200models 200"), which a test reading the log then misread."""
    with _SAYING:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


BASE = "base"
CONTEXT = 512  # tokens


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


class Handler(JSONHandler):
    adapters: dict[str, str] = {}  # adapter name -> the path it was loaded from
    weights: dict[str, str] = {}  # adapter name -> the digest of the weights it read at its load ('' for none)
    refuse_loads = False
    lose_adapters = False
    hold_load: tuple[str, str] | None = None  # (adapter name, the file whose existence lets its load go on)
    hang_tokenize = False
    slow_stream = 0.0  # seconds between a stream's events
    stall_after: int | None = None  # a stream's events sent before it stalls
    stall_s = 0.0  # seconds it then sends nothing

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/v1/models":
            models = [{"id": BASE, "object": "model", "root": BASE, "parent": None}]
            models += [{"id": name, "object": "model", "root": path, "parent": BASE} for name, path in list(self.adapters.items())]
            say("models 200")
            return self.answer(200, {"object": "list", "data": models})
        self.answer(200 if self.path == "/health" else 404, {})

    line: str | None = None  # what the log says of this request, its status added as the answer goes out

    def send_response(self, code: int, message: str | None = None) -> None:
        """The request's log line said before its answer is sent: a client that has read its answer finds the line in
        the log. Said after it (before session 56), a test reading the log at once sometimes found the line not yet there."""
        if self.line is not None:
            say(f"{self.line} {code}")
            self.line = None
        super().send_response(code, message)

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json()
        self.line = None
        if self.path == "/v1/load_lora_adapter":
            self.line = f"load {body['lora_name']}"
            self.loading(body["lora_name"], body["lora_path"])
        elif self.path == "/v1/unload_lora_adapter":
            self.line = f"unload {body['lora_name']}"
            if self.adapters.pop(body["lora_name"], None) is None:
                self.error(404, "NotFoundError", f"The lora adapter '{body['lora_name']}' cannot be found.")
            else:
                self.answer(200, {})
        elif self.path == "/v1/chat/completions":
            self.line = f"chat {body['model']}"
            self.chatting(body)
        elif self.path == "/tokenize" and self.hang_tokenize:
            say("tokenize hangs")
            threading.Event().wait()  # never answered (a daemon thread: the process's end ends it)
        elif self.path == "/tokenize":  # vLLM's, beside /v1: the prompt's tokens as a chat of `messages` is prefilled
            count = tokens("".join(m["content"] for m in body["messages"]))
            self.answer(200, {"count": count, "max_model_len": CONTEXT, "tokens": list(range(count))})
        else:
            self.error(404, "NotFoundError", f"no route {self.path}")

    def loading(self, name: str, path: str) -> None:
        if self.refuse_loads:
            self.error(500, "InternalServerError", "adapters cannot be loaded now")
        elif name in self.adapters:
            self.error(400, "BadRequestError", f"The lora adapter '{name}' has already been loaded.")
        else:
            if self.hold_load is not None and name == self.hold_load[0]:
                say(f"holding the load of {name}")
                while not os.path.exists(self.hold_load[1]):
                    time.sleep(0.01)
            if not self.lose_adapters:
                self.adapters[name] = path
                self.weights[name] = digest(path)
            self.answer(200, {})

    def chatting(self, body: dict) -> None:
        model = body["model"]
        if model != BASE and model not in self.adapters:
            return self.error(404, "NotFoundError", f"The model `{model}` does not exist.")
        prompt = tokens("".join(m["content"] for m in body["messages"]))
        wanted = prompt + body.get("max_tokens", 16)
        if wanted > CONTEXT:
            return self.error(400, "BadRequestError", f"This model's maximum context length is {CONTEXT} tokens. However, "
                              f"you requested {wanted} tokens ({prompt} in the messages, {wanted - prompt} in the completion). "
                              "Please reduce the length of the messages or completion.")
        text = f"answered by {model}" + (f" with weights {self.weights[model]}" if self.weights.get(model) else "")
        n = body.get("n", 1)
        usage = {"prompt_tokens": prompt, "completion_tokens": 3 * n, "total_tokens": prompt + 3 * n}
        base = {"id": "chatcmpl-1", "created": 0, "model": model}
        if not body.get("stream"):
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for i in range(n)]
            return self.answer(200, {**base, "object": "chat.completion", "choices": choices, "usage": usage})
        pieces = [word if i == 0 else f" {word}" for i, word in enumerate(text.split(" "))]
        chunks = [{"index": 0, "delta": {"content": piece}, "finish_reason": None} for piece in pieces]
        events = [{**base, "object": "chat.completion.chunk", "choices": [c]} for c in chunks]
        events.append({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": {**usage, "completion_tokens": 3}})
        parts = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        self.status = 200
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(sum(map(len, parts))))
        self.end_headers()
        if not self.slow_stream and self.stall_after is None:
            return self.wfile.write(b"".join(parts))
        for i, part in enumerate(parts):
            try:
                self.wfile.write(part)
                self.wfile.flush()
                time.sleep(self.slow_stream + (self.stall_s if i + 1 == self.stall_after else 0.0))  # after each: the
                # client's closing shows at the next write
            except OSError:  # the client closed it (vLLM aborts the request)
                say(f"stream {model} closed after {i} events")
                return

    def error(self, status: int, kind: str, message: str) -> None:
        self.answer(status, {"object": "error", "message": message, "type": kind, "param": None, "code": status})


def digest(folder: str) -> str:
    """The first 8 hex digits of the sha256 of the peft weights in `folder`, '' when there are none to read."""
    try:
        with open(os.path.join(folder, "adapter_model.safetensors"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:8]
    except OSError:
        return ""


class Server(ThreadingHTTPServer):
    """Its listen backlog uvicorn's (vLLM's server's): http.server's 5 dropped connections of a burst of chats' counts,
    each then tried again by the client's TCP a second later."""

    request_queue_size = 2048


def main(argv: list[str]) -> None:
    Handler.refuse_loads, Handler.lose_adapters = "--refuse-loads" in argv, "--lose-adapters" in argv
    Handler.hang_tokenize = "--hang-tokenize" in argv
    if "--slow-stream" in argv:
        Handler.slow_stream = float(argv[argv.index("--slow-stream") + 1])
    if "--stall-stream" in argv:
        after, _, seconds = argv[argv.index("--stall-stream") + 1].partition(":")
        Handler.stall_after, Handler.stall_s = int(after), float(seconds)
    if "--hold-load" in argv:
        name, _, path = argv[argv.index("--hold-load") + 1].partition(":")
        Handler.hold_load = (name, path)
    server = Server(("127.0.0.1", int(argv[0])), Handler)  # port 0: one of the system's choosing
    server.daemon_threads = True
    say(f"listening on port {server.server_address[1]}")
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main(sys.argv[1:])
