"""`pluralign serve` with the Ray runner (`PLURALIGN_JOB_RUNNER=ray`, a local Ray) starts without lancedb's fork
warning (trial45b). `ray.init` starts Ray's own processes (GCS, raylet, dashboard agent...) with subprocess and a
`preexec_fn`, so each child runs Python's at-fork hooks before it execs a program of its own; lancedb's hook warns
there, and every start of a replica logged five times `RuntimeWarning: lancedb fork support is experimental: ...
a small chance of deadlock remains ...` about children that never touch lancedb, an alarm an operator cannot act on."""

from __future__ import annotations

import pytest

from tests.e2e.test_e2e_serve import ServeProcess

pytestmark = pytest.mark.slow  # a service start and a local Ray: ~30 s (`make test-scaleout`)


def test_a_start_with_the_ray_runner_logs_no_lancedb_fork_warning(tmp_path, tiny_generator_dir, tiny_pal_dir):
    serve = ServeProcess(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, PLURALIGN_JOB_RUNNER="ray")
    serve.stop()
    log = serve.log.read_text()
    assert "Started a local Ray instance" in log  # Ray was started here (not joined: no fork of this process)
    assert serve.proc.returncode == 0, log
    assert "fork support is experimental" not in log
