"""Generation on an OpenAI-compatible server, e.g. vLLM with multi-LoRA on a GPU machine.

Past one machine, the API replicas keep retrieval, context building and reranking, and send
generation to a GPU server. A user's LoRA adapter is addressed as the request's `model` (vLLM serves
each `--lora-modules name=path` under its name, and loads more at run time through
`/v1/load_lora_adapter` when `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). The interface matches the
local `Generator`: `generate`, `stream`, `prompt_tokens`, `load_adapter`, `drop_adapter`, `adapters`, `adapters_in_use`
(a drop waits for the requests in flight using the adapter).

The official `openai` client speaks the protocol (server-sent events included). Timeouts and
retries follow `RemotePolicy`, each try bounded whole, to the last byte of its answer (`pluralign.bounded_http`;
GenerationTimedOut), a streamed chat as a stream: its first piece within `timeout_s`, then no piece for
`stream_idle_s` (a stall), the whole within `stream_timeout_s` (not `timeout_s` whole, which would
cut a long answer sent steadily): a request that cannot connect, times out, or is answered 408, 409,
429 or 5xx is retried with exponential backoff (the client's own policy, `Retry-After` honoured);
any other 4xx fails at once: a chat's 400, 413 or 422 is the client's fault (`GenerationRefused`: its messages too
long for the model's context), and a chat's 404 for an adapter says the server no longer holds it (restarted since it
was loaded: vLLM's run-time adapters live in its memory only), so it is loaded again and the chat sent once more.
Token counts are the server's `usage`, never estimated here (a stream's on its final Candidate); a prompt's count
before its chat is the server tokenizer's (vLLM's `POST /tokenize`: `prompt_tokens`, `prompt_counter`), none where it
has no such route. One chat's counts are bounded together, whole (connecting, sending and every byte of each answer:
`pluralign.bounded_http`, as httpx's own timeouts bound each read only; on httpx's client, not the `openai` one), apart from the chat
(`RemotePolicy.tokenize_timeout_s`: a tenth of its timeout, at least 1 s, at most 5 s), at most TOKENIZE_AT_ONCE of
them at once (`PromptCounter.each`): a count the server does not give in that time, or fails to give (down, a 5xx),
is PromptNotCounted, never a chat sent uncounted.

The name an adapter has on the server is not the caller's: it carries this generator's `replica` and its weights'
version (`<name>-<replica>-<version>`, `served_name`), so that replicas of the service sharing one server never unload
each other's adapters (each evicts its own), and a retrained adapter is a new name, whose load is of the new weights
(never vLLM's "already loaded" for the old ones). Under the caller's name alone, one replica's eviction would unload
the adapter another was about to use (a 404, a load again, the fallback when it happened twice), and a retrained
adapter loaded by a replica after another had loaded the old one would be served with the old weights.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2  # the HTTP library the `openai` client runs on (its Timeout, Response and errors)
import openai

from pluralign.bounded_http import DEADLINE, MAX_BOUND_S, StreamBound, StreamTimedOut, bounded_client, connecting
from pluralign.data.text import shorten
from pluralign.policy.adapters import PEFT_FILES
from pluralign.policy.generator import (
    AdapterNotKept,
    AdapterNotLoaded,
    Cancelled,
    Candidate,
    GenerationRefused,
    GenerationTimedOut,
    ModelUse,
    PromptNotCounted,
    RemoteGeneratorError,
    Sampling,
    stripped_pieces,
)
from pluralign.urls import check_base_url, redacted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemotePolicy:
    """How long to wait for the generation server, and how often to try again. ValueError for a timeout not above 0 and
    at most MAX_BOUND_S (a day: inf or nan would fail each request in the socket) or
    negative retries."""

    # each try of a request whole, connecting (the server name's lookup too) included, to the last byte of its answer (a
    # long generation included): `pluralign.bounded_http` (not each read of it only: a server sending a
    # byte a second would hold a chat as long as it liked); a streamed chat's to its first piece (the engine's queue and prefill)
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0  # opening the connection (the lookup of the server's name, then each of its addresses)
    max_retries: int = 2  # further tries after a connection error, a timeout, 408/409/429 or 5xx
    # a streamed chat past its first piece: the most seconds without a piece of it (an engine stalled mid-way; the local
    # generation process's `generation_stall_s` is its like, 60 s too), and the most for the whole stream from its
    # sending (a long answer of a slow or busy engine: 1,024 tokens at 2 a second fit). `timeout_s` bounding a
    # stream whole would cut such an answer mid-way
    stream_idle_s: float = 60.0
    stream_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s", "stream_idle_s", "stream_timeout_s"):
            if not 0 < getattr(self, name) <= MAX_BOUND_S:  # nan too
                raise ValueError(f"`{name}` must be above 0 and at most {MAX_BOUND_S:g} seconds, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError(f"`max_retries` must be at least 0, got {self.max_retries}")

    @property
    def tokenize_timeout_s(self) -> float:
        """How long a prompt's count (vLLM's `POST /tokenize`) may take, connecting included, tried once: a tenth of
        `timeout_s`, at least TOKENIZE_FLOOR_S (1 s) and at most TOKENIZE_TIMEOUT_S (5 s: at the default 120), never more
        than `timeout_s` itself. vLLM's API process applies the chat template and tokenizes in milliseconds, without the
        engine, so a count that takes seconds is a server hung or overloaded, and a chat waiting the whole `timeout_s` for
        it (120 s) would hold its generation slot for nothing; but a round trip to a server on another machine, under
        load, takes tenths of a second: a tenth alone of a `timeout_s` of 1 s would give a count 0.1 s, and every chat
        would be a 503 while the server answered each count."""
        return min(TOKENIZE_TIMEOUT_S, self.timeout_s, max(TOKENIZE_FLOOR_S, self.timeout_s / 10))


TOKENIZE_TIMEOUT_S = 5.0  # seconds: the most `RemotePolicy.tokenize_timeout_s` gives a prompt's count
TOKENIZE_FLOOR_S = 1.0  # seconds: the least it gives one (unless `timeout_s` is less): a round trip under load
NOT_IMPLEMENTED = 501  # HTTP's "the server does not support this": a /tokenize answering it counts none, as a 404
# the most `/tokenize` requests one chat has in flight (`PromptCounter.each`): a chat whose 16 shots do not fit would
# otherwise ask 16 at once, a burst on the server's API process for each such chat; its search for the shots to
# keep (`service.chat.controllers.fit_shots`) asks this many a round: 16 shots in 2 rounds
TOKENIZE_AT_ONCE = 4

class RemoteGenerator:
    """`request_headers()` is asked at each request for headers to send with it (the service passes the
    `X-Request-Id` of the chat the answer is generated for, so the generation server's log names it). Raises ValueError
    naming `base_url` when it is no http(s) URL of a host (`pluralign.urls.check_base_url`: the client takes '', and
    each request then failed as "Connection error.").

    `replica`: this generator's part of the names its adapters have on the server (`served_name`; default 8 random hex
    digits, new at each start; the service passes one stable across its starts, `service.runtime.served_replica`):
    generators sharing a server at once must have different ones."""

    def __init__(self, base_url: str, model_id: str, api_key: str | None = None, policy: RemotePolicy = RemotePolicy(),
                 request_headers: Callable[[], Mapping[str, str]] = dict, replica: str | None = None):
        check_base_url(base_url)
        self.replica = replica or secrets.token_hex(4)
        self.base_url = base_url.rstrip("/")
        self.shown_url = redacted(self.base_url)  # in errors and logs: no password of the URL's
        self.request_headers = request_headers
        self.model_id = model_id
        self.policy = policy
        api_key = api_key or "none"  # vLLM without --api-key ignores it; the client insists on one
        self._closed = False  # `close`
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key,
            timeout=httpx2.Timeout(policy.timeout_s, connect=policy.connect_timeout_s),
            max_retries=policy.max_retries,
            # each try bounded whole by `timeout_s` (httpx's own timeouts bound each read of it only), a stream's past its
            # first piece by `stream_idle_s` and `stream_timeout_s`
            http_client=bounded_client(openai.DefaultHttpxClient, policy.timeout_s,
                                       StreamBound(policy.stream_idle_s, policy.stream_timeout_s)),
        )
        # streamed chats: the same, each try's headers and first piece by `timeout_s` or `stream_timeout_s`, the less (a
        # stream is whole within `stream_timeout_s` of its sending, its headers included). A pool of its own: a transport
        # bounds a request before it knows whether its answer is a stream
        self._streaming = self._client.with_options(http_client=bounded_client(
            openai.DefaultHttpxClient, min(policy.timeout_s, policy.stream_timeout_s),
            StreamBound(policy.stream_idle_s, policy.stream_timeout_s)))
        # prompt counts (`/tokenize`, beside /v1): httpx's own client, each request bounded whole by its chat's deadline
        # (`DEADLINE`); not the `openai` client, whose read of a 5xx's body and of any answer's headers nothing but each
        # read's timeout bounds: a count given up on would hold its thread and connection on as long as the server liked
        self._counting = bounded_client(headers={"Authorization": f"Bearer {api_key}"}, follow_redirects=True)
        self._adapters: dict[str, str] = {}  # adapter name -> path the server loaded it from
        self._served: dict[str, str] = {}  # adapter name -> its name on the server (`served_name`)
        # adapter name -> its loads again after the server answered a chat for it 404 (restarted): chats that found it
        # gone at once load it once (`_load_again`), under that adapter's own lock: another's load again, which may take
        # `timeout_s` x its tries, holds up no other adapter's (with one lock for all, every
        # tenant's chat would wait behind one user's slow load)
        self._reloads: dict[str, int] = {}
        self._reload_locks: dict[str, threading.Lock] = {}
        self._tokenize_route = True  # until the server shows it has no vLLM `/tokenize` (`prompt_tokens`)
        self._purging: set[str] = set()  # adapter names whose copies the purge thread is to unload (`purge_adapter`)
        self._purge_running = False
        self._lock = threading.Lock()
        # the adapter each request in flight uses: a drop waits for them, so the server never unloads one under a
        # request (a server may abort those: a stream cut after its first piece)
        self._use = ModelUse()

    @property
    def adapters(self) -> set[str]:
        return set(self._adapters)

    @property
    def adapters_in_use(self) -> set[str]:
        """The adapters of the requests in flight (a drop of one waits for them: the adapter pool evicts these last, and
        drops outside its lock)."""
        return self._use.in_use()

    def load_adapter(self, name: str, folder: str | Path) -> None:
        """Ask the server to load a peft adapter folder (a path the server can read) under `name`. Raises
        RemoteGeneratorError when the server cannot be asked, or refuses."""
        self._served[name] = self._load(name, str(folder))
        self._adapters[name] = str(folder)

    def served_name(self, name: str, folder: str | Path) -> str:
        """The name adapter `name`, loaded from `folder`, has on the server: `<name>-<replica>-<version>`, the version
        the first 12 hex digits of the sha256 of its peft files (adapter_config.json, adapter_model.safetensors) as they
        are now, of the folder's path when this process cannot read them (the server may read paths this one cannot)."""
        digest = hashlib.sha256()
        for file in PEFT_FILES:
            try:
                digest.update((Path(folder) / file).read_bytes())
            except OSError:
                digest.update(f"{folder}/{file}".encode())
        return f"{name}-{self.replica}-{digest.hexdigest()[:12]}"

    def _load(self, name: str, folder: str) -> str:
        """Load `folder` on the server under its served name (`served_name`), which it returns."""
        served = self.served_name(name, folder)
        try:
            self._call(lambda: self._client.post("/load_lora_adapter", body={"lora_name": served, "lora_path": folder}, cast_to=httpx2.Response,
                                                 options={"headers": dict(self.request_headers())}))
        except RemoteGeneratorError as exc:
            # vLLM's 400 for a name it holds (`serving_models.py`): this replica's own load of these weights, whose
            # answer was lost (a timeout: tried again), or a process of the same `replica` before a restart
            cause = exc.__cause__
            if not (isinstance(cause, openai.BadRequestError) and "already been loaded" in _server_words(cause)):
                raise
        return served

    def _load_again(self, name: str, seen: int) -> None:
        """Load adapter `name` again from the folder it was loaded from, unless it was loaded again since `seen` (its
        count of `_reloads` when the caller's request was sent). AdapterNotLoaded when it was dropped meanwhile."""
        with self._reload_lock(name):
            if self._reloads.get(name, 0) != seen:
                return
            folder = self._adapters.get(name)
            if folder is None:
                raise AdapterNotLoaded(f"adapter {name!r} is not loaded")
            log.warning("the generation server holds no adapter %s (restarted since it was loaded?): loading it again", name)
            self._served[name] = self._load(name, folder)
            self._reloads[name] = seen + 1

    def _reload_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._reload_locks.setdefault(name, threading.Lock())

    def drop_adapter(self, name: str) -> None:
        """Ask the server to unload adapter `name`, once the requests in flight using it have ended (requests for it
        that come meanwhile wait behind the drop, then raise AdapterNotLoaded). Raises RemoteGeneratorError when the
        server cannot be asked, or refuses; the adapter is then still counted as loaded. A 404 (the server holds no such
        adapter: restarted since) is no error: the adapter is forgotten here too."""
        with self._use.drop(name):
            if name in self._adapters:
                # 404: the server holds no adapter of that name (vLLM: "cannot be found"; restarted since it was loaded, or
                # unloaded by its operator), so there is nothing to unload (not an error at each try: a user's
                # DELETE would fail until the service restarted)
                if not self._unload(self._served[name]):
                    log.warning("adapter %s was not loaded on the generation server (it answered 404): forgotten here", name)
                del self._adapters[name]
                self._served.pop(name, None)
                self._reloads.pop(name, None)
                with self._lock:
                    self._reload_locks.pop(name, None)

    def _unload(self, served: str) -> bool:
        """Ask the server to unload the adapter it holds as `served`: False when it holds none of that name (404)."""
        try:
            self._call(lambda: self._client.post("/unload_lora_adapter", body={"lora_name": served}, cast_to=httpx2.Response,
                                                 options={"headers": dict(self.request_headers())}))
        except RemoteGeneratorError as exc:
            if not isinstance(exc.__cause__, openai.NotFoundError):
                raise
            return False
        return True

    def purge_adapter(self, name: str) -> None:
        """Have the server unload every adapter it holds under a name of adapter `name`'s (`<name>-...`, as its list of
        models shows them: those other replicas of the service loaded, and this replica's of an earlier start), after
        the user's adapter was deleted: the server keeps no copy of theirs. Returns at once: this generator's one purge
        thread takes every name waiting and lists the server's models once for them (a tenant's removal forgets its users
        256 a batch, not a thread and a listing each, all at once); a failure to ask the server is
        logged, not raised (another replica's copy is then unloaded at that replica's next chat of the user, or its
        eviction)."""
        with self._lock:
            self._purging.add(name)
            if self._purge_running:
                return
            self._purge_running = True
        threading.Thread(target=self._purge, name="adapter-purge", daemon=True).start()

    def _purge(self) -> None:
        while True:
            with self._lock:
                names, self._purging = self._purging, set()
                if not names:
                    self._purge_running = False
                    return
            try:
                listed = self._call(lambda: self._client.models.list(extra_headers=dict(self.request_headers())))
                for model in listed.data:
                    if model.id.split("-", 1)[0] in names or any(model.id.startswith(f"{name}-") for name in names):
                        self._unload(model.id)
            except RemoteGeneratorError as exc:
                log.warning("the copies of %d deleted adapters on the generation server could not all be unloaded: %s", len(names), exc)
            except Exception:  # the thread ends with the names waiting taken over by the next purge
                log.exception("purging deleted adapters from the generation server failed")

    def _chat(self, send: Callable, adapter: str | None):
        """`send()`'s answer (a chat request): when the server answers 404 for `adapter` (it no longer holds it), the
        adapter is loaded again and the chat sent once more; when it answers 404 again, the adapter is forgotten here
        and AdapterNotLoaded raised (the service asks its adapter pool again: a load anew, or the fallback). Raises
        GenerationRefused for a 400, 413 or 422 (the client's fault), RemoteGeneratorError for any other failure (the
        load again's included). The second 404 raises AdapterNotKept (an AdapterNotLoaded): the server answered the load
        and then did not hold what it loaded, so asking again is of no use (the service answers with the fallback at
        once, not after 3 loads and 4 chats)."""
        seen = self._reloads.get(adapter, 0) if adapter is not None else 0
        try:
            return self._sent(send)
        except RemoteGeneratorError as exc:
            if adapter is None or not isinstance(exc.__cause__, openai.NotFoundError):
                raise
        self._load_again(adapter, seen)
        try:
            return self._sent(send)
        except RemoteGeneratorError as exc:
            if not isinstance(exc.__cause__, openai.NotFoundError):
                raise
            with self._reload_lock(adapter):
                self._adapters.pop(adapter, None)
                self._served.pop(adapter, None)
            raise AdapterNotKept(f"adapter {adapter!r} is not held by the generation server, even just loaded again") from exc

    def _sent(self, send: Callable):
        try:
            return self._call(send)
        except RemoteGeneratorError as exc:
            cause = exc.__cause__
            if isinstance(cause, openai.APIStatusError) and cause.status_code in (400, 413, 422):
                param = cause.param if cause.param in CHAT_FIELDS else "messages"
                raise GenerationRefused(f"the generation server refused it: {shorten(_server_words(cause), 300)}", param) from exc
            raise

    def close(self) -> None:
        """Closes the connections to the server (its owner stops: `pluralign serve`'s stop, `service.runtime.Runtime.close`);
        every call after it raises RemoteGeneratorError at once, nothing sent (a prompt's count PromptNotCounted; the
        service's 503). Once more does nothing more. Unclosed, the server's connections would stay open to the
        process's exit."""
        self._closed = True
        self._client.close()
        self._streaming.close()
        self._counting.close()

    def _closed_error(self) -> str:
        return f"generation server at {self.shown_url}: not asked, the generator is closed (its service stops)"

    def _call(self, request):
        if self._closed:  # (the closed client would be tried again with backoff, then "Connection error.")
            raise RemoteGeneratorError(self._closed_error())
        try:
            return request()
        except openai.APIStatusError as exc:
            raise RemoteGeneratorError(f"generation server at {self.shown_url} answered {exc.status_code}: {shorten(exc.message, 300)}") from exc
        except openai.APITimeoutError as exc:
            raise self._timed_out(1 + self.policy.max_retries, exc) from exc
        except openai.APIConnectionError as exc:
            raise RemoteGeneratorError(
                f"generation server at {self.shown_url} unreachable ({self.policy.max_retries} retries): {redacted(str(exc))}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a 200 labelled JSON that is not (a proxy's page, not UTF-8): not a 500
            raise RemoteGeneratorError(f"generation server at {self.shown_url} answered a body that is not JSON ({exc})") from exc

    def _timed_out(self, tries: int, exc: Exception | None = None) -> GenerationTimedOut:
        bound = self.policy.timeout_s
        return GenerationTimedOut(f"generation server at {self.shown_url} timed out: did not answer within {bound:g} s (each of {tries} "
                                  f"tries, timeout_s){connecting(exc)}", bound, tries)

    def _stream_timed_out(self, exc: Exception, tries: int = 1) -> GenerationTimedOut:
        """The GenerationTimedOut of a streamed chat given up by `exc`: its first piece (its headers too, each of `tries`
        tries) not in `timeout_s` (in `stream_timeout_s` where that is the lower, named as the stream's whole bound), or
        a stream's own bound (`StreamTimedOut`: no piece for `stream_idle_s`, not whole within `stream_timeout_s`)."""
        # its headers' wait, or the clock's "first": `timeout_s` unless `stream_timeout_s` is the lower (`_streaming`)
        first = "first" if self.policy.timeout_s < self.policy.stream_timeout_s else "total"
        bound = exc.bound if isinstance(exc, StreamTimedOut) and exc.bound != "first" else first
        field, seconds, said = {
            "first": ("timeout_s", self.policy.timeout_s, f"did not begin its streamed answer within {self.policy.timeout_s:g} s"),
            "idle": ("stream_idle_s", self.policy.stream_idle_s,
                     f"sent nothing more of its streamed answer for {self.policy.stream_idle_s:g} s"),
            "total": ("stream_timeout_s", self.policy.stream_timeout_s,
                      f"did not send its whole streamed answer within {self.policy.stream_timeout_s:g} s"),
        }[bound]
        each = f" (each of {tries} tries)" if tries > 1 else ""
        return GenerationTimedOut(f"generation server at {self.shown_url} timed out: {said}{each} ({field}){connecting(exc)}", seconds,
                                  tries, field, said)

    def _request(self, messages: Sequence[dict[str, str]], n: int, sampling: Sampling, adapter: str | None) -> dict:
        if adapter is not None and adapter not in self._adapters:
            raise AdapterNotLoaded(f"adapter {adapter!r} is not loaded")
        request = {
            "model": self._served.get(adapter, adapter) if adapter is not None else self.model_id,
            "messages": list(messages),
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        if sampling.frequency_penalty:
            request["frequency_penalty"] = sampling.frequency_penalty
        if sampling.presence_penalty:
            request["presence_penalty"] = sampling.presence_penalty
        request["extra_headers"] = dict(self.request_headers())  # the client's own argument: sent as headers, not in the body
        return request

    def generate(
        self, messages: Sequence[dict[str, str]], n: int = 1, sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[Candidate], int]:
        """`n` candidates and the prompt's token count, as the server counted it (`_read_completion`: an answer of another
        number of choices, or of a value of another type, is RemoteGeneratorError).

        The server reports completion tokens for all choices together; each candidate gets its share
        (the shares add up to the server's count). `cancel` set before the request is sent or while
        it runs raises Cancelled (the request is not sent, or its answer is dropped; a request
        already sent runs to its end on the server)."""
        if n < 1:
            raise ValueError(f"`n` must be at least 1, got {n}")
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before the request was sent")
        with self._use.generation(adapter):
            completion = self._chat(lambda: self._client.chat.completions.create(**self._request(messages, n, sampling, adapter)), adapter)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while the server generated")
        # `getattr`: a body not labelled JSON (a proxy's HTML page) comes back as its text (not an
        # AttributeError, a 500)
        if not getattr(completion, "choices", None):
            raise RemoteGeneratorError(f"not a chat completion (no choices): {shorten(str(completion), 300)}")
        try:
            return _read_completion(completion, n, _UsageBounds.of(messages, n, sampling))
        except (AttributeError, TypeError, ValueError) as exc:
            raise RemoteGeneratorError(f"generation server at {self.shown_url} answered something that is not a chat completion "
                                       f"({type(exc).__name__}: {shorten(str(exc), 200)})") from exc

    def stream(
        self, messages: Sequence[dict[str, str]], sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[str | Candidate]:
        """Text pieces as the server sends them, then the final Candidate, its `tokens` and `prompt_tokens` the server's
        usage of this stream (not a count kept here for the service to ask by the conversation: a chat of the same
        conversation planned meanwhile would take it, and the stream's count would then be asked of `/tokenize` after
        the whole answer streamed, a failing one an error event after it). The adapter is in use until
        the stream ends or is closed. Raises GenerationTimedOut (its `bound` the policy's field) when the server does not
        begin the answer within `policy.timeout_s` (each try), sends no piece of it for `policy.stream_idle_s` while the
        next is waited for, or does not end it within `policy.stream_timeout_s` of its sending; the pieces before were
        yielded, and the connection is closed (vLLM aborts the request). `cancel` set before the call raises Cancelled,
        the request not sent (as `generate`'s); once sent, a stream is stopped by closing it."""
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before the request was sent")
        with self._use.generation(adapter):
            yield from self._stream(messages, sampling, adapter)

    def _stream(self, messages: Sequence[dict[str, str]], sampling: Sampling, adapter: str | None) -> Iterator[str | Candidate]:
        # the request made at each send: one sent again after the adapter's load again names it as loaded again (its
        # weights' version may be new: `served_name`)
        def send():
            try:
                return self._streaming.chat.completions.create(**self._request(messages, 1, sampling, adapter), stream=True,
                                                            stream_options={"include_usage": True})
            except openai.APITimeoutError as exc:  # its headers not sent within `timeout_s`, each try (not an adapter's
                # load again, `_chat`'s: that one is `_call`'s "did not answer")
                raise self._stream_timed_out(exc, 1 + self.policy.max_retries) from exc

        chunks = self._chat(send, adapter)
        text, finish, usage = "", "stop", None

        def server_pieces() -> Iterator[str]:
            nonlocal text, finish, usage
            for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    piece = _read_piece(choice)
                    text += piece
                    yield piece
                    finish = _finish(choice.finish_reason, finish)

        try:  # sent as the stored answer reads: stripped (a server's answer may open with "\n\n")
            yield from stripped_pieces(server_pieces())
        # its first piece not sent within `timeout_s`, no piece for `stream_idle_s`, or not whole within `stream_timeout_s`
        # (`BoundedTransport`): httpx's timeout (`StreamTimedOut`), the client's around it
        except (openai.APITimeoutError, httpx2.TimeoutException) as exc:
            raise self._stream_timed_out(exc.__cause__ if isinstance(exc, openai.APITimeoutError) else exc) from exc
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise RemoteGeneratorError(f"generation server at {self.shown_url} broke off the stream: {redacted(str(exc))}") from exc
        except (AttributeError, TypeError, ValueError) as exc:  # a chunk without its delta, a number for a choice: the
            # server's (not the stream's error event a 500 `generation failed: AttributeError`)
            raise RemoteGeneratorError(f"generation server at {self.shown_url} sent what is not a chat completion chunk "
                                       f"({type(exc).__name__}: {shorten(str(exc), 200)})") from exc
        finally:
            chunks.close()
        if usage is None:
            raise RemoteGeneratorError("the generation server sent no usage (stream_options.include_usage) for a streamed answer")
        try:
            tokens, prompt_tokens = _read_usage(usage, _UsageBounds.of(messages, 1, sampling))
        except (AttributeError, TypeError, ValueError) as exc:  # `usage` a number: the server's, as a chunk's fault above
            raise RemoteGeneratorError(f"generation server at {self.shown_url} sent a usage that is not a chat completion's "
                                       f"({type(exc).__name__}: {shorten(str(exc), 200)})") from exc
        yield Candidate(text=text.strip(), finish_reason=finish, tokens=tokens, prompt_tokens=prompt_tokens)

    @property
    def shared_prefill(self) -> bool:
        """The `n` candidates of one chat share one prefill of its prompt (vLLM's parallel sampling: one request, its
        prompt's cached blocks shared by the `n` sequences), so `max_prefill_tokens` bounds the prompt once."""
        return True

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """The prompt token count the server's tokenizer gives (vLLM's `POST /tokenize` at the server's root, the chat
        template applied as for a chat, so the service's `max_prompt_tokens` and
        `max_prefill_tokens` bound a chat before it is sent); 0 when the server has no such route (the OpenAI API has none;
        or it answers 501, not implemented: asked once) or refuses this conversation (a 400, 413 or 422: the chat's own
        request then says why). Raises PromptNotCounted when the server does not answer within
        `policy.tokenize_timeout_s`, cannot be reached, or fails (a 5xx but 501), rather than waiting up to `timeout_s` for a
        hung server and then sending the chat uncounted, bounded by nothing. A streamed answer's
        count is its final Candidate's (`stream`), never asked here after it."""
        return self.prompt_counter()(messages)

    def prompt_counter(self) -> PromptCounter:
        """`prompt_tokens` for the counts of one chat (its prompt; then, when its retrieved shots do not fit, the prompt
        with some numbers of them it could keep, a few at once: `PromptCounter.each`,
        `service.chat.controllers.plan_checked`), all of them together bounded by `policy.tokenize_timeout_s` from this
        call: a count the time left does not allow is PromptNotCounted ("no answer within ..."), asked of the server or
        not. Each count given the whole bound, a `/tokenize` slow but within it would hold a chat whose shots were left
        out (shots + 2) times the bound, 30 s at the defaults."""
        return PromptCounter(self, time.monotonic() + self.policy.tokenize_timeout_s)

    def _counts(self, conversations: Sequence[Sequence[dict[str, str]]], deadline: float) -> list[int]:
        """The counts of `conversations` (`PromptCounter.each`), at most TOKENIZE_AT_ONCE at once on threads of their own,
        waited for until `deadline` (`time.monotonic()`) and no longer, the chat's PromptNotCounted there. Each count's
        request is bounded whole by the same deadline (`pluralign.bounded_http.BoundedTransport`: connecting, sending,
        its status line, headers and every byte of its body, a 5xx's included), so a count still running then (a server
        sending its answer a byte at a time, each read well within httpx's timeouts) ends on its thread at most one
        read's wait past it, its connection closed (were only the body of a 200 bounded so, a server dribbling a 5xx's
        body or the headers of any answer would hold the count's thread, a daemon, and its connection as long as it
        liked, and a chat rate of such counts would pile them up). Each count runs on a thread in a copy of the
        caller's context (`contextvars`: the service's request id, on each count's request and log lines): on one event
        loop thread (openai's async client under `asyncio.timeout_at`) that thread is the bottleneck under load (2 cores
        at load 7-13: 40 chats of 6 counts at once took 0.6-2.2 s, past 1 s every chat a 503 at the 1 s bound; on
        threads 0.26-0.43 s; BENCHMARKS.md, counts53)."""
        if deadline - time.monotonic() <= 0:  # the chat's earlier counts took its bound
            raise self._not_counted_in_time()
        counts = [concurrent.futures.Future() for _ in conversations]
        waiting = iter(zip(counts, conversations, strict=True))
        taking = threading.Lock()
        context = contextvars.copy_context()

        def count() -> None:  # takes the counts not yet sent, one at a time, until none is left or the chat gave up
            while True:
                with taking:
                    future, messages = next(waiting, (None, None))
                if future is None or not future.set_running_or_notify_cancel():
                    return
                try:
                    future.set_result(context.copy().run(self._tokenized, messages, deadline))
                except BaseException as exc:  # noqa: BLE001 (handed to the chat, raised there)
                    future.set_exception(exc)

        # daemons, not a ThreadPoolExecutor's, which Python joins at exit: a process whose count was given up on would
        # wait for its thread (a 5xx's body read by the client a byte at a time: as long as the server liked)
        for _ in range(min(TOKENIZE_AT_ONCE, len(conversations))):
            threading.Thread(target=count, name="tokenize", daemon=True).start()
        try:
            done, late = concurrent.futures.wait(counts, timeout=max(0.0, deadline - time.monotonic()),
                                                 return_when=concurrent.futures.FIRST_EXCEPTION)
            failed = next((count.exception() for count in counts if count in done and count.exception() is not None), None)
            if failed is not None:  # PromptNotCounted (or a fault of this code's): the first in their order
                raise failed
            if late:
                raise self._not_counted_in_time()
            return [count.result() for count in counts]
        finally:  # the counts not yet sent are not sent; none is waited for
            for future in counts:
                future.cancel()

    def _not_counted_in_time(self) -> PromptNotCounted:
        bound = self.policy.tokenize_timeout_s
        return PromptNotCounted(f"the generation server at {self.shown_url} did not count the prompt's tokens (/tokenize) "
                                f"within {bound:g} s", f"no answer within {bound:g} s")

    def _tokenized(self, messages: Sequence[dict[str, str]], deadline: float) -> int:
        if self._closed:
            raise PromptNotCounted(self._closed_error(), "closed")
        if not self._tokenize_route:  # learnt meanwhile, from another count
            return 0
        left = deadline - time.monotonic()
        if left <= 0:  # the chat's earlier counts took its bound
            raise self._not_counted_in_time()
        root = self.base_url.removesuffix("/v1")  # vLLM serves /tokenize beside /v1, not in it
        try:  # every step of it, to the last byte of its answer, by the deadline (`BoundedTransport`)
            answer = self._counting.post(
                f"{root}/tokenize", json={"model": self.model_id, "messages": list(messages), "add_generation_prompt": True},
                headers=dict(self.request_headers()), extensions={DEADLINE: deadline},
                timeout=httpx2.Timeout(left, connect=min(left, self.policy.connect_timeout_s)))
        except httpx2.TimeoutException as exc:
            raise self._not_counted_in_time() from exc
        # a connection refused or broken off, a body labelled gzip that is not (DecodingError, else the chat's 500)
        except httpx2.RequestError as exc:
            raise PromptNotCounted(f"the generation server at {self.shown_url} could not be reached to count the prompt's "
                                   f"tokens (/tokenize): {redacted(str(exc))}", "unreachable") from exc
        status = answer.status_code
        # a 400, 413 or 422: this conversation's fault (vLLM's 400 for messages its chat template raises on), its chat's
        # own request says why; another 4xx, or a 501: no such route (404, 405), or not vLLM's, or a tokenizer without
        # the feature (vLLM's 501 for its NotImplementedError: lasting, unlike a 5xx's "not now", which must not make
        # every chat a 503); another 5xx: not now. Not any 4xx is "no route": one conversation the template refused
        # would leave every later chat of the process uncounted
        if status >= 500 and status != NOT_IMPLEMENTED:
            raise PromptNotCounted(f"the generation server at {self.shown_url} could not count the prompt's tokens "
                                   f"(/tokenize answered {status})", f"answered {status}")
        if status in (400, 413, 422):
            log.info("the generation server's tokenizer refused a prompt (%d): %s", status, redacted(shorten(answer.text, 300)))
            return 0
        try:
            count = answer.json().get("count") if answer.is_success else None
        except ValueError:  # not JSON: a proxy's page in the server's place (sent with a 200), not what the server
            # lacks: this prompt goes uncounted, the next is counted (one page must not switch counting off until the
            # process restarts, and `max_prompt_tokens`, `max_prefill_tokens` with it)
            log.info("the generation server's /tokenize at %s answered a body that is not JSON: a prompt sent uncounted", self.shown_url)
            return 0
        except AttributeError:  # JSON, not an object: not vLLM's answer
            count = None
        if not isinstance(count, int) or isinstance(count, bool):
            log.info("the generation server at %s counts no prompt tokens (no vLLM /tokenize): chats are sent uncounted", self.shown_url)
            self._tokenize_route = False
            return 0
        return count


class PromptCounter:
    """The prompt counts of one chat by a RemoteGenerator's server (`RemoteGenerator.prompt_counter`), all of them
    bounded by one `deadline` (`time.monotonic()`): called with a conversation, its count (as `prompt_tokens`).
    `at_once`: the most counts `each` asks at once (TOKENIZE_AT_ONCE), so the most a caller gains by handing it more."""

    at_once = TOKENIZE_AT_ONCE

    def __init__(self, remote: RemoteGenerator, deadline: float) -> None:
        self.remote, self.deadline = remote, deadline

    def __call__(self, messages: Sequence[dict[str, str]]) -> int:
        return self.each([messages])[0]

    def each(self, conversations: Sequence[Sequence[dict[str, str]]]) -> list[int]:
        """The counts of `conversations`, in their order, at most TOKENIZE_AT_ONCE asked of the server at once (one
        round trip's time for that many), each whole by the deadline (`RemoteGenerator._counts`: threads waited for
        until then). Raises PromptNotCounted as `prompt_tokens` does, at the first count that fails (those not yet sent
        are then not sent, those in flight not waited for), or at the deadline. Each count carries the caller's context (`contextvars`: the service's request id, sent
        with each count as `request_headers` and on its log lines). So a chat whose shots do not fit asks them
        neither one after another within the one bound, nor all at once (16 requests for a chat of 16 shots)."""
        if not conversations or not self.remote._tokenize_route:
            return [0] * len(conversations)
        return self.remote._counts(conversations, self.deadline)


# the fields of a chat request a server's 400 may name (`GenerationRefused.param`); the service forwards them as sent
CHAT_FIELDS = frozenset({"messages", "n", "max_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty"})


# The `openai` client builds an answer from its JSON unchecked (pydantic's `construct`): what it holds is the server's
# doing, a value of another type or a choice missing included, and is read here, in one place for a chat's answer
# (`_read_completion`), a stream's piece (`_read_piece`) and usage (`_read_usage`, both's): ValueError (AttributeError, TypeError from a part
# missing or of another kind) naming what is wrong, which `RemoteGenerator.generate` and `stream` raise as the server's
# failure (RemoteGeneratorError: the chat's 503 to send again, a stream's error event), never the chat's 500 nor a value
# relayed to the client as the server sent it.


def _read_completion(completion, n: int, bounds: _UsageBounds) -> tuple[list[Candidate], int]:
    """(the candidates, the prompt's count) of `completion`, a chat completion of `n` choices asked for: each choice's
    `index` once, 0 to n-1 (another count, or one repeated and one missing, would serve a client fewer choices than its
    `n`, or rerank and share the tokens among others than were asked for), its `content` a text or null, its
    `finish_reason` a text or null, the usage's counts whole numbers within `bounds` (none: 0). The server counts completion tokens for
    all choices together: each candidate gets its share (the shares add up to the server's count)."""
    choices = sorted(completion.choices, key=lambda c: c.index)
    if (indexes := [c.index for c in choices]) != list(range(n)):
        raise ValueError(f"its choices' `index` values are {shorten(repr(indexes), 100)} where {n} choices (0 to {n - 1}) were asked for")
    total, prompt_tokens = _read_usage(completion.usage, bounds) if completion.usage else (0, 0)
    shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
    return [Candidate(text=_text(c.message.content).strip(), finish_reason=_finish(c.finish_reason, "stop"), tokens=share)
            for c, share in zip(choices, shares, strict=True)], prompt_tokens


def _read_piece(choice) -> str:
    """The text piece of `choice`, a streamed chunk's (one choice asked for: another's pieces, of an `index` not 0, are
    not this answer's; `_text`)."""
    if choice.index != 0:
        raise ValueError(f"a choice of `index` {shorten(repr(choice.index), 60)} where one (0) was asked for")
    return _text(choice.delta.content)


# the tokens a chat template adds to a prompt beside its messages' text, at most: per message (its role's markers) and
# once (a template's own system prompt: Llama 3.1's date lines, Qwen's "You are Qwen..." are tens of tokens)
TEMPLATE_TOKENS_PER_MESSAGE = 64
TEMPLATE_TOKENS = 4096
# the most UTF-8 bytes a tokenizer's normalizer makes of one byte sent (NFKC turns U+FDFA's 3 bytes into 33; no code
# point does more under NFKC or NFKD, a scan of all of them says): a byte-fallback token holds one normalized byte
NORMALIZED_BYTES_PER_BYTE = 11


@dataclass(frozen=True)
class _UsageBounds:
    """The most tokens a chat's `usage` can count: completion tokens, the `n` answers' `max_tokens` each (a server
    generates no more: vLLM, OpenAI); prompt tokens, NORMALIZED_BYTES_PER_BYTE per UTF-8 byte of its messages' text (a
    byte-level BPE's token, SentencePiece's byte fallback, holds one byte at least of the text as the tokenizer's
    normalizer made it, NFKC at most 11 times longer) and the template's markers (TEMPLATE_TOKENS_PER_MESSAGE per
    message, TEMPLATE_TOKENS once). A count beyond is the server's fault, not a figure to relay: 10**30 tokens in the
    chat's `usage` went to a client's int64 or JavaScript number as the server sent it."""

    completion: int
    prompt: int

    @classmethod
    def of(cls, messages: Sequence[dict[str, str]], n: int, sampling: Sampling) -> _UsageBounds:
        text = sum(len(str(value).encode("utf-8", "surrogatepass")) for m in messages for value in m.values())
        return cls(completion=n * sampling.max_tokens, prompt=NORMALIZED_BYTES_PER_BYTE * text + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS)


def _read_usage(usage, bounds: _UsageBounds) -> tuple[int, int]:
    """(completion tokens, prompt tokens) of a chat's `usage`, plain or streamed (`_count`), each within `bounds`."""
    return (_count(usage.completion_tokens, "usage.completion_tokens", bounds.completion),
            _count(usage.prompt_tokens, "usage.prompt_tokens", bounds.prompt))


def _text(value) -> str:
    """A choice's `content` (a stream's piece: its delta's), "" where the server sent none; ValueError where it is not a
    text (0, false or [] would be served as an empty answer)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"`content` is {shorten(repr(value), 60)}, not a text")
    return value


def _count(value, field: str, at_most: int) -> int:
    """`value`, a token count of the server's `usage`, as an int; ValueError naming `field` where it is not a whole number
    of at least 0 (a count of 2.5, "3" or null would be relayed in the chat's `usage` as the server sent it), or is
    above `at_most` (`_UsageBounds`: refused, not clipped, as a count of another type is: a server that miscounts
    one figure is not trusted with the other, and a clipped figure would pass for the server's own)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{field}` is {shorten(repr(value), 60)}, not a whole number of at least 0")
    if value > at_most:
        raise ValueError(f"`{field}` is {shorten(repr(value), 60)}, more than the chat can count ({at_most:,})")
    return value


def _finish(value, otherwise: str) -> str:
    """A choice's `finish_reason` (`otherwise` where the server sent none); ValueError where it is not a text (a number
    would be relayed to the client as the chat's `finish_reason`, which OpenAI's clients read as a text)."""
    if value is None:
        return otherwise
    if not isinstance(value, str):
        raise ValueError(f"`finish_reason` is {shorten(repr(value), 60)}, not a text")
    return value or otherwise


def _server_words(exc: openai.APIStatusError) -> str:
    """The error's own message (vLLM's and OpenAI's `{"message": ...}` or `{"error": {"message": ...}}`), not the
    client's "Error code: 400 - {...}" around it."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    said = body.get("message") if isinstance(body, dict) else None
    return said if isinstance(said, str) else exc.message

