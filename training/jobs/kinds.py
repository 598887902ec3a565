"""What each kind of job runs: a `pluralign` command line in a worker process.

A job's params are first decoded into its kind's typed allow-list (`training.jobs.params`), then
written as the command's flags (`group_by` -> `--group-by=VALUE`, `True` -> a bare flag): only
the options listed there, never a path a client chose. Trainers get `--out` set to the job's
artifact folder (`--registry` for adapters) and end with one JSON line; the first of
HELDOUT_METRICS in it decides promotion.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from training.jobs.params import decode_params, job_argv
from training.jobs.record import Job, Param

# the first of these a result has decides promotion (adapters report held_out_acc_after, mixtures val_acc)
HELDOUT_METRICS = ("heldout_accuracy", "held_out_acc_after", "val_acc")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", *args]


@dataclass(frozen=True)
class JobKind:
    name: str
    command: Callable[[Job, Path], list[str]]  # (job, its artifact folder) -> argv
    required: tuple[str, ...] = ()  # params a job of this kind must have
    typed: bool = False  # params checked against `training.jobs.params.PARAMS[name]` (the real kinds)
    promotion_key: Callable[[Job], str] | None = None  # what a result replaces, e.g. adapter/<user>
    # what its promotion puts into service where kinds of other promotion keys put in the same (`pal` and `em`: the one
    # population model), None: its promotion key alone. Promotions of one go one at a time in the order their workers
    # ended (`LocalJobRunner._queue_promotion`), so the one served is that of the job that ended last
    served_model: str | None = None
    priority: int = 1  # within a tenant's turn its queued jobs start lowest priority first (`LocalJobRunner._turn`)
    # what a job asks an external engine for (Ray schedules on these; the local runner runs one at a time per worker slot)
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 2048

    def check(self, params: Mapping[str, Param]) -> None:
        missing = [p for p in self.required if p not in params]
        if missing:
            raise ValueError(f"a {self.name} job needs {', '.join(missing)}")
        if self.typed:
            decode_params(self.name, params)


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind(
            "adapter",
            lambda job, out: cli("train", "adapter", f"--registry={out}", *job_argv("adapter", job.params, skip=("comparisons",))),
            required=("user", "data"), typed=True,
            promotion_key=lambda job: f"adapter/{job.params.get('tenant', 'default')}/{job.params['user']}",
        ),
        JobKind("pal", lambda job, out: cli("train", "pal", f"--out={out}", *job_argv("pal", job.params)), promotion_key=lambda job: "pal", typed=True,
                served_model="population"),
        JobKind("em", lambda job, out: cli("train", "em", f"--out={out}", *job_argv("em", job.params)), promotion_key=lambda job: "em", typed=True,
                served_model="population"),
        # audits are short and someone is usually waiting on them: they go before their tenant's queued training, one
        # start in a row at most while some of it waits (`LocalJobRunner._turn`)
        JobKind("audit", lambda job, out: cli("audit", "--json", *job_argv("audit", job.params)), required=("group_by",), priority=0, typed=True),
    )
}
