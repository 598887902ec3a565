"""What each kind of job runs: a `pluralign` command line in a worker process.

A job's params become the command's flags (`group_by` -> `--group-by VALUE`, `True` -> a bare flag),
so an operator can pass any option the command knows. Trainers get `--out` set to the job's
artifact folder (`--registry` for adapters) and end with one JSON line; the first of
HELDOUT_METRICS in it decides promotion.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from training.jobs.record import Job, Param

# the first of these a result has decides promotion (adapters report held_out_acc_after, mixtures val_acc)
HELDOUT_METRICS = ("heldout_accuracy", "held_out_acc_after", "val_acc")
_FLAG = re.compile(r"^[a-z][a-z0-9_]*$")


def flags(params: Mapping[str, Param], skip: tuple[str, ...] = ()) -> list[str]:
    out: list[str] = []
    for key, value in params.items():
        if key in skip or value is False:
            continue
        if not _FLAG.match(key):
            raise ValueError(f"job parameter {key!r}: expected lower-case letters, digits and underscores")
        out.append("--" + key.replace("_", "-"))
        if value is not True:
            out.append(str(value))
    return out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", *args]


@dataclass(frozen=True)
class JobKind:
    name: str
    command: Callable[[Job, Path], list[str]]  # (job, its artifact folder) -> argv
    required: tuple[str, ...] = ()  # params a job of this kind must have
    promotion_key: Callable[[Job], str] | None = None  # what a result replaces, e.g. adapter/<user>
    priority: int = 1  # queued jobs start lowest priority first, then oldest first
    # what a job asks an external engine for (Ray schedules on these; the local runner runs one at a time per worker slot)
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 2048

    def check(self, params: Mapping[str, Param]) -> None:
        missing = [p for p in self.required if p not in params]
        if missing:
            raise ValueError(f"a {self.name} job needs {', '.join(missing)}")
        flags(params)


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind(
            "adapter",
            lambda job, out: cli("train", "adapter", "--user", str(job.params["user"]), "--registry", str(out), *flags(job.params, ("user", "comparisons"))),
            required=("user", "data"),
            promotion_key=lambda job: f"adapter/{job.params.get('tenant', 'default')}/{job.params['user']}",
        ),
        JobKind("pal", lambda job, out: cli("train", "pal", "--out", str(out), *flags(job.params)), promotion_key=lambda job: "pal"),
        JobKind("em", lambda job, out: cli("train", "em", "--out", str(out), *flags(job.params)), promotion_key=lambda job: "em"),
        # audits are short and someone is usually waiting on them: they go before queued training
        JobKind("audit", lambda job, out: cli("audit", "--json", *flags(job.params)), required=("group_by",), priority=0),
    )
}
