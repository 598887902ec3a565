"""Review of dedupe45: set-up that test files had, moved into tests/stores.py and tests/serving.py; a PAL checkpoint's
meta.json read through `read_description`."""

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


def test_a_pal_description_without_its_variant_names_the_file_and_the_field(tmp_path):
    """PAL's `read_meta` reads meta.json through `read_description` (dedupe45), which tells artifacts apart by `kind`, a
    PAL checkpoint's by `variant`: one that lacks `variant` is still read as a PAL checkpoint's (it names no other
    kind), and the field is named, as before. No test saw it: with that clause taken out every PAL, EM and MaxMin test
    passed, and such a file was `<folder> holds no artifact, not a PAL checkpoint`, as if it were no description."""
    import json

    from pluralign.reward.pal import PAL_SCHEMA, load_pal

    (tmp_path / "meta.json").write_text(json.dumps({"schema_version": PAL_SCHEMA, "encoder_id": "enc", "k": 2, "input_dim": 8,
                                                    "latent_dim": 4, "hidden": 8}))
    with pytest.raises(ValueError) as error:
        load_pal(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'meta.json'}: not a description of a PAL checkpoint: ") and "`variant`" in message, message
