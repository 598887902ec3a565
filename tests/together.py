"""Calls made at the same moment from several threads: replicas starting or writing together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def at_once(*calls: Callable[[], T]) -> list[T | BaseException]:
    """Run each call in its own thread, all released together (a barrier); what each returned, or
    the exception it raised, in the order given."""
    together = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | BaseException:
        together.wait()
        try:
            return call()
        except BaseException as exc:  # noqa: BLE001 - handed back for the test to name
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))
