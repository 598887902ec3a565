"""`pluralign data import` (a subprocess) into the real app over HTTP: what survived mutation testing (session 40)."""

from __future__ import annotations

import json

import pytest

from tests.service.test_break24c import _import
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def small_body_svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("mut40-small-body"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    max_body_bytes=20_000)
    with server:
        yield service


@pytest.mark.slow  # a service start (36 s) and a CLI process (call 11 s) on a loaded 2-core box
def test_two_chunks_of_the_same_rows_at_different_places_are_both_stored(small_body_svc, tmp_path):
    """A file whose rows repeat (the same comparison given four times, ~6.5 KB each) is sent whole, refused as
    too large (413 at a 20 KB body limit) and sent again in two halves with the same body. Each chunk's
    Idempotency-Key is drawn from its place as well as its content, so the second half is stored too,
    not answered as a replay of the first: the user holds the four rows the file has."""
    answer = "A long and careful answer. " * 240  # ~6.5 KB
    row = json.dumps({"user_id": "rex", "prompt": "Question?", "chosen": answer, "rejected": "No."}) + "\n"
    path = tmp_path / "rex.jsonl"
    path.write_text(row * 4)
    result = _import(small_body_svc, path)
    assert result.returncode == 0, result.stderr[-1500:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["stored"] == 4
    with small_body_svc.client("acme") as acme:
        assert acme.get("/v1/users/rex").json()["counts"]["preferences"] == 4


@pytest.mark.slow  # a CLI process on the module's service
def test_a_refused_import_counts_the_users_stored_before_it_once_each(small_body_svc, tmp_path):
    """The error for a refused row says what was stored before it: a user whose rows went in two chunks
    (halved after a 413) is one user, not one per chunk."""
    answer = "A long and careful answer. " * 240  # ~6.5 KB: 4 rows are over the 20 KB limit, 2 are not
    rows = [{"user_id": "ray", "prompt": f"Question {i}?", "chosen": f"{i}: {answer}", "rejected": "No."} for i in range(4)]
    rows.append({"user_id": "uma", "prompt": "Q?", "chosen": "Yes.", "rejected": "No.", "source": "s" * 200})  # over max_source_chars
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _import(small_body_svc, path)
    assert result.returncode == 2, result.stderr[-1500:]
    assert "4 rows of 1 user were stored before it" in result.stderr, result.stderr[-1500:]
