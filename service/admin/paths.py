"""Paths of the server's disk as the HTTP API shows them: one in the data folder relative to it
(`jobs/<id>.result.json`), one elsewhere by its name (as /health names a model folder), in a field or in
a text (a job's error, log tail: a worker's paths too); a name or a URI (`smollm2`, `s3://bucket/x`,
`openai:URL`) as it is, the credentials of a URL hidden (`pluralign.urls.redacted`: records written before session
remote50 kept an adapter job's `openai:` base whole). The records on disk and the CLI keep the paths."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import msgspec

from pluralign.urls import redacted
from training.jobs.promotion import Promotions
from training.jobs.record import Job

if TYPE_CHECKING:
    from service.settings import Settings


def jobs_folder(settings: Settings) -> Path:
    """The admin area's folder: job records, logs, artifacts, snapshots and promotions.json."""
    return settings.data_path / "jobs"


def check_jobs_folder(settings: Settings) -> None:
    """Read what the admin area reads at startup and cannot skip (promotions.json), before the app
    serves: a damaged file is a ValueError naming it (the CLI's one-line error), not a traceback of
    a failed startup. Damaged job records are skipped at startup, each logged. Here, not beside the
    admin's services: `pluralign serve` calls it before the service's imports (torch, lancedb)."""
    Promotions(jobs_folder(settings) / "promotions.json")


PATH_PARAMS = ("data", "store", "base")  # the params the service sets (training.jobs.params.SERVER_SET) that name a file or folder
# an absolute path of two names or more in a text (a worker's interpreter install, checkout or temporary folder): not
# part of a URL (`http://host/x`, `s3://b/x`), a relative path (`./x`, `~/.cache`, `a/b`) or a word (`texts/s`)
_ELSEWHERE = re.compile(r"(?<![\w.~:/\\-])(?:/[^\s/'\"`:,;()\[\]{}<>|=]+){2,}/?")


class PublicPaths:
    """How the API shows paths of one data folder: `path` one path, `text` the folder's absolute path
    inside a message (an error, a log line), `job` a job record's paths and messages (a copy)."""

    def __init__(self, data_dir: str | os.PathLike):
        root = Path(os.path.abspath(data_dir))
        self.roots = tuple(dict.fromkeys((root, root.resolve())))  # as given and through its symlinks
        # the folder's absolute path in a text (an error, a log line), then a `/` (dropped) or no more of a name (`.`)
        self._in_text = re.compile("(?:" + "|".join(re.escape(str(r)) for r in sorted(self.roots, key=lambda r: -len(str(r)))) + r")(/|(?![\w.-]))")

    def path(self, value: str) -> str:
        if "://" in value or value.startswith("openai:"):
            return redacted(value)
        absolute = Path(os.path.abspath(value))
        for root in self.roots:
            if absolute.is_relative_to(root):
                return absolute.relative_to(root).as_posix()
        return absolute.name if Path(value).is_absolute() else value

    def text(self, text: str) -> str:
        """`text` with a path in the data folder relative to it, any other absolute path by its name, and no URL's
        credentials."""
        text = self._in_text.sub(lambda m: "" if m.group(1) else ".", redacted(text))
        return _ELSEWHERE.sub(lambda m: PurePosixPath(m.group(0)).name, text)

    def job(self, job: Job) -> Job:
        maybe = lambda value, show: None if value is None else show(value)
        return msgspec.structs.replace(
            job,
            params={k: self.path(v) if k in PATH_PARAMS and isinstance(v, str) else v for k, v in job.params.items()},
            result_path=maybe(job.result_path, self.path), artifact=maybe(job.artifact, self.path),
            promotion_note=maybe(job.promotion_note, self.text), error=maybe(job.error, self.text),
            log_tail=[self.text(line) for line in job.log_tail],
        )
