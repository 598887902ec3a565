"""The `pluralign` command line.

    pluralign data stats --source ukp_convarg1 --path ../shared/data/ukp_convarg1 --json
    pluralign eval --model bt --protocol persona --groups 4 --json
    pluralign train pal --variant a --protocol persona --groups 4 --out artifacts/pal-a
    pluralign serve --host 127.0.0.1 --port 8000
    pluralign keys create --tenant acme --name "web app"
    pluralign tenants remove --tenant acme
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import gc
import importlib
import importlib.machinery
import os
import signal
import sys
import threading
import warnings

from pluralign.policy import ignore_peft_deprecation
from pluralign.urls import redacted

# No hub at run time (models come from packages, see README). Offline mode, set before anything
# imports huggingface_hub, also stops peft from asking the hub for a base model's config each time
# an adapter is saved (a failed lookup and two warnings on stderr per save).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ONNX Runtime (>= 1.31) keeps a telemetry device id and an event database under ~/.cache/Microsoft:
# a growing file outside the data folder, and a warning at every start where HOME cannot be written
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# Each module defines `register(subparsers)`; `train` modules define `register(train_subparsers)`.
COMMANDS = (
    "training.commands.data", "training.commands.eval", "training.commands.serve", "training.commands.serve_embeddings",
    "training.commands.audit", "training.commands.keys", "training.commands.tenants", "training.commands.promote",
)
TRAINERS: tuple[str, ...] = (
    "training.commands.train_pal",
    "training.commands.train_em",
    "training.commands.train_maxmin",
    "training.commands.train_fspo",
    "training.commands.train_adapter",
)


class _StoreNamingWhose(argparse._StoreAction):
    """argparse's `store`, except that an option naming whose data the command acts on (a tenant or an end user: its
    type `training.common.tenant_name` or `user_id`) given twice with two values is a usage error naming it.
    argparse keeps the last: `pluralign tenants remove --tenant old --tenant acme` removed acme alone, and `keys create
    --tenant a --tenant b` issued b's key, though the line names both. Other options keep argparse's last-wins (a
    wrapper's `--port` overridden by the user's)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from training.common import tenant_name, user_id

        given = getattr(parser, "_given_whose", None)
        if self.type in (tenant_name, user_id) and given is not None:
            if self.dest in given and given[self.dest] != values:
                raise argparse.ArgumentError(self, f"given twice, {given[self.dest]!r} and {values!r}: the command acts on "
                                                   "one; run it once for each")
            given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors have the prefix of every other error of the CLI
    (`pluralign: error: ...`, exit 2) and say which command's --help to read; subcommands' parsers
    are of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreNamingWhose)  # `store`, argparse's default action
        self.register("action", "store", _StoreNamingWhose)

    def error(self, message: str):
        if message.startswith("the following arguments are required:"):
            extras = self._unparsed()
            if extras:  # `keys create --tenat acme`: the word typed, not only the option it failed to give
                message = f"{_unrecognized(self, extras)}; {message}"
        self.print_usage(sys.stderr)
        self.exit(2, f"pluralign: error: {message} (see `{self.prog} --help`)\n")

    def _check_value(self, action: argparse.Action, value) -> None:
        """argparse's, with the closest choice (`pluralign.data.text.closest_name`) in its `invalid choice` error, as Python 3.14's argparse
        suggests one: `argument command: invalid choice: 'trian' (did you mean 'train'?) (choose from ...)`. The hint
        goes in as the error is made: read back out of argparse's message, a value holding both quotes and
        ` (choose from ` would be cut at its escaped quote (a SyntaxError traceback, not a usage error)."""
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            from pluralign.data.text import closest_name  # on an error only: the regex module is not in every start

            said = f"invalid choice: {value!r}"
            close = closest_name(value, [str(c) for c in action.choices]) if isinstance(value, str) else None
            if not close or not exc.message.startswith(said):
                raise
            raise argparse.ArgumentError(action, f"{said} (did you mean {close!r}?){exc.message[len(said):]}") from None

    def parse_known_args(self, args=None, namespace=None):
        self._words = list(sys.argv[1:] if args is None else args)  # for error(): what this (sub)command was given
        self._given_whose = {}  # this parse's tenants and users (`_StoreNamingWhose`)
        return super().parse_known_args(args, namespace)

    def _unparsed(self) -> list[str]:
        """The words this command was last given that none of its arguments takes, found by parsing them again with
        nothing required: argparse checks what is required before it hands back the words it did not take, so a
        misspelt required option (`--tenat acme` for `--tenant`) was said to be missing, the word typed unsaid."""
        required = [action for action in self._actions if action.required]
        for action in required:
            action.required = False
        try:
            self._given_whose = {}  # parsed again: the options given once are not given twice
            return super().parse_known_args(getattr(self, "_words", []), None)[1]
        finally:
            for action in required:
                action.required = True

    def parse_args(self, args=None, namespace=None):
        """argparse's, except that words no parser took are refused by the command they follow, with the
        closest option it has: `pluralign serve --prot 8000` says `unrecognized arguments: --prot 8000
        (did you mean --port?) (see `pluralign serve --help`)`. argparse's own error came from the top
        parser, pointing to `pluralign --help`, which lists no option of `serve`."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen_command(self, parsed)
            command.error(_unrecognized(command, extras))
        return parsed


def _unrecognized(command: argparse.ArgumentParser, extras: list[str]) -> str:
    """argparse's error for words no argument of `command` took, with the closest option it has to each option typed
    (`pluralign.data.text.closest_name`), none it was given already: `unrecognized arguments: --potr 8000 (did you mean
    --port?)`."""
    from pluralign.data.text import closest_name

    options = [s for action in command._actions for s in action.option_strings if s.startswith("--")]
    given = _given_options(command, options)
    typed = [word.partition("=")[0] for word in extras if word.startswith("--")]
    close = [m for word in typed if (m := closest_name(word, options, given=given))]
    hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
    return f"unrecognized arguments: {' '.join(extras)}{hint}"


def _given_options(command: argparse.ArgumentParser, options: list[str]) -> set[str]:
    """The options of `command` its words give, each as it is named: one given by an abbreviation argparse takes (the
    one option it begins, `--learn` for `--learning-rate`, while `allow_abbrev` is on) is that option, which was given
    as surely as when spelt out (a hint to it, `--learning-rte`: did you mean --learning-rate?, named one given)."""
    given = set()
    for word in getattr(command, "_words", []):
        if word == "--":  # what follows is no option
            break
        if not word.startswith("--"):
            continue
        name = word.partition("=")[0]
        given.add(name)
        begun = [option for option in options if option.startswith(name)] if command.allow_abbrev and name not in options else []
        if len(begun) == 1:
            given.add(begun[0])
    return given


def _chosen_command(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command `parsed` ran: `pluralign train pal`'s for `train pal --epoch 3`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(parsed, action.dest, None) in action.choices:
            return _chosen_command(action.choices[getattr(parsed, action.dest)], parsed)
    return parser


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pluralign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    train = sub.add_parser("train", help="train a model and write a versioned artifact")
    train_sub = train.add_subparsers(dest="trainer", required=True)
    for name in TRAINERS:
        importlib.import_module(name).register(train_sub)
    return parser


_format_warning = warnings.formatwarning


def _as_cli_line(message, category, filename, lineno, line=None) -> str:
    """A deprecated variable's warning as one line in the CLI's words; any other as Python writes it."""
    from service.settings import DeprecatedVariable

    if issubclass(category, DeprecatedVariable):
        return f"pluralign: warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


class Stopped(BaseException):
    """SIGTERM reached a command: raised where it runs, so every `finally` and `except BaseException` on the way
    out runs (a trainer removes its temp file or hidden folder; a server's start, before uvicorn handles the signal
    as a graceful stop, ends its generation process and removes what it made)."""


STOP_RETRY_S = 0.05  # how often a signal that came while an extension module starts is sent again, until it has


class _Held:
    """The SIGTERM or SIGINT that came while an extension module started, held back from its C code (which
    clears the exception raised) and sent again to the main thread every STOP_RETRY_S until it is raised.
    main() ends it when the command ends: the sends still pending are cancelled (one left would hit the
    handler main() has put back: the process killed by SIGTERM, or a stray signal in the caller of main())
    and the signal held and never raised is main()'s to report."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal held back and not raised yet
        self.timers: list[threading.Timer] = []  # its sends still to come
        self.ended = False  # the command has ended: a signal is held, no longer sent again

    def hold(self, signum: int) -> None:
        """In the signal handler (the main thread): hold `signum` and send it again STOP_RETRY_S later."""
        self.signum = signum
        if self.ended:
            return
        again = threading.Timer(STOP_RETRY_S, signal.pthread_kill, (threading.main_thread().ident, signum))
        again.daemon = True
        self.timers = [timer for timer in self.timers if timer.is_alive()] + [again]
        again.start()

    def end(self) -> int | None:
        """When the command has ended (the main thread, its handlers still in place): no send is pending
        once this returns, and a send already made has been handled (the signal reaches the main thread,
        whose wait in join() it interrupts). Returns the signal held and never raised, or None."""
        self.ended = True
        for timer in self.timers:
            timer.cancel()
            timer.join()
        self.timers = []
        return self.signum


_held = _Held()
_RAISED = {signal.SIGTERM: Stopped, signal.SIGINT: KeyboardInterrupt}  # what each handled signal raises


_EXTENSION_START = ("create_module", "exec_module")  # the loader methods under which an extension module's C code runs


def _in_extension_start(frame) -> bool:
    """Whether `frame` runs inside the start of an extension module (C code: what it imports, its loader
    `self` an ExtensionFileLoader below `frame`, in its `create_module` or `exec_module`). Reads the locals of
    those methods' frames only, and no attribute of any object (a proxy's `__class__` runs its code): safe
    inside the signal handler, wherever the signal comes."""
    while frame is not None:
        code = frame.f_code
        if code.co_name in _EXTENSION_START and code.co_varnames[:1] == ("self",) \
                and issubclass(type(frame.f_locals.get("self")), importlib.machinery.ExtensionFileLoader):
            return True
        frame = frame.f_back
    return False


def _stopped(signum, frame):
    """SIGTERM's handler (and SIGINT's, where it raised KeyboardInterrupt): raises Stopped (KeyboardInterrupt),
    but not while an extension module starts: its C code may clear it (torch's, importing numpy in a job
    worker's first seconds), and the command ran on as if never told to stop (a cancelled job trained on, a
    Ctrl-C ignored). The signal is held and sent again STOP_RETRY_S later instead, until it has started."""
    if _held.ended or _in_extension_start(frame):
        _held.hold(signum)
        return
    _held.signum = None
    raise _RAISED[signum]


def name_the_cause() -> None:
    """In a job's worker started by a request (PLURALIGN_REQUEST_ID, set by the job runner): the first
    line of the job's log names that request, and every log line the command writes ends with it, so the
    service's lines and the job's are found by one id."""
    cause, job = os.environ.get("PLURALIGN_REQUEST_ID"), os.environ.get("PLURALIGN_JOB_ID")
    if not cause:
        return
    import logging

    print(f"pluralign: job {job or '-'} started by request request_id={cause}", file=sys.stderr, flush=True)
    logging.basicConfig(format=f"%(asctime)s %(levelname)s %(name)s: %(message)s request_id={cause.replace('%', '%%')}", stream=sys.stderr)


def _error(line: str) -> None:
    """The command's error as its last line of stderr, alone: progress bars still open (a trainer stopped
    mid-epoch) are closed first, so the line is not written on the bar's line with the bar drawn again below it at
    exit, and a job's error (its worker's last line) is the error, not where the bar stood."""
    bars = sys.modules.get("tqdm.std")  # only a command that drew one loaded it
    cut = False  # a bar left on the line, unended
    for bar in list(bars.tqdm._instances) if bars is not None else ():
        # stopped inside its constructor, after its first draw: half made, it closes without a newline (or fails)
        cut = cut or (not hasattr(bar, "start_t") and getattr(bar, "sp", None) is not None and not getattr(bar, "disable", True))
        with contextlib.suppress(Exception):  # a bar that cannot be closed must not hide the error
            bar.close()  # a whole bar: its last state, then a newline
        bar.disable = True  # never drawn again (at exit) below the error
    print(("\n" if cut else "") + line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # the interpreter's last garbage collections at exit walk every object torch, transformers, lancedb and the
    # models made (a million and more): 1-1.5 s of CPU (measured: `import torch` then exit, 1.1-1.4 s; after
    # gc.freeze() 0.3 s), and 3-5 s of a `pluralign serve`'s stop on a busy machine, after its last answer. Frozen
    # (as the exit begins, after the atexit handlers registered later, and so run earlier, e.g. the stop of a
    # generation process), they are left to the OS, as Python leaves any object still alive at exit
    atexit.unregister(gc.freeze)  # once, though main() runs again in-process
    atexit.register(gc.freeze)
    name_the_cause()
    warnings.formatwarning = _as_cli_line
    # peft 0.21's FutureWarning on every LoRA command's stderr (train maxmin, fspo, adapter; a served adapter in-process);
    # the generation process of `serve` sets it itself
    ignore_peft_deprecation()
    # (signal handlers belong to the main thread: main() called from another keeps the default). Servers too: their
    # start (the models, the tables: seconds to a minute) is undone on SIGTERM as a trainer's run is; then uvicorn's
    # handlers replace these while it serves (`serve_until_stopped`: a graceful stop). A SIGTERM's default would kill a
    # start outright: its generation process orphaned, loading the whole model, and the data folder it made left behind
    handle = threading.current_thread() is threading.main_thread()
    global _held
    if handle:
        _held = _Held()  # this command's (main() may be called again in-process)
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _stopped)} if handle else {}
    if handle and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not an ignored SIGINT (nohup, a job)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _stopped)
    try:
        code = _run(args)
    finally:
        # the command has ended: a signal from now on is held, not raised (a second SIGTERM a moment after the first,
        # raised here or in the stop's error line, escaped main: a traceback and exit 1). Set before any call, as a
        # signal's handler runs at a call
        if previous:
            _held.ended = True
        held = _held.end() if previous else None
        for signum, handler in previous.items():  # main() called in-process (tests, scripts) leaves the caller's handlers
            signal.signal(signum, handler)
    if held is not None and code not in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return _signalled(held)  # it came as the command ended, too late to be raised in it: the stop still counts
    return code


def _signalled(signum: int) -> int:
    """The error line and exit code of a command stopped by SIGTERM (143) or interrupted by Ctrl-C (130)."""
    if "torch._C" in sys.modules:  # torch's import began (one stopped part way leaves no `torch` there, its parts stay)
        import logging

        # torch's import, stopped part way, had not set its loggers' level (WARNING, once imported whole): its exit
        # hooks' INFO lines (`FakeTensor cache stats: ...`) came below the error line at a command's INFO logging
        if logging.getLogger("torch").level == logging.NOTSET:
            logging.getLogger("torch").setLevel(logging.WARNING)
    _error("pluralign: error: stopped by SIGTERM" if signum == signal.SIGTERM else "pluralign: error: interrupted (SIGINT)")
    return 128 + signum


def _run(args: argparse.Namespace) -> int:
    """Runs the command `args` names; its errors (and a stop) as the CLI's last line and exit code."""
    try:
        from service.settings import DeprecatedVariable, Settings, check_variables

        # every command: a mistyped PLURALIGN_* variable (`_DATA_DRI` for `keys`, `_DEVCE` for `train`)
        # is refused, not ignored while the command runs on the default
        check_variables()
        # and a bad value of one (`PLURALIGN_STORE_RETRIES=abc`, a PLURALIGN_CONFIG file that is not TOML),
        # in serve's words, though the command may not read it: the service, or a job it starts, would refuse it
        # A command whose --data-dir is the setting data_dir (`serve`, `keys`, `tenants`) is checked with it, as it runs:
        # so an empty PLURALIGN_DATA_DIR does not refuse `serve --data-dir /srv/x` here
        given = {"data_dir": args.data_dir} if getattr(args, "settings_data_dir", False) else {}
        with warnings.catch_warnings():  # a deprecated name is the warning of the command that reads it
            warnings.simplefilter("ignore", DeprecatedVariable)
            Settings.load(**given)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: what was written is whole or removed on the way out, as for SIGTERM
        _held.ended = True  # (set before any call, where a signal's handler may run: `_stopped` holds one from now on)
        return _signalled(signal.SIGINT)
    except Stopped:
        _held.ended = True
        return _signalled(signal.SIGTERM)
    except ValueError as exc:  # a refusal may repeat a value as given: a URL's password is not printed (`redacted`)
        _error(f"pluralign: error: {redacted(str(exc))}")
        return 2
    except OSError as exc:  # a path the command cannot read or write: a folder given for a file, no permission, ...
        from training.common import STDOUT

        if exc.errno == errno.EPIPE and exc.filename in (None, STDOUT):  # `| head -1`: the reader of the output has gone
            return _reader_gone()
        _error(f"pluralign: error: {_os_problem(exc)}")
        return 2


def _reader_gone() -> int:
    """The exit of a command whose output's reader has gone (`pluralign keys list | head -1`): no error line (the
    command did not fail; the one reading it stopped), status 141 as a shell reports a command SIGPIPE ended (`yes |
    head -1`). What stdout still buffers goes to /dev/null: flushed into the pipe at exit, it raised again (Python's
    "Exception ignored ... BrokenPipeError", exit 120)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's capture)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    return 128 + signal.SIGPIPE


def _os_problem(exc: OSError) -> str:
    """An OSError as one line naming the path: "Is a directory: out.jsonl" (not errno and repr)."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    return str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
