"""An import's claims on its `pref_id`s (`pluralign.store.claims`) say "the same preference" where one replica's own
compare does (session versions53): numbers of TRL's extra columns as Hugging Face `datasets` writes them back (10
decimals, lists item by item: `pluralign.data.io.same_as_written`), and TRL's extra columns holding null as absent,
in a claim an earlier release wrote too. Until then a claim hashed every number exactly, so a user's export rewritten
by `datasets` and sent through another replica before the first replica's rows reached the table was a 409 ("claimed
for this user with other content"); and a release before review trial52 hashed the null columns, so its claim of a
rewritten file's row refused the file itself. Two claimants on one folder (as replicas of a folder store hold them),
and two real apps over HTTP on one folder store (slow-marked: two service starts; `make test-scaleout` runs it)."""

from __future__ import annotations

import hashlib
import json
import time

import msgspec
import numpy as np
import pytest

from pluralign.data.record import TrlRow
from pluralign.store import Store, StoredPreference
from pluralign.store.claims import CONTENT_FIELDS, Claim, FolderClaims, claim_of, earlier_contents
from pluralign.store.claims import _folder as claims_folder
from pluralign.store.deletions import key_hash
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def row(pref_id: str, **extra) -> StoredPreference:
    trl = TrlRow(prompt="Tea?", chosen="Yes.", rejected="No.", extra=extra) if extra else None
    return StoredPreference(tenant="acme", user_id="u", pref_id=pref_id, prompt="Tea?", chosen="Yes.", rejected="No.",
                            kind="comparison", created_at=1.0, received_at=time.time(), trl=trl)


def as_before_review_trial52(stored: StoredPreference) -> Claim:
    """The claim a release before review trial52 wrote: its TRL form hashed as received, null columns and all."""
    values = [getattr(stored, name) for name in CONTENT_FIELDS]
    values[CONTENT_FIELDS.index("margin")] = None if stored.margin is None else float(np.float32(stored.margin))
    content = hashlib.sha256(msgspec.json.encode(values, order="sorted")).hexdigest()
    return Claim(content=content, created_at=float(stored.created_at), stamped=False, received_at=float(stored.received_at))


def claim(root, *rows: StoredPreference, columns=()) -> tuple[list[str], list[str]]:
    """(ids claimed now, ids found claimed with other content) of one import of `rows`, as a replica claims them."""
    made, taken = FolderClaims(root).claim("acme", "u", {r.pref_id: claim_of(r, stamped=False) for r in rows},
                                           earlier={r.pref_id: earlier_contents(r, columns) for r in rows})
    return made, sorted(taken)


def test_numbers_datasets_rounds_claim_what_the_row_claimed_and_a_number_changed_does_not(tmp_path):
    assert claim(tmp_path, row("s", score_chosen=0.123456789012345, score_rejected=1e-12)) == (["s"], [])
    assert claim(tmp_path, row("s", score_chosen=0.123456789, score_rejected=0.0)) == ([], [])  # before: taken
    assert claim(tmp_path, row("l", rating=[0.12345678915, [1.2345678912345e20]])) == (["l"], [])
    assert claim(tmp_path, row("l", rating=[0.1234567892, [1.234567891e20]])) == ([], [])  # before: taken
    assert claim(tmp_path, row("i", score_chosen=3)) == (["i"], [])
    assert claim(tmp_path, row("i", score_chosen=3.0, score_rejected=None)) == ([], [])  # an int column read back as floats
    assert claim(tmp_path, row("s", score_chosen=0.1234, score_rejected=0.0)) == ([], ["s"])  # really another score
    assert claim(tmp_path, row("l", rating=[0.12345679, [1.234567891e20]])) == ([], ["l"])
    assert claim(tmp_path, row("l", rating=[0.1234567892])) == ([], ["l"])  # a list of another length
    assert claim(tmp_path, row("s", score_chosen="0.123456789", score_rejected=0.0)) == ([], ["s"])  # a string, no number
    plain = row("p")
    assert claim_of(plain, stamped=False).content == hashlib.sha256(msgspec.json.encode(
        [getattr(plain, name) for name in CONTENT_FIELDS], order="sorted")).hexdigest()  # a row without numbers: as before


def test_an_earlier_releases_claim_still_holds_its_id(tmp_path):
    """A claim written before this session: session 52's (exact numbers) takes the same row and refuses another;
    one of a release before review trial52 (null columns hashed) takes the row without the null columns, the
    import's other columns telling which a `datasets` rewrite gave it."""
    FolderClaims(tmp_path).claim("acme", "u", {"p": as_before_review_trial52(row("p", score_chosen=None))})
    assert claim(tmp_path, row("p"), columns=("score_chosen",)) == ([], [])  # before: taken
    assert claim(tmp_path, row("p", score_chosen=0.5), columns=("score_chosen",)) == ([], ["p"])  # another row
    FolderClaims(tmp_path).claim("acme", "u", {"q": as_before_review_trial52(row("q", score_chosen=0.5, note=None))})
    assert claim(tmp_path, row("q", score_chosen=0.5), columns=("score_chosen", "note")) == ([], [])
    exact = row("e", score_chosen=0.123456789012345)
    values = [getattr(exact, name) for name in CONTENT_FIELDS]
    session52 = hashlib.sha256(msgspec.json.encode(values, order="sorted")).hexdigest()
    FolderClaims(tmp_path).claim("acme", "u", {"e": Claim(content=session52, created_at=1.0, stamped=False, received_at=1.0)})
    assert claim(tmp_path, exact) == ([], [])
    # taken on with this release's content, which this copy's mover finds (review versions53: the earlier content
    # stayed, and the claim with it until the user was deleted)
    held = FolderClaims(tmp_path)._get(f"{claims_folder('acme', 'u')}/{key_hash('e')}")[0]
    assert msgspec.json.decode(held, type=Claim).content == claim_of(exact, stamped=False).content
    assert claim(tmp_path, row("e", score_chosen=0.25)) == ([], ["e"])


def test_an_earlier_releases_claim_goes_once_its_row_is_moved(tmp_path):
    """A row an earlier release acknowledged (its claim that release's content: session 52's, numbers exact) and this
    release moves into the table once the replica was upgraded (the log survives): the claim goes as a claim of this
    release's content does. Until review versions53 the mover compared it with this release's content alone, and it
    stayed until the user was deleted. A real folder store and feedback log, the real mover."""
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    stored = msgspec.structs.replace(feedback("u", 0)[0], received_at=100.0,
                                     trl=TrlRow(prompt="question 0 of u", chosen="good answer 0.0", rejected="bad answer 0.0",
                                                extra={"score_chosen": 0.123456789012345, "score_rejected": 2}))
    values = [getattr(stored, name) for name in CONTENT_FIELDS]
    session52 = hashlib.sha256(msgspec.json.encode(values, order="sorted")).hexdigest()
    assert session52 != claim_of(stored, stamped=False).content and session52 in earlier_contents(stored)
    claim = Claim(content=session52, created_at=float(stored.created_at), stamped=False, received_at=100.0)
    assert store.claims.claim("t", "u", {stored.pref_id: claim}) == ([stored.pref_id], {})
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        ingest.claims_settled()  # the start's sweep done: the mover's removal is what is tested
        ingest.submit([stored], received_at=100.0)  # in the log before the upgrade, moved by this release
        ingest.flush()
        ingest.claims_settled()
        assert [r.pref_id for r in store.stored_rows("t", "u")] == [stored.pref_id]
        assert store.claims._names(claims_folder("t", "u")) == []  # before: the earlier release's claim stayed
    finally:
        ingest.close()


ROWS = [{"pref_id": "v53-1", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.",
         "score_chosen": 0.123456789012345, "score_rejected": 0.99999999995, "created_at": 1_700_000_000.0},
        {"pref_id": "v53-2", "prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green.", "created_at": 1_700_000_001.0}]
# scores `datasets` writes back as they were: an earlier release's claim hashes numbers exactly
EXACT = [ROWS[0] | {"score_chosen": 9.0, "score_rejected": 2.0}, ROWS[1]]


@pytest.mark.slow
def test_a_file_rewritten_by_datasets_through_another_replica_is_the_same_preferences(tmp_path, tiny_generator_dir,
                                                                                       tiny_pal_dir, minilm, hf, monkeypatch):
    """The file through replica a (held in its log), the file as `datasets` writes it back through replica b: 201, the
    rows already held. And the other way, the file's `to_json` form through a, where a's claim is one a release before
    review trial52 wrote (the null columns hashed), the file through b: 201 likewise."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    original = tmp_path / "original.jsonl"
    original.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rewritten = tmp_path / "rewritten.jsonl"
    hf.run("datasets.load_dataset('json', data_files=src, split='train').to_json(out)", src=str(original), out=str(rewritten))
    assert b'"score_chosen":0.123456789,' in rewritten.read_bytes() and b'"score_chosen":null' in rewritten.read_bytes()
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=0, deletion_sweep_s=3600)
    with first, second, a.client("acme") as ca, b.client("acme") as cb:
        with b.runtime.ingest.paused():
            with a.runtime.ingest.paused():  # the file's rows acknowledged by a, not yet in the table
                sent = ca.post("/v1/users/v53/import", content=original.read_bytes())
                assert sent.status_code == 201 and sent.json()["stored"] == ["v53-1", "v53-2"], sent.text
                again = cb.post("/v1/users/v53/import", content=rewritten.read_bytes())
                assert again.status_code == 201, again.text  # before: 409 `line 1.pref_id`, claimed with other content
                other = json.loads(rewritten.read_text().splitlines()[0]) | {"score_chosen": 0.1234}
                refused = cb.post("/v1/users/v53/import", content=json.dumps(other))
                assert refused.status_code == 409 and refused.json()["error"]["param"] == "line 1.pref_id", refused.text

                columns = list(dict.fromkeys(key for r in EXACT for key in r))
                as_written = "".join(json.dumps({key: r.get(key) for key in columns}) + "\n" for r in EXACT)  # to_json's
                sent = ca.post("/v1/users/old53/import", content=as_written)
                assert sent.status_code == 201, sent.text
                claims = a.runtime.store.claims
                for held in (r for e in a.runtime.ingest.log.pending_for("acme", "old53") for r in e.rows):
                    path = claims.root / claims_folder("acme", "old53") / key_hash(held.pref_id)
                    path.write_bytes(msgspec.json.encode(as_before_review_trial52(held)))  # as an earlier release's a
                again = cb.post("/v1/users/old53/import", content="".join(json.dumps(r) + "\n" for r in EXACT))
                assert again.status_code == 201, again.text  # before: 409 `line 2.pref_id`
            a.runtime.ingest.flush()
        b.runtime.ingest.flush()
        for user in ("v53", "old53"):
            for service, client in ((a, ca), (b, cb)):
                service.runtime.store.refresh("preferences")
                page = client.get(f"/v1/users/{user}/preferences")
                assert sorted(r["pref_id"] for r in page.json()["data"]) == ["v53-1", "v53-2"], page.text  # each once
        # in the table: their claims went, an earlier release's too (`earlier_claims`; until review versions53 it
        # stayed until the user was deleted)
        a.runtime.ingest.claims_settled()
        b.runtime.ingest.claims_settled()
        assert a.runtime.store.claims._names(claims_folder("acme", "v53")) == []
        assert a.runtime.store.claims._names(claims_folder("acme", "old53")) == []
