"""The local generator in a process of its own, so generation never holds the caller's GIL.

A causal LM's generation loop is mostly Python (transformers' sampling loop, logits processors,
stopping criteria), so in the service's process it holds the interpreter lock most of the time,
and every light request (a profile read: several LanceDB calls, each releasing and re-taking the
lock) waits for it again and again. Here the model lives in a child process; this object offers
what the service uses of `Generator` (generate, generate_styled, stream, prompt_tokens, adapters)
and forwards each call over a pipe. The tokenizer is loaded here too, so prompt sizes are counted
without asking the child.

    generator = ProcessGenerator("/models/smollm2", model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    candidates, prompt_tokens = generator.generate(messages, n=4, sampling=Sampling(max_tokens=64))
    generator.close()

Several calls run at once: each is tagged with its number on the one pipe and served on a thread of its own in the
child, where the calls of different lanes (`pluralign.turns.caller()`, read in the calling thread and sent with the
call) take the model in turns a token step at a time (`pluralign.policy.generator`), so one tenant's long chat does not hold every other tenant's for its whole length
(as a child serving one call at a time would). A waiting call
reads the pipe for all of them (one reader at a time; a message for another call goes to that call's inbox).
`cancel` events work as with `Generator`: the child stops that call alone at its next token and the call raises
`Cancelled`. If the child dies (e.g. killed for memory), every call in flight raises `GeneratorUnavailable` and the
next call starts a new child (with the adapters that were loaded, but one damaged on disk meanwhile: it is
logged and left out of `adapters`, so the adapter pool loads it afresh or falls back). A call whose request
the child never read (it died as the request was sent, before saying it began the call: a killed process's threads
take a while to end, and until they have it counts as alive) is sent again to a new child, as one sent just after it ended is, unless its
`cancel` is set by then (Cancelled; the next call starts the child). A call whose `cancel` is set before it is sent
generates nothing, as in-process.

A child that hangs with its pipe open (a device that never returns, a deadlock, a stopped process) would hold every
call on it for good: while calls are in progress the child says every `_BEAT_S` how many forward passes it has run,
and a call that waits `stall_timeout_s` (default 60; the service's `generation_stall_s`) from its send without the
child making progress (no new forward pass, no message) kills it: that call and every other call it held raise
`GeneratorStalled` (a `GeneratorUnavailable`: the service's 503), and the next call starts a new child. A healthy
child's forward passes take well under a second (a long prompt's prefill is sliced), so only a hang passes the limit.

A call no child could serve (it died during the call, or a new one could not be started) raises `GeneratorUnavailable`,
which says "try again" (the service answers 503 with Retry-After); a failure inside the child's generation (an error
its model raised) is a plain `GeneratorProcessError`. Once `close()` has run, every call raises `GeneratorClosed` (but
`drop_adapter`, which then only forgets the adapter) and no child is started again. A child that a kill does not end within `_KILL_WAIT_S` (stuck in the kernel: a hung device
driver or network filesystem) is logged and left to the OS (the interpreter's exit does not wait for it); the next
call starts a new one.

Whatever the pipe raises as the child dies or once it is gone (EOFError, BrokenPipeError,
ConnectionResetError, another OSError) is one of these, never raised as such.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from pluralign.policy import ignore_peft_deprecation
from pluralign.policy.generator import AdapterNotLoaded, Cancelled, Candidate, Generator, Sampling
from pluralign.turns import CALLER, caller

log = logging.getLogger(__name__)

_POLL_S = 0.02  # how often a waiting call with a cancel event looks at it (and at the child)
_ALIVE_S = 0.5  # how often a waiting call without one looks at the child
_EXIT_WAIT_S = 5.0  # how long a child whose pipe closed is given to exit before it is killed
_KILL_WAIT_S = 10.0  # how long a killed child is waited for; one still there (stuck in the kernel) is left to the OS
_BEAT_S = 1.0  # how often the child says how many forward passes it has run (its progress, `stall_timeout_s`)


class GeneratorProcessError(RuntimeError):
    """The generation process failed or exited; the message says how."""


class GeneratorUnavailable(GeneratorProcessError):
    """No generation process could serve the call: the child exited before or during it (killed, e.g. by the OOM
    killer), or a new one could not be started. Nothing was generated for it; the same call later starts a new child."""


class GeneratorStalled(GeneratorUnavailable):
    """The child made no progress (no forward pass, no message) for `stall_timeout_s` while the call waited on it: hung
    (a device that does not return, a deadlock, a stopped process). It was killed, so the call and every other call it
    held raise this; the next call starts a new child."""

    def __init__(self, message: str, stall_s: float):
        super().__init__(message)
        self.stall_s = stall_s  # the limit it passed (`ProcessGenerator.stall_timeout_s`)


class _SendStalled(OSError):
    """A request the child took none of within `stall_timeout_s` (hung): it was killed (`ProcessGenerator._send_watched`)."""


class GeneratorClosed(GeneratorUnavailable):
    """The generator was closed (its owner stops): no child is started for the call."""


class _Unread(GeneratorUnavailable):
    """The child ended with the request unread in its end of the pipe (Linux resets the parent's end then:
    ConnectionResetError): it never began the call, which a new child can serve."""


def _serve(conn, folder: str, model_id: str | None) -> None:
    """The child: load the model, then serve each call on a thread of its own until the pipe closes. A request is
    (op, args, call id, lane, cancelled); ("cancel", call id) stops that call at its next token. Every message sent
    back is (kind, value, call id): "began" as soon as the request is read, then the call's pieces and its result."""
    ignore_peft_deprecation()  # a spawned interpreter: the parent's warning filters are not carried over
    try:
        generator = Generator.from_folder(folder, model_id)
    except BaseException as exc:  # the parent reports it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", (generator.context_tokens, generator.shared_prefill)))
    sending = threading.Lock()  # the calls' threads send on one pipe
    cancels: dict[int, threading.Event] = {}  # per call in progress

    def send(message) -> None:
        with sending:
            conn.send(message)

    threading.Thread(target=_beat, args=(send, generator, cancels), daemon=True, name="beat").start()

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent closed (or went): this process ends, its heap left to the OS (no
            gc.freeze()  # last garbage collections over torch's and the model's objects: a second of CPU and more)
            return
        if message[0] == "cancel":
            if (event := cancels.get(message[1])) is not None:
                event.set()
            continue
        op, args, call, lane, cancelled = message
        cancels[call] = cancel = threading.Event()
        if cancelled:  # its caller left before it was sent: nothing is generated, as in-process
            cancel.set()
        send(("began", None, call))
        threading.Thread(target=_serve_call, args=(send, generator, op, args, call, lane, cancel, cancels), daemon=True,
                         name=f"call-{call}").start()
        # not held while this loop waits for the next call (on a quiet service, for good): the chat's messages, its
        # user's retrieved shots among them, after that user's DELETE too (it cannot reach this process)
        del message, args


def _beat(send, generator: Generator, cancels: dict) -> None:
    """Every `_BEAT_S` while a call is in progress (`cancels`; idle, nothing is read: the pipe would fill): ("alive",
    forward passes run so far, None), the child's progress for the parent's stall limit. The
    passes are counted at the output layer (every forward reaches it, a prefill slice's too, through any adapter: peft
    wraps the layers around it, not it). A beat while a stop-string set-up runs (`Generator.setting_up`: seconds of CPU
    over the vocabulary before a chat takes its turn, no forward pass; it always ends) counts as one too: else four stop strings of 64 characters, or a few chats' at once, would pass the limit and the
    healthy child would be killed.
    A hung child sends none (stopped, or stuck in C code holding the GIL) or the same count again (a deadlock in Python;
    a device call that never returns), once any set-up running then has ended."""
    passes = [0]

    def count(*_args) -> None:
        passes[0] += 1

    output = generator.model.get_output_embeddings()
    if output is not None:
        output.register_forward_pre_hook(count)
    while True:
        time.sleep(_BEAT_S)
        if generator.setting_up:
            passes[0] += 1
        if not cancels:
            continue
        try:
            send(("alive", passes[0], None))
        except (OSError, ValueError):  # the pipe closed: the process is ending
            return


def _serve_call(send, generator: Generator, op: str, args, call: int, lane: str, cancel, cancels: dict) -> None:
    """One call, on its own thread, in its caller's lane of the generator's turns."""
    CALLER.set(lane)
    try:
        if op == "stream":
            _send_stream(send, generator, cancel, args, call)
        elif op == "generate":
            send(("ok", generator.generate(*args, cancel=cancel), call))
        elif op == "generate_styled":
            send(("ok", generator.generate_styled(*args, cancel=cancel), call))
        elif op == "load_adapter":
            if not _load_adapter(send, generator, args, call):
                os._exit(0)  # the next call starts a clean child (the calls in progress: GeneratorUnavailable)
        elif op == "drop_adapter":
            send(("ok", generator.drop_adapter(*args), call))
        else:
            send(("error", f"unknown operation {op!r}", call))
    except Cancelled as exc:
        send(("cancelled", str(exc), call))
    except Exception as exc:  # the caller sees it; the child carries on
        send(("failed", (type(exc).__name__, str(exc)), call))
    finally:
        cancels.pop(call, None)


def _send_stream(send, generator: Generator, cancel, args, call: int) -> None:
    """Send each piece of `generator.stream(*args)`, then ("ok", None). Raises `Cancelled` once
    `cancel` is set (the stream's reader went away; set before the call, before anything is generated)."""
    pieces = generator.stream(*args, cancel=cancel)
    try:
        for piece in pieces:
            if cancel.is_set():
                raise Cancelled("the stream's reader went away")
            send(("piece", piece, call))
    finally:
        pieces.close()  # a generation still running stops at its next token
    send(("ok", None, call))


def _load_adapter(send, generator: Generator, args, call: int) -> bool:
    """Load an adapter and send ("ok", name). A failed load whose remains were dropped raises (the
    child carries on); False, its failure sent, when they could not be: the model is in a state no one
    should be served from, so the child ends."""
    try:
        send(("ok", generator.load_adapter(*args), call))
    except Exception as exc:
        if _drop_half_loaded(generator, args[0]):
            raise
        send(("failed", (type(exc).__name__, f"{exc} (the generation process starts again)", True), call))
        return False
    return True


def _drop_half_loaded(generator: Generator, name: str) -> bool:
    """Drop what a failed load left of adapter `name` in the child (it must serve no one, as
    `AdapterPool._load` drops it in process). False when that cannot be done (peft's first load into
    the bare model injects its layers in place and cannot always be undone)."""
    try:
        if name in generator.adapters:
            generator.drop_adapter(name)
    except Exception as exc:
        log.error("generation process: what a failed load left of adapter %s could not be dropped: %s", name, exc)
        return False
    return True


class _Call:
    """A call sent to a child: the messages it has been sent back, not yet read by its caller."""

    def __init__(self, number: int, conn, process):
        self.number, self.conn, self.process = number, conn, process
        self.inbox: deque = deque()
        self.began = False  # the child read the request (its "began")
        self.cancel_sent = False
        self.gone: type[GeneratorUnavailable] | None = None  # its child ended: the error its caller raises
        self.sent_at = time.monotonic()  # its request sent: no progress of its child since then for the stall limit fails it


def _lane() -> str:
    """The calling thread's lane of the child's turns (`pluralign.turns.caller`), as text."""
    lane = caller()
    return lane if isinstance(lane, str) else f"thread:{lane[1]}"


class ProcessGenerator:
    """A `Generator` for the model saved in `folder`, run in a child process (see the module)."""

    def __init__(self, folder: str | Path, model_id: str | None = None, start_timeout_s: float = 600.0,
                 stall_timeout_s: float = 60.0):
        """`stall_timeout_s`: how long a call waits on a child that makes no progress (no forward pass of any call, no
        message) before the child is killed and the call raises `GeneratorStalled`; a healthy child's forward passes
        (a prefill slice, a token step) take well under a second, an adapter's load seconds."""
        from transformers import AutoTokenizer

        if not stall_timeout_s >= 2 * _BEAT_S:  # a healthy child is heard from every `_BEAT_S` at best (nan: refused)
            raise ValueError(f"`stall_timeout_s` must be at least {2 * _BEAT_S:g} s, got {stall_timeout_s}")
        self.stall_timeout_s = stall_timeout_s
        self._passes: int | None = None  # the child's forward passes as last heard (its "alive")
        self._progress_at = time.monotonic()  # when the child was last heard to make progress

        self.folder = str(folder)
        self.model_id = model_id or Path(folder).name
        self.model = None  # the weights live in the child: the adapter pool counts adapter files instead
        self.start_timeout_s = start_timeout_s
        self._adapters: dict[str, str] = {}  # name -> folder, loaded in the child
        # held to start (or replace) the child and to send a call to it, not while a call waits for its answer;
        # reentrant: a new child's reloading of the adapters reads its pipe, which may find it gone (`_read`)
        self._lock = threading.RLock()
        self._sending = threading.Lock()  # one message at a time on the pipe (calls and their cancels)
        self._mail = threading.Condition()  # the calls in progress, their messages, and who reads which pipe
        self._calls: dict[int, _Call] = {}
        self._reading: set[int] = set()  # id() of the pipes a waiting call reads now (one reader a pipe)
        self._numbers = itertools.count()
        self._active = 0  # calls in progress (under `_mail`), starting a child for them included: `close` waits for them
        self._using: Counter[str] = Counter()  # generations in progress per adapter (under `_mail`): `adapters_in_use`
        self._context = mp.get_context("spawn")  # no fork of a process with threads and a torch runtime
        self._process = None
        self._left = False  # the child did not end when killed and was left behind (`_wait_for_exit`)
        self._closed = False
        self.context_tokens: int | None = None
        self.shared_prefill = False  # `Generator.shared_prefill` of the child's model (told once it is ready)
        # the child starts first and loads the model while the tokenizer is parsed here (each takes
        # seconds: torch's and transformers' imports, the weights, tokenizer.json), ready once both are
        self._launch()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            self._await_ready()
        except BaseException:  # no tokenizer there (a folder of weights only), Ctrl-C: no child left loading
            self._end_child()
            raise

    def _start(self) -> None:
        self._launch()
        self._await_ready()

    def _launch(self) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child, self.folder, self.model_id),
                                              name="pluralign-generator", daemon=True)
        self._process.start()
        self._left = False
        self._passes, self._progress_at = None, time.monotonic()
        child.close()

    def _end_child(self) -> None:
        """A start that failed: the child killed and waited for (no zombie left until a later start reaps it), its pipe
        closed; one the kill does not end is left behind (`_leave_if_alive`), so the next call starts a new one at once.
        Once more does nothing."""
        self._process.kill()
        self._process.join(_KILL_WAIT_S)
        self._conn.close()
        self._leave_if_alive()

    def _leave_if_alive(self) -> None:
        """The child, killed and waited for `_KILL_WAIT_S`, still there (stuck in the kernel: a hung device driver or
        network filesystem): logged and left behind, its pipe closed; `_live` says no from now on."""
        if self._left or not self._process.is_alive():  # (left already: `_end_child` once more)
            return
        log.error("generation process %d did not exit within %g s of SIGKILL (stuck in the kernel: a hung device driver "
                  "or network filesystem); left behind, its memory held until it ends: a new one serves the next call",
                  self._process.pid, _KILL_WAIT_S)
        self._leave()
        self._conn.close()

    def _leave(self) -> None:
        """The child, one a kill does not end, left behind: `_live` says no from now on (a call waiting on it ends within
        `_ALIVE_S`: GeneratorUnavailable), and the interpreter's exit does not wait for it. multiprocessing joins every
        child it started at exit, with no timeout (`multiprocessing.util._exit_function`); it has no public way to let
        one go, so it is taken out of its list of children (`multiprocessing.process._children`)."""
        self._left = True
        mp.process._children.discard(self._process)

    def _await_ready(self) -> None:
        """The child's first message: ready (its context size kept), or why it could not load; then the
        adapters it had, if this is a new child after a crash."""
        if not self._conn.poll(self.start_timeout_s):
            self._end_child()
            raise GeneratorUnavailable(f"the generation process did not load {self.folder} within {self.start_timeout_s:g} s")
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):  # its end closed: it died while loading
            self._end_child()
            raise GeneratorUnavailable(f"the generation process exited while loading {self.folder} (exit code {self._process.exitcode})") from None
        if kind != "ready":
            self._end_child()  # it ends after saying why
            raise GeneratorUnavailable(f"the generation process could not load {self.folder}: {value}")
        self.context_tokens, self.shared_prefill = value
        from pluralign.policy.adapters import AdapterError

        for name, folder in list(self._adapters.items()):  # a new child after a crash: the same adapters again
            call = self._register()
            try:
                with self._sending:
                    self._conn.send(("load_adapter", (name, folder), call.number, "", False))
                message = self._receive(call, None)
            except (OSError, GeneratorProcessError):  # the new child died too (the OOM killer again): this call fails,
                self._forget(call)
                if self._live():
                    self._wait_for_exit()  # the next starts another
                raise GeneratorUnavailable(f"the generation process exited (code {self._process.exitcode}) "
                                           f"while loading adapter {name} again") from None
            self._forget(call)
            try:
                self._reply(message, self._process)
            except (AdapterError, ValueError) as exc:  # damaged since it was loaded: not loaded now (`adapters` says so)
                log.error("generation process: adapter %s is not loaded again: %s", name, exc)
                del self._adapters[name]
                if not self._live():  # the failed load left the child unusable: a clean one, without it
                    self._start()
                    return
        log.info("generation process %d serves %s", self._process.pid, self.model_id)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        """End the child (its pipe closed: it exits; killed if it has not within `_EXIT_WAIT_S`) and start none
        again: every later call raises `GeneratorClosed`. Waits `_EXIT_WAIT_S` for the calls in progress (a stream: to
        its end or its reader's leaving); if some still run then, the child is killed, which ends them (they raise
        GeneratorUnavailable), so a stop never waits for good on a hung child (it no longer answers, which a cancel cannot
        end). A healthy call still generating then is killed too: the service closes only after uvicorn's graceful wait,
        whose cut has stopped every chat by then; a library caller ends its calls (their `cancel`) before closing. Once
        more does nothing."""
        self._closed = True  # read by every call as it is sent: none starts a child from now on
        if not self._idle(_EXIT_WAIT_S):
            self._end_hung_call()
            if not self._idle(_KILL_WAIT_S) or not self._lock.acquire(timeout=_KILL_WAIT_S):
                log.error("generation process: a call still holds the generator %g s after its child was killed (stuck in "
                          "the kernel); closed without it, the child left behind", _KILL_WAIT_S)
                self._leave()  # (the calls waiting on it see it and end; the exit does not wait for it)
                return
        elif not self._lock.acquire(timeout=_KILL_WAIT_S):  # (a call that ended still replacing its child: not seen)
            return
        try:
            if self._process is None:
                return
            self._conn.close()  # the child's `recv` ends: it exits
            if self._live():
                self._wait_for_exit()
        finally:
            self._lock.release()

    def _idle(self, timeout: float) -> bool:
        """Whether no call is in progress within `timeout` seconds."""
        with self._mail:
            return self._mail.wait_for(lambda: not self._active, timeout)

    def _end_hung_call(self) -> None:
        """Calls in progress that its child does not answer: kill the child, so they find it gone."""
        process = self._process
        if process is not None and process.is_alive():
            log.error("generation process %d did not finish its call within %g s of the generator's close: killed",
                      process.pid, _EXIT_WAIT_S)
            process.kill()

    def _live(self) -> bool:
        """Whether the child can be sent a call (alive, and not one left behind as unkillable)."""
        return not self._left and self._process.is_alive()

    # ---- the calls ---------------------------------------------------------------------------
    # Each call is sent, tagged with its number, on the one pipe, and the child serves it on a thread of its own: the
    # calls of different lanes take the model in turns there. A waiting call reads the pipe for everyone (one reader
    # a pipe at a time; what it reads for another call goes to that call's inbox), so nothing reads it but callers.

    def _register(self) -> _Call:
        call = _Call(next(self._numbers), self._conn, self._process)
        with self._mail:
            self._calls[call.number] = call
        return call

    def _forget(self, call: _Call) -> None:
        with self._mail:
            self._calls.pop(call.number, None)
            self._mail.notify_all()

    def _send(self, op: str, args: tuple, cancel: threading.Event | None = None) -> _Call:
        """A live child, then the request, marked cancelled when `cancel` is set already (its caller left while it
        waited: the child generates nothing, as in-process). A child found gone by the send (it ended after
        `is_alive` said alive: BrokenPipeError and the like) is replaced, and the request sent to the new one;
        GeneratorUnavailable if that one is gone too, GeneratorClosed once `close` ran."""
        with self._lock:
            for attempt in range(2):
                if self._closed:  # a late call (the service stopping): no child is started that no one would end
                    raise GeneratorClosed("the generator is closed: no generation process serves calls any more")
                if not self._live():
                    log.warning("generation process exited (code %s): starting a new one", self._process.exitcode)
                    self._start()
                call = self._register()
                try:
                    with self._sending:
                        self._send_watched((op, args, call.number, _lane(), cancel is not None and cancel.is_set()))
                    return call
                except _SendStalled:
                    self._forget(call)
                    self._wait_for_exit()
                    raise GeneratorStalled(f"the generation process read none of a call for {self.stall_timeout_s:g} s (hung): "
                                           "it was killed, and the next call starts a new one", self.stall_timeout_s) from None
                except OSError as exc:  # its end closed: it is ending or gone
                    self._forget(call)
                    self._wait_for_exit()
                    if attempt:
                        raise GeneratorUnavailable(f"the generation process exited (code {self._process.exitcode}) "
                                                   f"before a call was sent ({type(exc).__name__})") from None
        raise AssertionError("unreachable")

    def _send_watched(self, message) -> None:
        """`self._conn.send(message)` (under `_lock` and `_sending`), the child killed if it has not taken the message
        within `stall_timeout_s`: a hung child reads nothing, and a message larger than the pipe's buffer (~200 KB: a
        long conversation) would block the send for good, the lock held, so no call could end it (`_end_stalled` takes
        that lock). Raises `_SendStalled` then (every call sent to that child raises GeneratorStalled), OSError when
        the child was gone already (such a send would otherwise block every call for good)."""
        process, conn, guard, state = self._process, self._conn, threading.Lock(), {"sent": False, "expired": False}

        def expire() -> None:
            with guard:
                if state["sent"]:
                    return
                state["expired"] = True
            log.error("generation process %d read none of a call for %g s (hung): killed, a new one serves the next call",
                      process.pid, self.stall_timeout_s)
            process.kill()  # (not under `_lock`: the sender holds it) its end closes, so the send fails
            self._gone(conn, GeneratorStalled)

        timer = threading.Timer(self.stall_timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            conn.send(message)
        except OSError:
            with guard:
                if state["expired"]:
                    raise _SendStalled() from None
            raise
        finally:
            with guard:
                state["sent"] = True
            timer.cancel()

    def _cancel(self, call: _Call) -> None:
        """Tell the child to stop `call` at its next token (once); a child gone meanwhile is its reader's to see."""
        if call.cancel_sent:
            return
        call.cancel_sent = True
        try:
            with self._sending:
                call.conn.send(("cancel", call.number))
        except OSError:
            pass

    def _receive(self, call: _Call, cancel: threading.Event | None):
        """The child's next message for `call`; tells the child to stop it once `cancel` is set. Raises
        GeneratorUnavailable once its child has exited (`_Unread` when the child never read the request)."""
        while True:
            reader = False
            with self._mail:
                while call.inbox:
                    message = call.inbox.popleft()
                    if message[0] != "began":
                        return message
                    call.began = True
                # read with the inbox, not after the wait: a reader may put the call's answer in its inbox, then find its
                # child ended, before the call wakes; the next round takes the answer first
                gone = call.gone
                if gone is None and id(call.conn) not in self._reading:
                    self._reading.add(id(call.conn))
                    reader = True
                elif gone is None:
                    self._mail.wait(_POLL_S)  # woken when a message comes for it, or its pipe's reader leaves
            if gone is not None:
                if gone is GeneratorStalled:
                    raise GeneratorStalled(f"the generation process made no progress for {self.stall_timeout_s:g} s during "
                                           "the call (hung): it was killed, and the next call starts a new one", self.stall_timeout_s)
                error = gone if not call.began else GeneratorUnavailable
                raise error(f"the generation process exited (code {call.process.exitcode}) during a call")
            if cancel is not None and cancel.is_set():
                self._cancel(call)
            if reader:
                try:
                    self._read(call, cancel)
                finally:
                    with self._mail:
                        self._reading.discard(id(call.conn))
                        self._mail.notify_all()
            elif call.process is not self._process:  # replaced: a reader of its pipe saw it end
                self._gone(call.conn, GeneratorUnavailable)

    def _read(self, call: _Call, cancel: threading.Event | None) -> None:
        """As the reader of `call`'s pipe: one message (to the inbox of the call it is for), or, after a while
        without one, a look at the child: one that has exited fails every call sent to it."""
        try:
            if call.conn.poll(_ALIVE_S if cancel is None else _POLL_S):
                kind, value, number = call.conn.recv()
                self._progressed(call.process, value if kind == "alive" else None)
                if kind != "alive":
                    with self._mail:
                        if (to := self._calls.get(number)) is not None:  # (else a stream left already: dropped)
                            to.inbox.append((kind, value))
                            self._mail.notify_all()
                    return
        except (EOFError, OSError) as exc:  # its end closed (a partial message too), or it was closed: gone
            with self._lock:
                if call.process is self._process and not self._left:
                    self._wait_for_exit()
            # ConnectionResetError: it ended with a request unread; a call it never said it began is sent again
            self._gone(call.conn, _Unread if isinstance(exc, ConnectionResetError) else GeneratorUnavailable)
            return
        if call.process is not self._process or not self._live():
            self._gone(call.conn, GeneratorUnavailable)
        elif time.monotonic() - max(call.sent_at, self._progress_at) > self.stall_timeout_s:
            self._end_stalled(call)

    def _progressed(self, process, passes: int | None) -> None:
        """A message from `process`: progress, unless it is its "alive" with the forward passes heard last time."""
        if process is self._process and (passes is None or passes != self._passes):
            self._passes = passes if passes is not None else self._passes
            self._progress_at = time.monotonic()

    def _end_stalled(self, call: _Call) -> None:
        """`call`'s child made no progress for `stall_timeout_s` since the call was sent: killed, and every call it held
        raises GeneratorStalled (the next call starts a new child). One a kill does not end is left behind."""
        with self._lock:
            if call.process is self._process and self._live():
                log.error("generation process %d made no progress (no forward pass, no message) for %g s while a call "
                          "waited on it: hung; killed, a new one serves the next call", call.process.pid, self.stall_timeout_s)
                self._process.kill()
                self._process.join(_KILL_WAIT_S)
                self._leave_if_alive()
        self._gone(call.conn, GeneratorStalled)

    def _gone(self, conn, error: type[GeneratorUnavailable]) -> None:
        """The child of `conn` has ended: every call sent to it raises `error` (a call it began: GeneratorUnavailable)."""
        with self._mail:
            for call in self._calls.values():
                if call.conn is conn and call.gone is None:
                    call.gone = error
            self._mail.notify_all()

    def _wait_for_exit(self) -> None:
        """Under the lock: the child whose end of the pipe closed (or `close` closed), waited for (its threads may
        still be ending), so the next call sees it gone and its exit code is known; killed if it has not exited
        within `_EXIT_WAIT_S` (it can serve no one without its pipe). One a kill does not end within `_KILL_WAIT_S`
        (stuck in the kernel: a hung device driver or network filesystem) is logged and left behind, its pipe closed:
        the next call starts a new child rather than every call waiting on it for good."""
        self._process.join(_EXIT_WAIT_S)
        if not self._process.is_alive():
            return
        self._process.kill()
        self._process.join(_KILL_WAIT_S)
        self._leave_if_alive()

    def _request(self, op: str, args: tuple, cancel: threading.Event | None) -> tuple[_Call, tuple]:
        """Send the request, then the child's first message in answer (and the call, for the ones after: the caller
        `_forget`s it). A request the child never read (it died first) goes to a new child, once, unless `cancel` is
        set by then (Cancelled: its caller left, no child is started for it); that one dying unread too is a
        GeneratorUnavailable."""
        call = self._send(op, args, cancel)
        try:
            return call, self._receive(call, cancel)
        except _Unread:
            self._forget(call)
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled as the generation process exited, before it began the call") from None
            call = self._send(op, args, cancel)  # logs the exit and starts the new child, as for a child found gone before the call
            try:
                return call, self._receive(call, cancel)
            except _Unread:
                self._forget(call)
                raise GeneratorUnavailable(f"the generation process exited (code {call.process.exitcode}) "
                                           "during a call") from None
        except BaseException:
            self._forget(call)
            raise

    def _reply(self, message, process):
        """The result of the child's reply; `process`, the child that sent it, when it ends after it (a failed adapter
        load it could not undo), is waited for, so the next call starts a new one. That child's, not the current one:
        calls run at once, and another may have started a new child since (joined, it held every call for 30 s)."""
        kind, value = message
        if kind == "failed" and len(value) > 2 and value[2]:
            with self._lock:
                process.join(30)  # it ends on its own after saying so; a later call finds it gone or kills it
        return self._result(kind, value)

    @staticmethod
    def _result(kind: str, value):
        if kind == "ok":
            return value
        if kind == "cancelled":
            raise Cancelled(value)
        if kind == "failed":
            name, text = value[:2]
            if name == "AdapterNotLoaded":  # dropped since its name was taken, as in-process
                raise AdapterNotLoaded(text)
            if name == "ValueError":  # e.g. an adapter that is not loaded: the caller's mistake, as in-process
                raise ValueError(text)
            if name == "AdapterError":  # an adapter's files the child could not load, as in-process
                from pluralign.policy.adapters import AdapterError

                raise AdapterError(text)
            raise GeneratorProcessError(f"{name}: {text}")
        raise GeneratorProcessError(str(value))

    def _call(self, op: str, *args, cancel: threading.Event | None = None, adapter: str | None = None):
        with self._in_progress(adapter):
            call, message = self._request(op, args, cancel)
            try:
                return self._reply(message, call.process)
            finally:
                self._forget(call)

    @contextlib.contextmanager
    def _in_progress(self, adapter: str | None = None) -> Iterator[None]:
        """A call in progress (`close` waits for it); a generation's `adapter` is in use meanwhile."""
        with self._mail:
            self._active += 1
            self._using[adapter] += adapter is not None
        try:
            yield
        finally:
            with self._mail:
                self._active -= 1
                self._using[adapter] -= adapter is not None
                self._using += Counter()  # no entry left per adapter ever used
                self._mail.notify_all()

    @property
    def adapters_in_use(self) -> set[str]:
        """The adapters of the generations in progress (as `Generator.adapters_in_use`: the adapter pool evicts them last)."""
        with self._mail:
            return {adapter for adapter, count in self._using.items() if count}

    def generate(
        self, messages: Sequence[dict[str, str]], n: int = 1, sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[Candidate], int]:
        """As `Generator.generate`, in the child."""
        return self._call("generate", list(messages), n, sampling, adapter, cancel=cancel, adapter=adapter)

    def generate_styled(
        self, messages: Sequence[dict[str, str]], styles: Sequence, sampling: Sampling = Sampling(), adapter: str | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[list[Candidate], int]:
        """As `Generator.generate_styled`, in the child."""
        return self._call("generate_styled", list(messages), list(styles), sampling, adapter, cancel=cancel, adapter=adapter)

    def stream(self, messages: Sequence[dict[str, str]], sampling: Sampling = Sampling(), adapter: str | None = None,
               cancel: threading.Event | None = None) -> Iterator[str | Candidate]:
        """As `Generator.stream`: text pieces as the child generates them, then the Candidate. Closing
        the iterator early stops the child's generation at its next token, as `cancel` set does; one set before the
        call goes with it (the child generates nothing: Cancelled "before generation started", as `generate`'s)."""
        with self._in_progress(adapter):
            call, message = self._request("stream", (list(messages), sampling, adapter), cancel)
            finished = False
            try:
                while True:
                    kind, value = message
                    if kind != "piece":
                        finished = True
                        self._result(kind, value)
                        return
                    yield value
                    message = self._receive(call, cancel)
            finally:
                if not finished:  # the reader went away: stop the child, then read to its last message
                    self._cancel(call)
                    try:
                        while self._receive(call, None)[0] == "piece":
                            pass
                    except GeneratorUnavailable:
                        pass
                self._forget(call)

    def prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Tokens of the conversation's prompt (chat template applied), counted here."""
        from pluralign.policy.chat_template import chat_prompt_ids

        return len(chat_prompt_ids(self.tokenizer, messages))

    # ---- adapters ----------------------------------------------------------------------------

    @property
    def adapters(self) -> set[str]:
        """The adapters the child holds; a child that died is started again first, so this says what
        the next call can use (one damaged on disk since it was loaded is not loaded again). Never
        waits for a call starting a child: that call starts it with the adapters."""
        if not self._lock.acquire(blocking=False):
            return set(self._adapters)
        try:
            if self._process is not None and not self._live() and not self._closed:
                log.warning("generation process exited (code %s): starting a new one", self._process.exitcode)
                self._start()
            return set(self._adapters)
        finally:
            self._lock.release()

    def load_adapter(self, name: str, folder: str | Path) -> None:
        self._call("load_adapter", name, str(folder))
        self._adapters[name] = str(folder)

    def drop_adapter(self, name: str) -> None:
        """Unload adapter `name` from the child; once `close()` ran, no process holds it: it is only forgotten here (a
        DELETE or a promotion still running as the service stops drops it, and starts no process)."""
        if name in self._adapters:
            try:
                self._call("drop_adapter", name)
            except GeneratorClosed:
                pass
            del self._adapters[name]
