"""Review of trial52: a user's file rewritten by Hugging Face `datasets` (`to_json` gives every row every column
some row has: `"score_chosen": null` in the rows without TRL's scores) is the same preference as the file, and an
import of it finds its rows already held. With replicas on one store, an import's ids are claimed first
(`pluralign.store.claims`): a claim's content was the hash of the row's TRL form as sent, nulls and all, so while
the file's rows were acknowledged by one replica and not yet moved into the table, the rewritten file sent
through the other replica was a 409 ("claimed for this user with other content") where the same rows from the
file itself were taken. Two real apps over HTTP on one folder store, the first replica's mover held (slow-marked:
~4-6 s of two service starts; `make test-scaleout` runs it), and the claims of two replicas on one folder."""

from __future__ import annotations

import json
import time

import pytest

from pluralign.store.claims import _folder as claims_folder
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

ROWS = [{"pref_id": "r52-1", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", "score_chosen": 9.0,
         "score_rejected": 2.0, "created_at": 1_700_000_000.0},
        {"pref_id": "r52-2", "prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green.", "created_at": 1_700_000_001.0}]


def test_the_claim_of_a_row_rewritten_by_datasets_is_the_rows_claim(tmp_path):
    """Two replicas' claims on one folder (`FolderClaims`, as each replica of a folder store holds them): a row with
    TRL's extra columns holding null (`to_json`'s rewrite) claims what the row without them claimed, and a row
    really different (a score changed) is still refused."""
    from pluralign.data.record import TrlRow
    from pluralign.store import StoredPreference
    from pluralign.store.claims import FolderClaims, claim_of

    def claim(pref_id: str, **extra):
        trl = TrlRow(prompt="Tea?", chosen="Yes.", rejected="No.", extra=extra) if extra else None
        row = StoredPreference(tenant="acme", user_id="u", pref_id=pref_id, prompt="Tea?", chosen="Yes.", rejected="No.",
                               kind="comparison", created_at=1.0, received_at=time.time(), trl=trl)
        return {pref_id: claim_of(row, stamped=False)}

    assert FolderClaims(tmp_path).claim("acme", "u", claim("plain")) == (["plain"], {})
    assert FolderClaims(tmp_path).claim("acme", "u", claim("plain", score_chosen=None, score_rejected=None)) == ([], {})  # before: taken
    assert FolderClaims(tmp_path).claim("acme", "u", claim("scored", score_chosen=0.5)) == (["scored"], {})
    assert FolderClaims(tmp_path).claim("acme", "u", claim("scored", score_chosen=0.5, score_rejected=None)) == ([], {})  # before: taken
    assert list(FolderClaims(tmp_path).claim("acme", "u", claim("scored", score_chosen=0.25))[1]) == ["scored"]  # another score
    assert list(FolderClaims(tmp_path).claim("acme", "u", claim("plain", score_chosen=0.5))[1]) == ["plain"]  # a score added


@pytest.mark.slow
def test_a_file_rewritten_by_datasets_through_another_replica_is_the_same_preferences(tmp_path, tiny_generator_dir,
                                                                                       tiny_pal_dir, minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=0, deletion_sweep_s=3600)
    columns = list(dict.fromkeys(key for row in ROWS for key in row))
    rewritten = "".join(json.dumps({key: row.get(key) for key in columns}) + "\n" for row in ROWS)  # as `to_json` writes
    assert '"score_chosen": null' in rewritten
    with first, second, a.client("acme") as ca, b.client("acme") as cb:
        # a's rows first, then b's (found stored, left out): two movers committing one row at one moment can both
        # store it (a copy twice, tests/service/test_replica40_id_race.py), not this test's
        with b.runtime.ingest.paused():
            with a.runtime.ingest.paused():  # the file's rows acknowledged by a, not yet in the table
                sent = ca.post("/v1/users/r52/import", content="".join(json.dumps(row) + "\n" for row in ROWS))
                assert sent.status_code == 201 and sent.json()["stored"] == ["r52-1", "r52-2"], sent.text
                again = cb.post("/v1/users/r52/import", content=rewritten)
                assert again.status_code == 201, again.text  # before: 409 `line 2.pref_id`, claimed with other content
            a.runtime.ingest.flush()
        b.runtime.ingest.flush()
        for service, client in ((a, ca), (b, cb)):
            service.runtime.store.refresh("preferences")
            page = client.get("/v1/users/r52/preferences")
            assert page.status_code == 200, page.text
            assert sorted(r["pref_id"] for r in page.json()["data"]) == ["r52-1", "r52-2"], page.text  # each once
        assert a.runtime.store.claims._names(claims_folder("acme", "r52")) == []  # both in the table: their claims went
