"""Session 63's hostile tenant (breakG63): huge-but-valid feedback (every text at its 20,000 characters) waiting in the
feedback log is bounded by its size, not by its count of rows alone: the log holds what waits in memory too, and rows
of 240 KB each at the row bound (50,000) were 12 GB. On the real feedback log in a temp folder."""

from __future__ import annotations

import msgspec
import pytest

from pluralign.store.feedback_log import ROW_BYTES, FeedbackLog, TenantBacklog
from tests.service.test_feedback_log import feedback

LONGEST = "\U0001f600" * 20_000  # a text at the API's bound (20,000 characters), 4 bytes each in UTF-8


def huge(user: str, i: int, tenant: str) -> list:
    return [msgspec.structs.replace(r, prompt=f"{i} {LONGEST}", chosen=LONGEST, rejected=LONGEST) for r in feedback(user, i, tenant)]


def test_a_tenants_backlog_of_huge_texts_is_bounded_by_their_size_and_another_tenant_is_taken(tmp_path):
    """tenant_rows=10 allows 10 * ROW_BYTES of waiting rows: one row of three 80 KB texts is taken alone (as a record
    larger than the bound is), the next is refused (nothing written) while the tenant's short rows and another tenant's
    are taken. Before, the second, third... were acknowledged and held until 10 rows waited: 2.4 MB here, 12 GB at the
    default bound of 50,000 rows."""
    log = FeedbackLog(tmp_path, tenant_rows=10)
    try:
        first = log.append(huge("ann", 0, "a"))
        with pytest.raises(TenantBacklog) as refused:
            log.append(huge("ann", 1, "a"))
        assert refused.value.bytes > 10 * ROW_BYTES and refused.value.byte_limit == 10 * ROW_BYTES
        assert "bytes" in str(refused.value), str(refused.value)
        assert log.tenant_backlog("a") == 1
        log.append(huge("bob", 0, "b"))  # another tenant: its own bound
        log.done([first])
        log.append(huge("ann", 1, "a"))  # room again once moved
        assert log.tenant_backlog("a") == 1
    finally:
        log.close()
    with pytest.raises(TenantBacklog):  # replayed: counted by size again
        FeedbackLog(tmp_path, tenant_rows=10).append(huge("ann", 2, "a"))
