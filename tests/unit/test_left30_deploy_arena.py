"""left30: every way deploy/ runs the API sets MALLOC_ARENA_MAX=2 (glibc's malloc arenas, one per thread
that allocates, were part of the server's native RSS growth; BENCHMARKS.md, "MALLOC_ARENA_MAX=2 side by
side"). Before: docs/operations.md suggested it and no deploy file set it."""

from __future__ import annotations

import re

import yaml

from tests.unit.test_deploy_files import DEPLOY


def test_the_image_compose_and_kubernetes_set_two_malloc_arenas():
    env_lines = re.findall(r"^ENV ((?:.*\\\n)*.*)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert any(re.search(r"(^|\s)MALLOC_ARENA_MAX=2(\s|$)", line) for line in env_lines), env_lines
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert str(compose["services"]["api"]["environment"].get("MALLOC_ARENA_MAX")) == "2"
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "pluralign.yaml").read_text()) if d]
    api = next(d for d in docs if d["kind"] == "StatefulSet")
    (container,) = [c for c in api["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    assert {"name": "MALLOC_ARENA_MAX", "value": "2"} in container["env"]
