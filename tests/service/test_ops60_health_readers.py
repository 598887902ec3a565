"""ops60: what /health tells each reader, and what a cache between them may keep of it.

`vectors_owed` (purges of deleted users' vectors a busy embedding cache put off) was every tenant's count to anyone,
while `feedback_pending` beside it was already scoped (owed59): a tenant that knows its own DELETEs saw another
tenant's put-off purges add to it. A purge names text hashes, which tenants' texts share, not a tenant: there is no
tenant's own count, so it now goes as `feedback_pending`'s total does, to whoever /metrics answers, and null to anyone
else, a tenant key included.

And /health answered every caller without `Vary` or `Cache-Control` (a public path: `service.web_headers` leaves its
headers alone): a cache (a browser's, a proxy's) that stored one tenant's answer handed it to the next caller with
another key, and stored the totals a caller on the service's machine reads, for any caller after it. Now every
answer says `Vary: Authorization`, and one that carries a figure (a tenant's own, or every tenant's) `no-store`."""

from __future__ import annotations

import contextlib
import os

import httpx

PROXIED = {"X-Forwarded-For": "203.0.113.9"}  # passed on by a proxy: from elsewhere


def comparison(user: str, i: int) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Tea or coffee, {i}?", "chosen": f"Tea {i}.", "rejected": "Coffee."}


class Cache:
    """What a cache between the callers and /health may do with its answers (RFC 9111): store an answer unless it says
    `no-store` (or, for a `shared` cache, `private`, or its request carried `Authorization` and the answer does not say
    `public`, 3.5), and hand a stored answer to a later request of the same URL whose headers named by the answer's
    `Vary` are the stored request's (4.1)."""

    def __init__(self, url: str, shared: bool):
        self.url, self.shared, self.stored = url, shared, []

    def get(self, headers: dict) -> httpx.Response:
        sent = {k.lower(): v for k, v in headers.items()}
        for request, answer in self.stored:
            varies = [n.strip().lower() for n in answer.headers.get("vary", "").split(",") if n.strip()]
            if "*" not in varies and all(request.get(n) == sent.get(n) for n in varies):
                return answer
        answer = httpx.get(self.url + "/health", headers=headers)
        directives = {d.strip().lower() for d in answer.headers.get("cache-control", "").split(",")}
        refused = "no-store" in directives or self.shared and (
            "private" in directives or "authorization" in sent and "public" not in directives)
        if not refused:
            self.stored.append((sent, answer))
        return answer


@contextlib.contextmanager
def listings_of(monkeypatch, folder):
    """Counts the listings of `folder` meanwhile (`os.scandir`, `os.listdir`, whatever lists it: glob, iterdir): [count]."""
    count = [0]
    with monkeypatch.context() as patch:
        for name in ("scandir", "listdir"):
            real = getattr(os, name)

            def counted(path=".", real=real):
                count[0] += os.fspath(path) == os.fspath(folder)
                return real(path)

            patch.setattr(os, name, counted)
        yield count


def test_health_shows_every_tenants_vectors_owed_only_to_whoever_reads_metrics(serve, tmp_path, monkeypatch):
    """ops62 (and a restart's figure): purges put off by the last process (a busy cache, an object store down) are counted
    once at start and kept as they come and go: a /health lists no folder (before, vectors-owed/ twice, on the event loop
    every other request waits on, for a figure that grows with every purge put off)."""
    owed = tmp_path / "data" / "vectors-owed"
    owed.mkdir(parents=True)
    for i in range(3):  # purges the last process put off (a DELETE's each): there at this start
        (owed / f"put-off-{i}.owed").write_bytes(b'{"version":1,"caches":[],"keys":[]}')
    data, server, svc = serve()
    monkeypatch.setattr(svc.runtime.owed_vectors, "retry", lambda: 0)  # the cache stays busy: the start's pass purges nothing

    def vectors_owed(who: str | None, **headers):
        key = {"Authorization": f"Bearer {svc.keys[who]}"} if who else {}
        answer = httpx.get(svc.url + "/health", headers={**key, **headers})
        assert answer.status_code == 200, answer.text
        return answer.json()["vectors_owed"]

    with server:
        with listings_of(monkeypatch, owed) as listed:
            assert vectors_owed(None) == 3 and vectors_owed("admin", **PROXIED) == 3  # as /metrics answers them
        assert listed[0] == 0, f"two /health listed the owed purges' folder {listed[0]} times"
        assert vectors_owed("acme") is None, "a tenant's key read every tenant's put-off purges"
        assert vectors_owed("acme", **PROXIED) is None and vectors_owed(None, **PROXIED) is None


def test_every_health_answer_varies_by_key_and_one_with_a_figure_is_not_stored(serve):
    data, server, svc = serve()
    rt = svc.runtime
    key = {who: {"Authorization": f"Bearer {svc.keys[who]}"} for who in ("acme", "globex", "admin")}
    with server, svc.client("acme") as acme, rt.ingest.paused():  # acme's rows wait in the log
        for i in range(2):
            assert acme.post("/v1/feedback", json=comparison("ann", i)).status_code == 201
        for headers in ({}, PROXIED, key["acme"], key["admin"]):
            answer = httpx.get(svc.url + "/health", headers=headers)
            assert "authorization" in answer.headers.get("vary", "").lower(), (headers.keys(), answer.headers)
            figure = answer.json()["feedback_pending"] is not None
            assert ("no-store" in answer.headers.get("cache-control", "")) == figure, (headers.keys(), answer.headers)

        browser = Cache(svc.url, shared=False)  # one browser, a dashboard signed in as one tenant, then another
        assert browser.get(key["acme"]).json()["feedback_pending"] == 2
        assert browser.get(key["globex"]).json()["feedback_pending"] == 0, "globex was handed acme's answer"
        proxy = Cache(svc.url, shared=True)  # a cache on the service's machine, before a caller from elsewhere
        assert proxy.get({}).json()["feedback_pending"] == 2  # the totals: this machine, no key
        assert proxy.get(PROXIED).json()["feedback_pending"] is None, "a caller from elsewhere was handed the totals"
        assert proxy.get(key["acme"]).json()["feedback_pending"] == 2
