"""Session 42: every change of a `pref_id` claim after its put is conditional on what was read
(`pluralign.store.claims`), on a real folder and on moto's S3. Each test is two or three replicas (claims
objects of their own on one store) interleaved at the one instant that matters: a hook on the first's read runs
the others there and then. Before, a claim's later time was written over it whatever it held by then (`_replace`),
and a DELETE's removal, a refused import's release and (new) the mover's removal took whatever was there."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from pluralign.store import StoredPreference
from pluralign.store import claims as claims_module
from pluralign.store.claims import FolderClaims, S3Claims, claim_of
from tests.s3 import S3Server

USER = "cas42"


def claim(chosen: str, received_at: float, pref_id: str = "p-1") -> dict:
    row = StoredPreference(tenant="acme", user_id=USER, pref_id=pref_id, prompt="Tea?", chosen=chosen, rejected="No.",
                           kind="comparison", created_at=1.0, received_at=received_at)
    return {pref_id: claim_of(row, stamped=False)}


@pytest.fixture(scope="module")
def s3():
    with S3Server("pluralign-claims42") as server:
        yield server


@pytest.fixture(params=["folder", "s3"])
def replicas(request, tmp_path):
    """A function giving one more replica's claims on one store (a folder, or a prefix of moto's bucket)."""
    if request.param == "folder":
        return lambda: FolderClaims(tmp_path)
    s3 = request.getfixturevalue("s3")
    prefix = f"cas-{uuid.uuid4().hex[:8]}"
    return lambda: S3Claims(s3.uri(prefix), s3.options)


def held(claims, pref_id: str = "p-1"):
    found = claims._get(f"{claims_module._folder('acme', USER)}/{claims_module.key_hash(pref_id)}")
    if found is None:
        return None
    return claims_module._decode(found[0] if isinstance(found, tuple) else found)


@contextlib.contextmanager
def after_its_read(claims, then):
    """`claims`' next read of a claim returns what it read, once `then()` has run (another replica, meanwhile)."""
    get = claims._get

    def read_then(name):
        found = get(name)
        del claims._get
        then()
        return found

    claims._get = read_then
    try:
        yield
    finally:
        vars(claims).pop("_get", None)


def test_an_earlier_time_landing_last_does_not_move_the_claim_back(replicas):
    """Replicas a and b receive the row again (at 200 and 300); b's time is written between a's read and a's write.
    Before, a wrote 200 over 300, and a DELETE begun at 250 removed the claim of the row it kept (b's copy)."""
    a, b = replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    with after_its_read(a, lambda: b.claim("acme", USER, claim("Tea.", 300.0))):
        assert a.claim("acme", USER, claim("Tea.", 200.0)) == ([], {})
    assert held(a).received_at == 300.0  # before: 200.0
    assert replicas().forget_user("acme", USER, before=250.0) == 0  # before: 1
    assert list(replicas().claim("acme", USER, claim("Coffee.", 400.0))[1]) == ["p-1"]


def test_a_claim_a_delete_freed_and_another_replica_took_is_not_written_over(replicas):
    """a reads the claim (Tea., 100) to move its time on; meanwhile a DELETE removes it and c claims the id for
    Coffee. (its import acknowledged). Before, a wrote Tea. over c's claim: a third replica then acknowledged
    Tea. too, beside c's Coffee."""
    a, c = replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})

    def delete_then_claim():
        assert replicas().forget_user("acme", USER, before=150.0) == 1
        assert c.claim("acme", USER, claim("Coffee.", 160.0)) == (["p-1"], {})

    with after_its_read(a, delete_then_claim):
        made, taken = a.claim("acme", USER, claim("Tea.", 200.0))
    assert made == [] and list(taken) == ["p-1"], (made, taken)  # before: a took it for Tea.
    assert held(c).same_preference(claim("Coffee.", 160.0)["p-1"])  # before: Tea.


def test_a_delete_keeps_a_claim_moved_on_between_its_read_and_its_removal(replicas):
    """A DELETE begun at 250 reads the claim (100) and, before it removes it, b receives the row again (300:
    after the DELETE began, so the DELETE keeps b's copy). Before, the DELETE removed the claim all the same."""
    a, b, delete = replicas(), replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    with after_its_read(delete, lambda: b.claim("acme", USER, claim("Tea.", 300.0))):
        assert delete.forget_user("acme", USER, before=250.0) == 0  # before: 1
    assert held(a).received_at == 300.0
    assert list(replicas().claim("acme", USER, claim("Coffee.", 400.0))[1]) == ["p-1"]


def test_a_release_leaves_a_claim_another_import_moved_on(replicas):
    """a's import claims p-1 and is then refused (another line's 409); meanwhile b's import of the same row found a's
    claim, moved its time on and was acknowledged. Before, a's release removed the claim b's row relies on."""
    a, b = replicas(), replicas()
    ours = claim("Tea.", 100.0)
    assert a.claim("acme", USER, ours) == (["p-1"], {})
    assert b.claim("acme", USER, claim("Tea.", 200.0)) == ([], {})
    a.release("acme", USER, ours)
    assert held(a).received_at == 200.0  # before: gone
    a.release("acme", USER, claim("Tea.", 200.0))  # as put (by b): released
    assert held(a) is None


def test_the_mover_removes_only_the_claim_of_the_row_it_stored(replicas):
    """`drop_stored`, what the mover calls once rows are in the table: a claim of that row received no later goes; one
    moved on by a later copy (still in another replica's log) stays, as does one of other content, and one moved on
    between the mover's read and its removal."""
    a, b, mover = replicas(), replicas(), replicas()
    assert a.claim("acme", USER, {**claim("Tea.", 100.0), **claim("Milk.", 100.0, "p-2"), **claim("Tea.", 100.0, "p-3")})[0]
    assert b.claim("acme", USER, claim("Milk.", 300.0, "p-2")) == ([], {})  # p-2 received again, through b
    stored = {**claim("Tea.", 100.0), **claim("Milk.", 100.0, "p-2"), **claim("Coffee.", 100.0, "p-3"), **claim("Tea.", 1.0, "p-4")}
    assert mover.drop_stored("acme", USER, stored) == 1
    assert held(a) is None and held(a, "p-2").received_at == 300.0 and held(a, "p-3") is not None
    assert mover.drop_stored("acme", USER, claim("Milk.", 300.0, "p-2")) == 1  # b's copy moved: gone
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    with after_its_read(mover, lambda: b.claim("acme", USER, claim("Tea.", 300.0))):
        assert mover.drop_stored("acme", USER, claim("Tea.", 100.0)) == 0
    assert held(a).received_at == 300.0
