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

