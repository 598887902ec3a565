"""Replicas starting together on an empty shared key file (PLURALIGN_KEYS_FILE) print one development key between them.

A first start prints a development key when the key file holds none (`training.commands.serve.print_development_key`).
Until session replicas50 the file was found empty outside its lock: two replicas starting together on one empty
shared file each issued and printed one (both stored: each write re-reads the file under `<file>.lock`), so the set-up
had two development keys, one printed by each pod. Now the look and the write are one turn under the lock."""

from __future__ import annotations

import contextlib
import io
import multiprocessing

from service.auth import KeyRing
from training.commands.serve import print_development_key

STARTS = 2


def first_start(path: str, ready, go, printed) -> None:
    keys = KeyRing(path)  # a replica's start reads the file (empty) long before its end issues the key
    ready.wait()
    go.wait()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        print_development_key(keys)
    printed.put(err.getvalue().count("development API key"))


def test_replicas_starting_together_on_an_empty_shared_key_file_print_one_development_key(tmp_path):
    path = tmp_path / "shared" / "api_keys.json"
    path.parent.mkdir()
    fork = multiprocessing.get_context("fork")
    ready, go, printed = fork.Barrier(STARTS + 1), fork.Event(), fork.Queue()
    procs = [fork.Process(target=first_start, args=(str(path), ready, go, printed)) for _ in range(STARTS)]
    for proc in procs:
        proc.start()
    ready.wait()
    go.set()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert sum(printed.get(timeout=5) for _ in procs) == 1  # before: 2, one per replica
    assert [k.name for k in KeyRing(path).keys.values()] == ["development key"]  # before: two of them
