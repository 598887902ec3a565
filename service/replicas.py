"""Which replica owns a user: the one that decides the user's automatic jobs (adapter training), so
two replicas never both queue one. The load balancer's affinity hash (deploy/README.md) need not be
the same function: ownership only has to be one answer that every replica computes alike."""

from __future__ import annotations

import hashlib


def owner(tenant: str, user_id: str, replicas: int) -> int:
    """The replica index (0..replicas-1) owning (tenant, user): sha256 of `tenant/user`, first 8 bytes, mod n."""
    digest = hashlib.sha256(f"{tenant}/{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % replicas
