"""Session reviewi39: breaking ids39's pref_ids over HTTP (the real app under uvicorn, real LanceDB in a
temp folder). An acknowledged row is never dropped: of two imports racing one new `pref_id` with different
content, at most one gets a 201, the other a 409 naming `line 1.pref_id`, and what the 201 acknowledged is
what the store holds."""

from __future__ import annotations

import json
import threading

import pytest

from tests.service.tiny import field_named, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("reviewi39"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


def line(pref_id: str, chosen: str, n: int = 0) -> bytes:
    return json.dumps({"prompt": f"Question {n}?", "chosen": chosen, "rejected": "No.", "created_at": 1_700_000_000.0 + n,
                       "pref_id": pref_id}).encode() + b"\n"


def test_two_racing_imports_of_one_id_never_both_acknowledged(svc):
    """Before: the tenant's import lock covered reading the body only, so both imports checked the id (not
    held), both were acknowledged (201, `stored: [id]`), and the mover dropped the second (logged only)."""
    user, rounds = "rv39-race", 12
    answers: dict[int, list] = {}

    def send(k: int, chosen: str, barrier: threading.Barrier) -> None:
        with svc.client("acme") as c:
            barrier.wait()
            # a longer body: its check runs while the other's is stored
            body = line(f"race-{k}", chosen) + b"".join(line(f"pad-{k}-{chosen}-{i}", "Pad.", i + 1) for i in range(40))
            answers.setdefault(k, []).append((chosen, c.post(f"/v1/users/{user}/import", content=body)))

    for k in range(rounds):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=send, args=(k, chosen, barrier)) for chosen in ("Yes.", "Sure.")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with svc.client("acme") as c:
        held = {}
        after = None
        while True:
            page = c.get(f"/v1/users/{user}/preferences", params={"limit": 500, **({"after": after} if after else {})}).json()
            held.update((row["pref_id"], row["chosen"]) for row in page["data"])
            if not (after := page["next_after"]):
                break
    for k, pair in answers.items():
        codes = sorted(r.status_code for _, r in pair)
        assert codes == [201, 409], (k, [(r.status_code, r.text[:200]) for _, r in pair])
        (won,) = [chosen for chosen, r in pair if r.status_code == 201]
        (lost,) = [r for _, r in pair if r.status_code == 409]
        assert field_named(lost) == "line 1.pref_id", lost.text
        assert held[f"race-{k}"] == won  # what was acknowledged is what is held


def test_an_import_retried_with_its_idempotency_key_stores_nothing_twice_when_some_rows_carry_ids(svc):
    """A body whose rows partly carry `pref_id` (an export with new rows appended), sent twice with one
    Idempotency-Key. Before: the key's ids were checked for every row, but rows carrying an id are stored
    under it, so the retry found fewer of the key's ids than rows and answered 422 `key_reused`. Now the key
    names the id-less rows, and a body holding rows with ids is looked up row by row."""
    user = "rv39-key"
    body = line("mine-1", "Yes.", 1) + json.dumps({"prompt": "New?", "chosen": "Aye.", "rejected": "Nay."}).encode() + b"\n"
    with svc.client("acme") as c:
        first = c.post(f"/v1/users/{user}/import", content=body, headers={"Idempotency-Key": "rv39-k1"})
        assert first.status_code == 201 and len(first.json()["stored"]) == 2, first.text
        again = c.post(f"/v1/users/{user}/import", content=body, headers={"Idempotency-Key": "rv39-k1"})
        assert again.status_code == 201, again.text  # was 422 key_reused
        assert again.json()["stored"] == [] and sorted(again.json()["already_stored"]) == sorted(first.json()["stored"])
        # another row carrying an id beside the same keyed row, under the same key: stored, not answered from
        # the first receipt
        other = line("mine-9", "Yes.", 9) + body.splitlines(keepends=True)[1]
        r = c.post(f"/v1/users/{user}/import", content=other, headers={"Idempotency-Key": "rv39-k1"})
        assert r.status_code == 201 and r.json()["stored"] == ["mine-9"], r.text
        # every row carrying its id: the key adds nothing, a retry stores nothing
        whole = line("mine-2", "Yes.", 2) + line("mine-3", "Yes.", 3)
        for _ in range(2):
            r = c.post(f"/v1/users/{user}/import", content=whole, headers={"Idempotency-Key": "rv39-k2"})
            assert r.status_code == 201, r.text
        assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 5


def test_delete_then_the_old_export_imported_stores_every_row_again(svc):
    """Rows still in the feedback log at the DELETE (an import just acknowledged) must not make the old
    export's rows look held ('already_stored' from stale pending rows or cached histories)."""
    user = "rv39-del"
    with svc.client("acme") as c:
        assert c.post(f"/v1/users/{user}/import", content=b"".join(line(f"d-{i}", "Yes.", i) for i in range(5))).status_code == 201
        file = c.get(f"/v1/users/{user}/export", params={"format": "preferences"}).content
        assert c.post(f"/v1/users/{user}/import", content=b"".join(line(f"e-{i}", "Yes.", i) for i in range(5))).status_code == 201
        assert c.delete(f"/v1/users/{user}").status_code in (200, 204)
        r = c.post(f"/v1/users/{user}/import", content=file)
        assert r.status_code == 201 and sorted(r.json()["stored"]) == [f"d-{i}" for i in range(5)], r.text
        assert r.json()["already_stored"] == []
        assert c.get(f"/v1/users/{user}/export", params={"format": "preferences"}).content == file


def test_rows_carrying_a_pref_id_but_no_time_imported_again_are_held_already(svc):
    """A hand-made or TRL file with a `pref_id` column and no `created_at`: the import stamps each row's time on
    receipt. Before, the same file sent again (a CLI chunk retried) was a 409 naming `created_at` (stamped
    again, later), and so was one line repeated in a body (stamped a microsecond apart)."""
    user = "rv39-untimed"
    rows = [json.dumps({"prompt": f"Q{i}?", "chosen": "Yes.", "rejected": "No.", "pref_id": f"u-{i}"}).encode() + b"\n" for i in range(3)]
    with svc.client("acme") as c:
        first = c.post(f"/v1/users/{user}/import", content=b"".join(rows))
        assert first.status_code == 201 and len(first.json()["stored"]) == 3, first.text
        again = c.post(f"/v1/users/{user}/import", content=b"".join(rows))
        assert again.status_code == 201, again.text  # was 409 naming `created_at`
        assert again.json()["stored"] == [] and sorted(again.json()["already_stored"]) == ["u-0", "u-1", "u-2"]
        twice = c.post("/v1/users/rv39-untimed2/import", content=rows[0] + rows[0])
        assert twice.status_code == 201 and twice.json()["stored"] == ["u-0"], twice.text
        # other content under a held id is still a 409
        changed = json.dumps({"prompt": "Q0?", "chosen": "Changed.", "rejected": "No.", "pref_id": "u-0"}).encode()
        r = c.post(f"/v1/users/{user}/import", content=changed)
        assert r.status_code == 409 and field_named(r) == "line 1.pref_id" and "`chosen`" in r.text, r.text
        assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 3
