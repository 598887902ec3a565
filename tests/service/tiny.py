"""Tiny real pieces for service tests: a random Llama with SmolLM2's tokenizer, MiniLM, a PAL
checkpoint trained on a small persona population, and a live uvicorn server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = next(
    (p for p in (Path(os.environ.get("PLURALIGN_SHARED_DATA", ROOT / "missing")), ROOT.parent / "shared" / "data",
                 ROOT.parent.parent / "shared" / "data") if (p / "anthropic_persona").is_dir()),
    ROOT.parent / "shared" / "data",
)


def save_tiny_generator(folder: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pluralign.embed.models import smollm2_dir

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_tiny_pal(folder: Path, encoder) -> Path:
    """PAL trained on a small persona population (2 groups), embedded with `encoder`."""
    from pluralign.data.persona import PersonaConfig, build_persona
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.reward.features import embed_pairs
    from pluralign.reward.pal import PALConfig, PALTrainConfig, save_pal, train_pal

    # a rerun embeds nothing: the suite's own cache (tests/conftest.py's `minilm`), not the one under HOME (a fresh folder per run)
    cache = Path(os.environ["PLURALIGN_CACHE_DIR"]) / "embeddings.sqlite" if os.environ.get("PLURALIGN_CACHE_DIR") \
        else ROOT / ".cache" / "pluralign" / "test-embeddings.sqlite"
    encoder = CachedEncoder(encoder, EmbeddingCache(cache))
    protocol = build_persona(PersonaConfig(groups=2, users_per_group=4, comparisons_per_user=20, seed=0), SHARED_DATA)
    users = sorted({r.user_id for r in protocol.seen.train})
    train = embed_pairs(protocol.seen.train, encoder, users)
    val = embed_pairs(protocol.seen.val, encoder, users)
    torch.manual_seed(0)
    config = PALConfig(k=2, input_dim=encoder.dim, latent_dim=16, hidden=32)
    result = train_pal(train, val, config, PALTrainConfig(max_epochs=8, batch_size=64))
    save_pal(folder, result.model, result.user_weights, encoder.encoder_id)
    return folder


def field_named(response: httpx.Response) -> str | None:
    """The field an error response names, whatever the error body's shape: this service's
    `{"extra": [{"key": ...}]}` or OpenAI's `{"error": {"param": ...}}`."""
    body = response.json()
    if isinstance(body.get("error"), dict):
        return body["error"].get("param")
    extra = body.get("extra") or [{}]
    return extra[0].get("key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prompt_server():
    """uvicorn's Server, told to stop and stopping without its fixed waits: uvicorn looks at `should_exit`
    every 0.1 s, then sleeps 0.1 s after asking its connections to close and looks again every 0.1 s until
    they have (~0.15-0.25 s of every service a test stops; `pluralign serve` keeps uvicorn's own). This one
    is woken when told (`stop`), and looks every few ms; what it waits for is the same: the connections
    closed and the requests' tasks done (up to `timeout_graceful_shutdown`), then the app's shutdown."""
    import asyncio

    import uvicorn

    class PromptServer(uvicorn.Server):
        wake: asyncio.Event | None = None
        loop: asyncio.AbstractEventLoop | None = None

        def stop(self) -> None:
            self.should_exit = True  # before reading `wake`: a main_loop not begun yet sees it at its first tick
            loop, wake = self.loop, self.wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed already
                    loop.call_soon_threadsafe(wake.set)

        async def main_loop(self) -> None:
            self.loop, self.wake = asyncio.get_running_loop(), asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 0.1)  # uvicorn's tick: its Date header, once a second

        async def shutdown(self, sockets=None) -> None:
            for server in self.servers:
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            try:
                await asyncio.wait_for(self._settled(), timeout=self.config.timeout_graceful_shutdown)
            except TimeoutError:
                logging.getLogger("uvicorn.error").error(
                    "Cancel %s running task(s), timeout graceful shutdown exceeded", len(self.server_state.tasks))
                for task in self.server_state.tasks:
                    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            if not self.force_exit:
                await self.lifespan.shutdown()

        async def _settled(self) -> None:
            while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
                await asyncio.sleep(0.005)
            for server in self.servers:
                await server.wait_closed()

    return PromptServer


def burst_within_one_second(send, n: int, tries: int = 10) -> list:
    """`n` calls of `send()` (a request), all begun and ended within one wall-clock second: Litestar's rate window
    is the clock's whole second, so a burst that straddles two is judged by neither's count (a loaded machine
    spread 60 requests over three seconds). Each try starts at the top of a second (a window of its own, the
    last burst's forgotten); a burst that crossed into the next second is sent again, `tries` times at most.
    Returns the `n` answers; fails the test when no try fitted."""
    for _ in range(tries):
        time.sleep(1 - time.time() % 1)
        began = time.time()
        answers = [send() for _ in range(n)]
        if int(time.time()) == int(began):  # each request was counted in the second it began in
            return answers
    pytest.fail(f"none of {tries} bursts of {n} requests began and ended within one second (a machine that slow?)")


def wait_ran(counts, more: int, timeout: float, what: str) -> None:
    """Return once `counts()` (how many of `what` ran through so far, how many raised) shows `more` more ran through than
    at this call: with 2, a whole one begun after the call has run. Those that raised are not counted (they may have
    stopped before the step a check looks for); `timeout` only bounds a hung or failing one. `wait_passes`,
    `tests.e2e.job_kinds.wait_rounds`."""
    ran, failed = counts()
    deadline = time.monotonic() + timeout
    while (now := counts())[0] < ran + more:
        assert time.monotonic() < deadline, f"{now[0] - ran} of {more} {what} ran through in {timeout:g} s; {now[1] - failed} raised meanwhile"
        time.sleep(0.02)


def wait_passes(periodic, more: int = 2, timeout: float = 120.0) -> None:
    """Return once `periodic` (a running `service.periodic.Periodic`: a replica's deletion sweep, its PAL folder's watch,
    the job retention) has run `more` passes through after this call. With 2, a whole pass begun after the call has run
    (the one under way at the call may have looked before it): what a check that a pass did NOT do something waits for,
    in place of a sleep that a busy machine's passes may not fit in (`wait_ran`)."""
    wait_ran(lambda: (periodic.passes, periodic.failed), more, timeout, f"passes of {periodic._name}")


class AskedFrom:
    """`lock` (a service's lock, put in its place) noting in `asked` when the thread named `thread` asks for it (None: any
    thread but the one that made this): a wait for it shows that thread has come to the lock (waiting for it, when the test
    holds it), where a sleep showed nothing on a busy machine."""

    def __init__(self, lock, thread: str | None = None):
        self.lock, self.thread, self.maker, self.asked = lock, thread, threading.current_thread(), threading.Event()

    def acquire(self, *args, **kwargs) -> bool:
        asking = threading.current_thread()
        if asking.name == self.thread if self.thread is not None else asking is not self.maker:
            self.asked.set()
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class LiveServer:
    """The real app under uvicorn on 127.0.0.1, in a thread of the test process."""

    def __init__(self, app):
        import uvicorn

        # bound here and handed to uvicorn, not a port looked up free and bound later by the server's thread: in
        # that gap (the app's startup, seconds under load) another xdist worker's server or client could take it
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _prompt_server()(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.after_stop: list = []  # called once the server's thread ended (not when it outlived __exit__'s wait)
        self.stop_wait_s = 10.0  # __exit__'s wait for the server's thread; a test whose check is the stop's end sets more

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and self.thread.is_alive() and time.time() < deadline:
            time.sleep(0.002)  # uvicorn's startup: the app's, then the socket bound
        while time.time() < deadline and self.thread.is_alive():
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        if self.thread.is_alive():
            raise RuntimeError("server did not start")
        self._ended()  # `with` calls no __exit__ after a failed __enter__: what it would release goes here
        raise RuntimeError("server did not start: its thread ended (the app's startup failed?)")

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.thread.join(timeout=self.stop_wait_s)
        if self.thread.is_alive():  # said, not raised: a test's own assertions come first
            warnings.warn(f"the service on {self.url} still runs {self.stop_wait_s:g} s after it was told to stop: what it is still doing "
                          "(an ingest batch being embedded, a job) goes on under the next tests, on the encoder they share",
                          stacklevel=2)
            return
        self._ended()

    def _ended(self) -> None:
        """Once the server's thread ended: its socket closed (uvicorn's listener closed it already, unless the app's
        startup failed first) and `after_stop` called."""
        self.socket.close()
        for then in self.after_stop:
            then()
        self.after_stop.clear()


@pytest.fixture(scope="session")
def tiny_generator_dir(tmp_path_factory) -> Path:
    return save_tiny_generator(tmp_path_factory.mktemp("tiny-llama"))


def remembering(encoder):
    """`encoder` (a `SentenceEncoder`) whose model runs only on texts this process has not embedded before: a copy
    sharing its model, tokenizer copy and turns, so each call still counts its word pieces and takes its turns
    (`in_turns`) as the service's encoder does; the texts of a slice seen before come from memory (the vectors the
    model gave them then), the others from the model. The service tests send the same few texts again and again
    (each test its own users and tenants, the same prompts and answers): in test_elicitation and test_long29_growth
    (session 50) 2,259 of the 2,819 texts embedded were repeats, and their embedding took 19.8 s of the 49.8 s of CPU
    the process spent. Only in this process's memory: a DELETE's look for a user's texts in the service's own files
    is unchanged."""
    import copy

    import numpy as np

    seen: dict[str, np.ndarray] = {}
    run = encoder._run

    def remembered(texts: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in seen))
        if new:
            seen.update(zip(new, run(new), strict=True))
        return np.stack([seen[t] for t in texts]).astype(np.float32, copy=False)

    memo = copy.copy(encoder)
    memo._run = remembered
    return memo


@pytest.fixture(scope="session")
def minilm(sentence_encoder):
    """MiniLM without an embedding cache (the service keeps its own), the session's one model (tests/conftest.py),
    remembering the vectors of the texts it embedded before (`remembering`)."""
    return remembering(sentence_encoder)


@pytest.fixture(scope="session")
def tiny_pal_dir(tmp_path_factory, minilm) -> Path:
    if not (SHARED_DATA / "anthropic_persona").is_dir():
        pytest.skip(f"persona data not found under {SHARED_DATA}")
    return train_tiny_pal(tmp_path_factory.mktemp("pal"), minilm)


class Service:
    """A live server with keys for two tenants and an admin, and helpers to call it."""

    def __init__(self, server: LiveServer, runtime, keys: dict[str, str]):
        self.server, self.runtime, self.keys = server, runtime, keys
        self.url = server.url

    def client(self, who: str = "acme") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


_TOKENIZERS: dict[tuple, object] = {}  # parsed once per process, never a generator's own
_SPARE_TOKENIZERS: dict[tuple, list] = {}  # copies whose service stopped, each for the next service
_TOKENIZERS_LOCK = threading.Lock()


def _tokenizer_copy(folder: Path) -> tuple[tuple, object]:
    """(key, a tokenizer of `folder` no running generator holds): a spare one, else a deep copy of the one
    parsed once per process (parsing SmolLM2's tokenizer.json took 0.2-0.3 s, a copy 0.1-0.4 s: a copy is
    the same parse)."""
    import copy

    from transformers import AutoTokenizer

    folder = Path(folder)
    key = (folder.resolve(), *(f.stat().st_mtime_ns for f in sorted(folder.glob("tokenizer*"))))
    with _TOKENIZERS_LOCK:
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = AutoTokenizer.from_pretrained(str(folder))
        spares = _SPARE_TOKENIZERS.setdefault(key, [])
        if spares:
            return key, spares.pop()
        original = _TOKENIZERS[key]
    return key, copy.deepcopy(original)


def _spare_tokenizer(key: tuple, tokenizer) -> None:
    with _TOKENIZERS_LOCK:
        _SPARE_TOKENIZERS.setdefault(key, []).append(tokenizer)


def _generator_with(folder: Path, tokenizer):
    from transformers import AutoModelForCausalLM

    from pluralign.device import default_device
    from pluralign.policy.generator import Generator

    folder = Path(folder)
    return Generator(AutoModelForCausalLM.from_pretrained(str(folder)).to(default_device()), tokenizer, folder.name)


def tiny_generator(folder: Path):
    """`Generator.from_folder(folder)`, its tokenizer parsed once per process and deep-copied for each
    generator (its own copy: a fast tokenizer used from two threads at once raises "Already borrowed").
    Parsing SmolLM2's tokenizer.json took 0.2-0.3 s of every service a test starts, the copy 0.1 s.
    (`start_service` also reuses the copies of services stopped: `LiveServer.after_stop`.)"""
    return _generator_with(folder, _tokenizer_copy(folder)[1])


def start_service(data_dir: Path, generator_dir: Path, pal_dir: Path, encoder, admin_handlers=(), built=None, **settings):
    """Build the runtime from tiny models and serve it; returns (LiveServer context, Service). Its
    generator's tokenizer is its own while it runs, and a later service's once it stopped (its thread
    ended): a copy is as slow as a parse, and most tests start a service. `built`: called with the runtime
    once built, before the app around it is (what a start does while its population model loads)."""
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings

    config = Settings(data_dir=str(data_dir), generator=str(generator_dir), pal_dir=str(pal_dir), max_tokens=12, **settings)
    key, tokenizer = _tokenizer_copy(generator_dir)
    runtime = Runtime.build(config, generator=_generator_with(generator_dir, tokenizer), encoder=encoder)
    keys = {
        "acme": runtime.keys.issue("acme"),
        "globex": runtime.keys.issue("globex"),
        "admin": runtime.keys.issue("ops", admin=True),
    }
    if built is not None:
        built(runtime)
    server = LiveServer(create_app(runtime=runtime, admin_handlers=admin_handlers))
    server.after_stop.append(lambda: _spare_tokenizer(key, tokenizer))
    return server, Service(server, runtime, keys)


@contextlib.contextmanager
def serving_a_comparison(data_dir: Path, generator_dir: Path, pal_dir: Path, encoder, comparison: dict):
    """A live service with the admin routes whose default tenant holds `comparison` (a feedback body)."""
    from service.admin.controllers import ADMIN_HANDLERS

    server, service = start_service(data_dir, generator_dir, pal_dir, encoder, admin_handlers=ADMIN_HANDLERS)
    with server:
        with service.client() as c:
            assert c.post("/v1/feedback", json=comparison).status_code == 201
        yield service


def start_replicas(tmp_path: Path, generator_dir: Path, pal_dir: Path, encoder, sync_ms: int = 60_000, admin_handlers=(), **settings):
    """Two services on one store (`replicas=2`), each with its own data folder and reads allowed to
    be `sync_ms` stale; both know tenant acme's key. Returns (first server, a, second server, b)."""
    store = str(tmp_path / "shared-lancedb")
    first, a = start_service(tmp_path / "a", generator_dir, pal_dir, encoder, admin_handlers, store_uri=store, replicas=2,
                             replica_index=0, store_sync_ms=sync_ms, **settings)
    second, b = start_service(tmp_path / "b", generator_dir, pal_dir, encoder, admin_handlers, store_uri=store, replicas=2,
                              replica_index=1, store_sync_ms=sync_ms, **settings)
    b.keys["acme"] = b.runtime.keys.issue("acme")
    return first, a, second, b


@contextlib.contextmanager
def fspo_service(tmp_path_factory, generator_dir: Path, pal_dir: Path, encoder, **settings):
    """A live service whose fallback adapter (`fspo_adapter`) is a random LoRA on the tiny model, with `settings`
    (`Settings` fields); `service.data_dir` is its data folder."""
    from tests.service.test_service_adapters import random_adapter

    fspo = random_adapter(generator_dir, tmp_path_factory.mktemp("fspo") / "fspo", generator_dir.name, "fspo", 1)
    data_dir = tmp_path_factory.mktemp("data")
    server, service = start_service(data_dir, generator_dir, pal_dir, encoder, fspo_adapter=str(fspo), **settings)
    service.data_dir = data_dir
    with server:
        yield service


def fixed_answers(texts: list[str]) -> type:
    """A generator class whose chats answer `texts` in turn (its class attribute `texts`, which a test may
    set before a chat): what `fixed_service` makes a service's tiny generator, keeping its tokenizer."""
    from pluralign.policy.generator import Candidate, Generator

    class FixedGenerator(Generator):
        def generate(self, messages, n=1, sampling=None, adapter=None, cancel=None):
            return [Candidate(text=self.texts[i % len(self.texts)], finish_reason="stop", tokens=1) for i in range(n)], 5

    FixedGenerator.texts = list(texts)
    return FixedGenerator


@contextlib.contextmanager
def fixed_service(data_dir: Path, generator_dir: Path, pal_dir: Path, encoder, generator: type, **settings):
    """A live service (`start_service`, reranking off) whose generator answers as `generator` (a
    `fixed_answers` class) does."""
    server, service = start_service(data_dir, generator_dir, pal_dir, encoder, rerank=False, **settings)
    service.runtime.generator.__class__ = generator
    with server:
        yield service


def stated_length_order(client: httpx.Client, user: str, prompt: str, short: str, long: str) -> dict[str, bool]:
    """For a user `user`-less and one `user`-more (PATCH stated-preferences `length`), whether
    POST /v1/rewards/score ranks `short` above `long` for `prompt`: {"less": ..., "more": ...}."""
    order = {}
    for direction in ("less", "more"):
        who = f"{user}-{direction}"
        r = client.patch(f"/v1/users/{who}/stated-preferences", json={"preferences": {"length": direction}})
        assert r.status_code == 200, r.text
        r = client.post("/v1/rewards/score", json={"user": who, "prompt": prompt, "responses": [short, long]})
        assert r.status_code == 200, r.text
        scores = r.json()["scores"]
        order[direction] = scores[0] > scores[1]
    return order


def give_terse_answers(client: httpx.Client, user: str) -> None:
    """POST /v1/feedback three comparisons in which `user` chose a short plain answer over a long or listed one (tea,
    bikes, rain), each answered 201: enough for a profile's nearest prototype and its confidence."""
    for topic, chosen, rejected in [("tea", "Green tea.", "A long essay on every tea there is, with lists."),
                                    ("bikes", "Oil the chain.", "Consider these points:\n- one\n- two\n- three"),
                                    ("rain", "Take an umbrella.", "Rain is water falling from clouds, which is a long story.")]:
        r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tips on {topic}?",
                                              "chosen": chosen, "rejected": rejected})
        assert r.status_code == 201, r.text


def give_drink_likes(client: httpx.Client, per_user: int, likers: tuple[tuple[str, str], ...] = (("ann", "tea"), ("ben", "coffee"), ("cy", "tea"))) -> None:
    """POST /v1/feedback `per_user` comparisons for each (user, drink) of `likers` (ann and cy like tea, ben coffee),
    the drink they like chosen over the other, each answered 201: a population of two opposed groups for a PAL or EM job
    to train on."""
    for user, likes in likers:
        for i in range(per_user):
            other = "coffee" if likes == "tea" else "tea"
            r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"A drink for morning {i}?",
                                                  "chosen": f"Some {likes}, number {i}.", "rejected": f"Some {other}, number {i}."})
            assert r.status_code == 201, r.text
