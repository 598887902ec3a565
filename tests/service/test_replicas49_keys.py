"""Replicas sharing one key file (`PLURALIGN_KEYS_FILE`, setting keys_file): a key revoked through any of them is
refused by every replica at its next request.

Before session 49 each replica's key file was `<data_dir>/api_keys.json`, its own unless the operator linked it to one
file (deploy/k8s links a read-only Secret's): with copies, a `pluralign keys revoke` or a tenant's removal through one
replica left the key working on the others (docs/admin.md said to revoke it in each). Now every replica (and
`pluralign keys`, `pluralign tenants`) can name one writable file on the shared volume; KeyRing takes turns writing it
under `<file>.lock` and checks it with one stat per request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from service.auth import hash_key
from tests.service.test_tenant48_removal import wait_removed
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.slow  # two replica starts and a CLI run: ~10 s on two busy cores (`make test-scaleout`)

REPO = Path(__file__).resolve().parents[2]


def answered(service, key: str) -> int:
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        return c.get("/v1/users/nobody/preferences").status_code


def test_a_key_revoked_by_the_cli_or_a_tenants_removal_through_one_replica_is_refused_by_both(tmp_path, tiny_generator_dir,
                                                                                              tiny_pal_dir, minilm):
    shared = tmp_path / "shared" / "api_keys.json"
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=0.2, keys_file=str(shared))
    with first, second, a.client("admin") as admin_a:
        acme_keys, globex = (a.keys["acme"], b.keys["acme"]), a.keys["globex"]
        assert [answered(s, k) for s in (a, b) for k in (*acme_keys, globex)] == [404] * 6  # each replica knows each key
        assert not (tmp_path / "a" / "api_keys.json").exists() and not (tmp_path / "b" / "api_keys.json").exists()

        env = {**os.environ, "PLURALIGN_KEYS_FILE": str(shared), "PYTHONPATH": str(REPO)}
        revoked = subprocess.run([sys.executable, "-m", "training.cli", "keys", "--data-dir", str(tmp_path / "a"), "revoke",
                                  hash_key(globex)[:12]], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert revoked.returncode == 0, revoked.stderr
        assert answered(a, globex) == answered(b, globex) == 401  # before: b's own file kept it

        assert admin_a.post("/admin/tenants/acme/removal").status_code == 202
        wait_removed(admin_a, "acme")
        assert [answered(s, k) for s in (a, b) for k in acme_keys] == [401] * 4  # before: b kept the key it had issued
