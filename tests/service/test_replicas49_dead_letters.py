"""What an admin sees of dead letters with two replicas on one store (docs/admin.md, "Dead letters").

Each replica sets aside the records of its own feedback log, in its own data folder: `GET /admin/feedback/dead-letter`
lists the answering replica's letters, and since session 49 says which replica that is (`replica`; before, nothing
in the answer told an admin behind a load balancer whose letters they were reading, nor that another replica's were
left out). Another replica's letter is a 404 to requeue or discard there (its message says letters are per replica), and since session replicas50 an admin can name
the replica meant (`?replica=N` on the three routes): another answering is a 421 naming `replica`, not its own letters
read or changed as if they were the ones meant. A user's DELETE through any replica removes
their rows from every replica's letters (each applies the deletion record)."""

from __future__ import annotations

import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_feedback_log import feedback
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.slow  # two replica starts: ~10 s on two busy cores (`make test-scaleout`)


def test_each_replica_lists_its_own_letters_saying_which_and_a_delete_through_the_other_clears_them(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, short_read_margin):
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=0.2)
    b.keys["admin"] = b.runtime.keys.issue("ops", admin=True)
    with first, second, a.client("admin") as admin_a, b.client("admin") as admin_b, b.client("acme") as acme_b:
        letter = a.runtime.ingest.dead_letters.put(feedback("zoe", 0, tenant="acme", n=2), "StoreError: then", 3, 0.0)
        r = acme_b.post("/v1/feedback", json={"type": "comparison", "user": "zoe", "prompt": "Tea?", "chosen": "Yes", "rejected": "No"})
        assert r.status_code == 201, r.text

        listed_a, listed_b = admin_a.get("/admin/feedback/dead-letter").json(), admin_b.get("/admin/feedback/dead-letter").json()
        assert (listed_a["replica"], listed_a["rows"], [x["name"] for x in listed_a["letters"]]) == (0, 2, [letter])
        assert listed_b == {"letters": [], "rows": 0, "next": None, "replica": 1}  # replica 0's letter is not b's to list
        assert admin_b.post(f"/admin/feedback/dead-letter/{letter}/requeue").status_code == 404
        gone = admin_b.delete(f"/admin/feedback/dead-letter/{letter}")
        assert gone.status_code == 404 and "on replica 1 (each replica keeps" in gone.json()["error"]["message"]
        assert a.runtime.ingest.dead_letters.names() == [letter]  # untouched by b's 404s

        # session replicas50: an admin names the replica meant (`replica`), and another answering (a load balancer's
        # choice) is a 421 naming it, not another replica's letters read or changed as if they were the ones meant
        assert admin_a.get("/admin/feedback/dead-letter?replica=0").json()["letters"][0]["name"] == letter
        for misdirected in (admin_b.get("/admin/feedback/dead-letter?replica=0"),  # before: 200, b's empty list
                            admin_b.post(f"/admin/feedback/dead-letter/{letter}/requeue?replica=0"),
                            admin_b.delete(f"/admin/feedback/dead-letter/{letter}?replica=0")):
            error = misdirected.json()["error"]
            assert (misdirected.status_code, error["param"], error["code"]) == (421, "replica", "other_replica"), misdirected.text
            assert "replica 1 of 2 answered" in error["message"]
        assert admin_b.get("/admin/feedback/dead-letter?replica=-1").status_code == 400
        # an index no replica has (2 of 0..1) is a 400 naming `replica` and the count, not a 421 sending the admin to
        # ask "replica 2 at its own address" (until trialdeploy50), nothing read or changed
        for wrong in (admin_b.get("/admin/feedback/dead-letter?replica=2"),
                      admin_a.delete(f"/admin/feedback/dead-letter/{letter}?replica=2")):
            error = wrong.json()["error"]
            assert (wrong.status_code, error["param"]) == (400, "replica"), wrong.text
            assert "PLURALIGN_REPLICAS=2" in error["message"] and "0..1" in error["message"], wrong.text
        assert a.runtime.ingest.dead_letters.names() == [letter]

        assert acme_b.delete("/v1/users/zoe").status_code == 200  # through b: a applies its deletion record
        deadline = time.monotonic() + 15
        while admin_a.get("/admin/feedback/dead-letter").json()["rows"]:
            assert time.monotonic() < deadline, "replica 0 kept the deleted user's letter"
            time.sleep(0.1)
