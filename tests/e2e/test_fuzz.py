"""Schemathesis over the served OpenAPI schema (slow: `make fuzz`). The tenant routes with a tenant
key and the admin routes with an admin key; half the chat requests name a served model so
generation is reached (tests/e2e/fuzz_hooks.py). Bar: no 5xx, every status code and content type
documented, every response valid against its schema (the admin ones since fuzz43).

FUZZ_EXAMPLES (default 30) sets examples per operation and phase, FUZZ_MAX_SECONDS (default 3000)
schemathesis' own time budget; BENCHMARKS.md records the runs (FUZZ_EXAMPLES=600: 4,909 requests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import ROOT, start_service

TENANT_CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,allow_header_conformance"
# admin response bodies are checked too since fuzz43: the Job schema's `params` union of integer and number is an anyOf
# (service.openapi._fix_one_of), no longer a oneOf an integer "violated", and the audit report's 200 has a schema
ADMIN_CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,allow_header_conformance"


def schemathesis(url: str, key: str, paths: str, checks: str, examples: int, max_seconds: int) -> tuple[int, str]:
    """One schemathesis run; `max_seconds` is its own time budget (--max-time: it stops and reports)."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/schema/openapi.json", "-H", f"Authorization: Bearer {key}",
        "--include-path-regex", paths, "--checks", checks, "--max-examples", str(examples), "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all", "--seed", "13", "--max-time", str(max_seconds),
        # an audit's first job (a worker started on a busy machine) answered in 16 s though `wait` was 5: its submit,
        # which moves the feedback log first, is outside the wait; schemathesis' default of 10 s called that an error
        "--request-timeout", "60",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max_seconds + 900)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    examples = int(os.environ.get("FUZZ_EXAMPLES", "30"))
    # schemathesis' own time budget for the tenant routes (the admin routes get a quarter of it): on a
    # busy two-core machine it serves ~3 requests/s, so a large FUZZ_EXAMPLES needs FUZZ_MAX_SECONDS too
    max_seconds = int(os.environ.get("FUZZ_MAX_SECONDS", "3000"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                tenant_requests_per_second=0, max_tokens_limit=16, tenant_generations=64, generation_queue=256)
    with server:
        tenant_rc, tenant_out = schemathesis(svc.url, svc.keys["acme"], "^/v1", TENANT_CHECKS, examples, max_seconds)
        admin_rc, admin_out = schemathesis(svc.url, svc.keys["admin"], "^/admin", ADMIN_CHECKS, max(2, examples // 5), max(60, max_seconds // 4))
        metrics = __import__("httpx").get(svc.url + "/metrics").text
    for out in (tenant_out, admin_out):
        print(out[-3000:])
    served = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("pluralign_http_requests_total"))
    print(f"requests served: {served:.0f}")
    assert not re.search(r'status="5\d\d"', metrics), [x for x in metrics.splitlines() if re.search(r'status="5\d\d"', x)]
    assert tenant_rc == 0, tenant_out[-6000:]
    assert admin_rc == 0, admin_out[-6000:]
