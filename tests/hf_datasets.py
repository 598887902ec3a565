"""Hugging Face `datasets` as a user runs it: in a Python process of its own, beside the service.

A test that drives the in-process service (tests/service/tiny.py: its threads embed with torch and make
LanceDB indexes) runs its `datasets` steps here, never in the pytest worker itself. CI lost xdist
workers to a native SIGSEGV twice while such a step ran in the worker beside the service's threads
(test_break21a, test_review37_null_prompt; no Python frame at the fault), and a user's `datasets` script
never shares a process with `pluralign serve` anyway.

    with DatasetsProcess() as hf:
        columns = hf.run("result = datasets.load_dataset('json', data_files=path, split='train').column_names",
                         path=str(export))

One child process per `DatasetsProcess` (started once: `import datasets` takes seconds), each `run`
a request to it over its stdin/stdout, one JSON line each way."""

from __future__ import annotations

import importlib.util
import json
import select
import subprocess
import sys
import tempfile
from typing import Any

import pytest

# the child: reads {"code": str, "args": {...}} lines, runs `code` with `datasets`, `json` and each arg
# bound, and answers {"result": <`result` after it>} or {"error": traceback}
CHILD = r"""
import json, sys, traceback
import datasets
datasets.disable_progress_bars()
out = sys.stdout
sys.stdout = sys.stderr  # what the code prints does not garble the answers
for line in sys.stdin:
    request = json.loads(line)
    scope = {"datasets": datasets, "json": json, **request["args"]}
    try:
        exec(request["code"], scope)
        answer = {"result": scope.get("result")}
    except BaseException:
        answer = {"error": traceback.format_exc()}
    out.write(json.dumps(answer) + "\n")
    out.flush()
"""


def have_datasets() -> bool:
    """Whether `datasets` is installed (found, not imported: importing it here is what this module avoids)."""
    return importlib.util.find_spec("datasets") is not None


class DatasetsProcess:
    """A child `python -X faulthandler` holding `datasets`. Skips the test (pytest.skip) when `datasets`
    is not installed. `run` raises AssertionError with the child's traceback when the code raises, with
    its exit status and stderr when the child died, and after `timeout_s` seconds without an answer."""

    def __init__(self, timeout_s: float = 300.0):
        if not have_datasets():
            pytest.skip("datasets is not installed")
        self.timeout_s = timeout_s
        self.stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a child writing much there never blocks
        self.process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", CHILD], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def run(self, code: str, **args: Any) -> Any:
        """The JSON value `code` leaves in `result` (None if it sets none); `args` (JSON values) are its names."""
        self.process.stdin.write(json.dumps({"code": code, "args": args}) + "\n")
        self.process.stdin.flush()
        # one answer a request, so nothing is left in stdout's buffer: select on its pipe sees the next one
        if not select.select([self.process.stdout], [], [], self.timeout_s)[0]:
            self.process.kill()
            raise AssertionError(f"the datasets process gave no answer in {self.timeout_s} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.stdin.close()
            try:
                self.process.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.stderr.seek(0)
            raise AssertionError(f"the datasets process died (exit {self.process.returncode}):\n{self.stderr.read()[-4000:]}")
        answer = json.loads(line)
        assert "error" not in answer, f"datasets code failed:\n{answer['error']}"
        return answer["result"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:  # a child that died left unread input
                    pass

    def __enter__(self) -> DatasetsProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
