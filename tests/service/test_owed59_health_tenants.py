"""owed59: /health's `feedback_pending` counted every tenant's acknowledged rows not yet stored, to anyone (no key needed:
probes send none). A tenant knows what it sent and sees when its rows are stored: the count less its own is the other
tenants' (with two tenants: the other's), what /metrics keeps from a caller it does not answer. Now every tenant's
count goes to whoever /metrics answers (an admin key, its token, a caller on this machine no proxy passed on), a
tenant's key reads its own tenant's, and anyone else (a probe from elsewhere, an unknown key) reads null.

scale62: the total was a pass over every pending record (`FeedbackLog.backlog`), on the event loop (/health is a probe,
answered there) and under the lock every append waits on: a backlog of 100,000 records made every probe that slow and
held every other request meanwhile. It is now a count kept as records come and go: a /health reads no record."""

from __future__ import annotations

import contextlib

import httpx
import msgspec

from pluralign.store import feedback_log

PROXIED = {"X-Forwarded-For": "203.0.113.9"}  # passed on by a proxy: from elsewhere


def comparison(user: str, i: int) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Tea or coffee, {i}?", "chosen": f"Tea {i}.", "rejected": "Coffee."}


def pending(svc, who: str | None, **headers) -> int | None:
    key = {"Authorization": f"Bearer {svc.keys[who]}"} if who else {}
    answer = httpx.get(svc.url + "/health", headers={**key, **headers})
    assert answer.status_code == 200, answer.text
    return answer.json()["feedback_pending"]


@contextlib.contextmanager
def records_read(monkeypatch):
    """Counts the reads of any attribute of any pending feedback record (`feedback_log.Entry`) meanwhile: [count]."""
    count = [0]
    read = object.__getattribute__

    def counted(entry, name):
        count[0] += 1
        return read(entry, name)

    with monkeypatch.context() as patch:
        patch.setattr(feedback_log.Entry, "__getattribute__", counted)
        yield count


def test_a_tenants_key_reads_its_own_pending_feedback_and_only_whoever_reads_metrics_reads_every_tenants(serve, monkeypatch):
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("globex") as globex, rt.ingest.paused():  # rows wait in the log
        for i in range(3):
            assert acme.post("/v1/feedback", json=comparison("ann", i)).status_code == 201
        assert globex.post("/v1/feedback", json=comparison("bo", 0)).status_code == 201
        assert pending(svc, "acme") == 3 and pending(svc, "globex") == 1
        assert pending(svc, "acme", **PROXIED) == 3  # its own, wherever it calls from
        assert pending(svc, "admin", **PROXIED) == 4
        assert pending(svc, None) == 4  # this machine, no key: as /metrics answers it
        for who in (None, "admin", "acme"):  # every tenant's total, and one tenant's: counted, no record read (scale62)
            with records_read(monkeypatch) as read:
                assert pending(svc, who) in (3, 4)
            assert read[0] == 0, f"/health read {read[0]} pending records for {who or 'a keyless local caller'}"
        assert pending(svc, None, **PROXIED) is None
        assert httpx.get(svc.url + "/health", headers={"Authorization": "Bearer no-such-key-0123456789", **PROXIED}).json()[
            "feedback_pending"] is None
        token = "scrape-" + "7f3a9c" * 6
        settings = rt.settings
        rt.settings = msgspec.structs.replace(settings, metrics_token=token)
        try:
            assert pending(svc, None) is None  # the token set: asked of every caller, as /metrics does
            assert httpx.get(svc.url + "/health", headers={"Authorization": f"Bearer {token}", **PROXIED}).json()[
                "feedback_pending"] == 4
            assert pending(svc, "globex") == 1
        finally:
            rt.settings = settings
        rt.settings = msgspec.structs.replace(settings, metrics_admin_only=True)
        try:
            assert pending(svc, None) is None and pending(svc, "admin") == 4 and pending(svc, "acme") == 3
        finally:
            rt.settings = settings
