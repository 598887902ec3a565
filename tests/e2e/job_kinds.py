"""Small job kinds for runner tests: real worker processes running a few lines of Python; `wait_rounds`."""

from __future__ import annotations

import sys

from tests.service.tiny import wait_ran
from training.jobs.kinds import JobKind

WORK = """
import json, os, sys, time
params = json.loads(sys.argv[1]); out = sys.argv[2]
if params.get("swallow_sigterm"):  # as `pluralign`'s CLI: SIGTERM raised as an exception where the worker is
    import signal
    class Stopped(BaseException): pass
    def stopped(*_): raise Stopped
    signal.signal(signal.SIGTERM, stopped)
    try:  # ... and it lands in code that swallows it (torch's C import of numpy, at a real worker's start)
        print("importing", file=sys.stderr, flush=True)
        time.sleep(60)
    except BaseException:
        pass
    print("imported; training on", file=sys.stderr, flush=True)
if params.get("marker"):
    with open(params["marker"], "a") as f: f.write("started\\n")
for i in range(4):
    print(f"@progress {i / 4}", file=sys.stderr, flush=True)
    time.sleep(params.get("seconds", 0.0) / 4)
if params.get("say"):
    print(params["say"], file=sys.stderr, flush=True)
if params.get("crash"):
    raise RuntimeError("the worker fell over")
if params.get("save"):  # what it trains, in its artifact folder
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "weights.txt"), "w") as f: f.write(params["save"])
print("training done", file=sys.stderr)
print(json.dumps({"heldout_accuracy": params.get("accuracy", 0.5), "steps": 4, "artifact": out, **params.get("report", {})}), flush=True)
if params.get("linger"):  # its result printed, it is still shutting down (a stop of the runner meets it here)
    time.sleep(params["linger"])
if params.get("then_exit"):  # its result printed, it fails (a crash at interpreter shutdown, a kill)
    import signal
    os.kill(os.getpid(), signal.SIGKILL) if params["then_exit"] == "SIGKILL" else sys.exit(params["then_exit"])
"""


def work(job, out):
    import json

    return [sys.executable, "-c", WORK, json.dumps(job.params), str(out)]


TEST_KINDS = {
    "work": JobKind("work", work),
    "adapter": JobKind("adapter", work, required=("user",), promotion_key=lambda job: f"adapter/{job.params.get('tenant', 'default')}/{job.params['user']}"),
}


def wait_rounds(runner, more: int = 2, timeout: float = 60.0) -> None:
    """Return once `runner`'s dispatcher (a started `LocalJobRunner`) has run `more` rounds through after this call:
    with 2, a whole round begun after the call has run. What a check that no round did something (launched a job
    again, wrote a purged one back, ended one inside its grace) waits for, where a sleep of a few polls proved nothing
    on a busy machine (`tests.service.tiny.wait_ran`)."""
    wait_ran(lambda: (runner.rounds, runner.failed_rounds), more, timeout, "dispatcher rounds")
