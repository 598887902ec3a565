"""A remote generator's stream, as the text the chat's client reads: the pieces joined are the answer the service
stores and scores (stripped), as a local generator's are.

Session trial47a: `RemoteGenerator.stream` passed the server's pieces on as they came, while its final answer is
stripped, so an OpenAI-compatible server (vLLM) opening its answer with "\\n\\n" or ending it with a space streamed
text the stored answer has not: a client that keeps the streamed text to send an `edit` or show it again held
other text than the service. Here the server is a few lines of `http.server` on loopback speaking SSE."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pluralign.policy.generator import Candidate, Generator, Sampling
from pluralign.policy.remote import RemoteGenerator

PIECES = ["", "\n\n", "  Hello", " world", " ", "", "\n", "again.", "  \n"]


class _Server(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        for i, piece in enumerate(PIECES):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n".encode())
        usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
        self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_remote_stream_joins_to_the_stored_answer(server_url):
    *pieces, final = RemoteGenerator(server_url, "m").stream([{"role": "user", "content": "Hi"}], Sampling(max_tokens=9))
    assert isinstance(final, Candidate) and final.text == "Hello world \nagain." and final.tokens == 9
    assert "".join(pieces) == final.text, pieces
    assert all(pieces), pieces  # no empty pieces either


def test_two_streams_of_one_conversation_at_once_each_get_the_servers_prompt_tokens(server_url):
    """Since session 47 the service streams up to 4 chats at once (`generation_workers`): two tenants' "Hi" can both end
    before either asks `prompt_tokens`. Before (reviewturns47b) the count was kept once per conversation, so the second
    stream to ask got 0 (its chat's `usage.prompt_tokens` 0). Since session remote52 each stream's final Candidate
    carries its own count (the service asks none after a stream: a chat of the same conversation took a count kept
    for it, and it was then asked of the server's `/tokenize` after the answer streamed)."""
    remote, hi = RemoteGenerator(server_url, "m"), [{"role": "user", "content": "Hi"}]
    first, second = list(remote.stream(hi, Sampling(max_tokens=9))), list(remote.stream(hi, Sampling(max_tokens=9)))
    assert first[-1] == second[-1]
    assert first[-1].prompt_tokens == second[-1].prompt_tokens == 5


def _local(pieces: list[str], sampling: Sampling) -> tuple[list[str], tuple[str, bool]]:
    """What a local `Generator.stream` sends of a streamer's `pieces` (its `_pieces`), and what it returns."""
    out, sent = Generator._pieces(iter(pieces), threading.Event(), sampling), []
    while True:
        try:
            sent.append(next(out))
        except StopIteration as done:
            return sent, done.value


def test_a_local_stream_sends_the_pieces_a_remote_one_does(server_url):
    """Session 48: one whitespace hold-back (`stripped_pieces`) serves both streams, piece for piece."""
    *remote, _ = RemoteGenerator(server_url, "m").stream([{"role": "user", "content": "Hi"}], Sampling(max_tokens=9))
    local, (text, stopped) = _local(PIECES, Sampling())
    assert local == remote == ["Hello", " world", " \nagain."]
    assert (text, stopped) == ("".join(PIECES), False)


def test_a_local_stream_holds_whitespace_and_a_stop_strings_start_back():
    """A stop string's length less one is held back (it may span pieces), and the whitespace before it."""
    pieces, (text, stopped) = _local(["\n\n", "  Hello", " world", " ", "EN", "D again"], Sampling(stop=("END",)))
    assert pieces == ["Hel", "lo wor", "l", "d"] and (text, stopped) == ("\n\n  Hello world ", True)
