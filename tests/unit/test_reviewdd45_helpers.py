"""Review of dedupe45: set-up that test files had, moved into tests/stores.py and tests/serving.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def test_a_shared_set_up_s_failed_assertion_says_what_it_found():
    """pytest rewrites the asserts of test files (and conftest) alone: moved into a helper module, a set-up assertion
    that failed said `AssertionError` and nothing more (here: how many of the two rows the claims took; in
    `withdrawn_purge_given_up`, which of the purge's wait and the files' and note's checks failed, in a test about a
    flaky purge). The conftest registers both helper modules for rewriting, as their test files were."""
    from tests.stores import claimed_rows

    refusing = SimpleNamespace(claims=SimpleNamespace(claim=lambda tenant, user, claims: ({}, {})))  # took none
    with pytest.raises(AssertionError, match=r"assert 0 == 2"):
        claimed_rows(refusing, "u")
