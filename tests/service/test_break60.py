"""Session 60 (break), and breakB62's last two tests: a hostile tenant (and a careless admin) against the running service, driven over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from pluralign.store import tenants
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("break60-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    adapter_every=1_000_000)
    with server:
        yield service


class HeldAtOnce:
    """A LanceDB table whose listing reads (a `where` on the tenant alone, or with `user_id >`) count the rows each
    hands over at once: a whole read (`to_arrow`) or each batch of a streamed one (`to_batches`)."""

    def __init__(self, table, held: list[int]):
        self._table, self._held = table, held

    def __getattr__(self, name):
        return getattr(self._table, name)

    def search(self, *args, **kwargs):
        return _Query(self._table.search(*args, **kwargs), self._held)


class _Query:
    def __init__(self, query, held: list[int]):
        self._query, self._held, self._listing = query, held, False

    def __getattr__(self, name):
        return getattr(self._query, name)

    def where(self, where, *args, **kwargs):
        self._listing = where.startswith("tenant = ") and "user_id =" not in where
        self._query = self._query.where(where, *args, **kwargs)
        return self

    def select(self, *args, **kwargs):
        self._query = self._query.select(*args, **kwargs)
        return self

    def limit(self, *args, **kwargs):
        self._query = self._query.limit(*args, **kwargs)
        return self

    def to_arrow(self, *args, **kwargs):
        table = self._query.to_arrow(*args, **kwargs)
        if self._listing:
            self._held.append(table.num_rows)
        return table

    def to_batches(self, *args, **kwargs):
        for batch in self._query.to_batches(*args, **kwargs):
            if self._listing:
                self._held.append(batch.num_rows)
            yield batch


def test_a_users_page_holds_a_page_of_rows_not_the_tenants_every_row(svc, monkeypatch):
    """`GET /v1/users?limit=1` (any tenant key) read the id and times of every row of the tenant's four tables at once
    (`to_arrow`), grouped them by user and sorted every user to give one: a tenant of 3,000,000 rows made each such page
    hold 230 MB more (peak RSS, 7.9 s) in the memory every tenant's requests share, and any number of them could be
    asked for at once. Now each table is read `LISTING_ROWS_PER_READ` rows at a time, keeping the counts of the first
    `limit + 1` users only: the rows handed over at once are counted (the read made small here), and the pages are the
    same."""
    per_read = 4
    users = {f"lister60-{u}": 3 + u for u in range(4)}  # rows each: 3, 4, 5 and 6 comparisons
    with svc.client("globex") as c:
        for user, rows in users.items():
            for i in range(rows):
                body = {"type": "comparison", "user": user, "prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."}
                assert c.post("/v1/feedback", json=body).status_code == 201
        deadline = time.monotonic() + 120
        while c.get("/v1/users").json()["pending"] and time.monotonic() < deadline:
            time.sleep(0.2)  # until the ingest worker moved every row into the table (what a page counts)
        held: list[int] = []
        monkeypatch.setattr(tenants, "LISTING_ROWS_PER_READ", per_read, raising=False)  # absent before the fix
        store = svc.runtime.store
        monkeypatch.setattr(store, "tables", {name: HeldAtOnce(table, held) for name, table in store.tables.items()})
        pages, after = [], None
        while True:
            page = c.get("/v1/users", params={"limit": 1, **({"after": after} if after else {})}).json()
            pages.append(page)
            after = page["next"]
            if after is None:
                break
    assert [(p["users"][0]["user"], p["users"][0]["preferences"]) for p in pages] == list(users.items())
    assert sum(held) >= sum(users.values()), held  # every preference row was read
    assert max(held) <= per_read, f"rows of a table handed over at once for a page of one user: {held}"


def test_finishing_a_stopped_delete_counts_the_stated_changes_since_it_began_not_reads_them_all(svc, monkeypatch):
    """A DELETE its process was stopped in is finished from the journal (`UnfinishedDeletes`), inside the store's
    maintenance turn that every tenant's DELETE waits for; whether the user came back since it began
    (`came_back`, asked twice) read every stated-preference change the user ever made, though chats and comparisons
    there are one count each. A user PATCHed a million times (7 changes a version) made each look read 7,000,000 rows
    while every other tenant's DELETE waited. Now it is one count too: the rows of stated changes read are counted."""
    from pluralign.user import FEATURE_NAMES

    versions = 6
    user = "stopped-deletee60"
    rt = svc.runtime
    with svc.client("globex") as c:
        for v in range(1, versions + 1):
            r = c.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {f: "more" if v % 2 else "less" for f in FEATURE_NAMES}})
            assert r.status_code == 200, r.text
        entry = rt.delete_journal.begin("globex", user, time.time())  # a DELETE begun, its process stopped before any step
        rt.delete_journal.release(entry)
        read: list[int] = []
        stated_changes = rt.store.stated_changes

        def counted(*args, **kwargs):
            rows = stated_changes(*args, **kwargs)
            read.append(len(rows))
            return rows

        monkeypatch.setattr(rt.store, "stated_changes", counted)
        assert svc.server.server.config.app.state.unfinished_deletes.run_once() == 1
        deadline = time.monotonic() + 120
        while rt.delete_journal.unfinished("globex", user) is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the DELETEs' thread finished it
        assert rt.delete_journal.unfinished("globex", user) is None
        assert c.get(f"/v1/users/{user}/stated-preferences").json()["version"] == 0  # deleted: nothing came back
    assert max(read, default=0) <= len(FEATURE_NAMES), f"rows of stated changes read at once: {read}"


def test_a_tenants_audits_beyond_the_queue_bound_are_429_from_both_routes(svc, monkeypatch):
    """breakB62 (here to share this module's service): a dashboard script polling `GET /admin/audits/fairness?...&since=
    <a day ago>&wait=0` asks a new audit at each poll (its `since` moves: no queued audit is the same one). Adapter and
    population jobs were bounded by `tenant_queued_jobs`; audits were not: each poll queued one more, however many of the
    tenant's waited (each a record in memory and on disk, read at every dispatcher round). Now a tenant's audits queued or
    running count against it too (those of every tenant together, as the service's own): beyond it a 429 with
    Retry-After, nothing queued."""
    bound = svc.runtime.settings.tenant_queued_jobs
    with svc.client("admin") as admin:
        runner = svc.server.server.config.app.state.admin.runner
        monkeypatch.setattr(runner, "_may_start", lambda job: False)  # the workers busy elsewhere: every job stays queued
        try:
            def audit(tenant: str | None, since: float):
                return admin.post("/admin/jobs", json={"kind": "audit", "params": {
                    "group_by": "seg", "since": since, **({"tenant": tenant} if tenant else {})}})

            posted = [audit("acme", float(i)) for i in range(bound + 1)]
            assert [r.status_code for r in posted] == [201] * bound + [429], [r.text for r in posted]  # before: 201 each
            refused = posted[-1]
            assert refused.headers["Retry-After"] == "60"
            message = refused.json()["error"]["message"]
            assert "tenant 'acme'" in message and f"{bound} audits queued or running" in message and "tenant_queued_jobs" in message, message
            polled = admin.get("/admin/audits/fairness", params={"group_by": "seg", "tenant": "acme", "since": 1000, "wait": 0})
            assert polled.status_code == 429 and polled.headers["Retry-After"] == "60", polled.text  # before: 202, queued
            # left63: a poll past the bound is refused before its tenant's waiting feedback is moved (the worker paused:
            # a feedback of acme waits); before, the poll moved it in its own thread, or, as here, answered the 503
            # `feedback_backlog` (ask again later) where the answer was this 429 all along
            with svc.client("acme") as user, svc.runtime.ingest.paused():
                sent = user.post("/v1/feedback", json={"type": "comparison", "user": "pollster", "prompt": "Tea?",
                                                       "chosen": "Yes, please.", "rejected": "No."})
                assert sent.status_code < 300 and (waiting := svc.runtime.ingest.pending_rows("acme")) >= 1, sent.text
                polled = admin.get("/admin/audits/fairness", params={"group_by": "seg", "tenant": "acme", "since": 2000, "wait": 0})
                assert polled.status_code == 429, polled.text  # before: 503 feedback_backlog
                assert svc.runtime.ingest.pending_rows("acme") == waiting
            assert audit("acme", 0.0).status_code == 200  # the same audit as one queued is still that job
            assert audit("globex", 0.0).status_code == 201  # another tenant's audits count apart
            assert [audit(None, float(i)).status_code for i in range(bound + 1)] == [201] * bound + [429]  # every tenant's together
            assert len([j for j in runner.active() if j.kind == "audit"]) == 2 * bound + 1
        finally:
            for job in runner.active():
                runner.cancel(job.id)


def test_an_admin_keys_sessions_are_bounded_its_oldest_signed_out(svc):
    """breakB62: a scraping script that signs in at each scrape (`POST /admin/login` with its admin key) opened one more
    session each time, every one held until it expired (`admin_session_s`, an hour), and each sign-in rebuilt the table
    of them all on the event loop: 200 sign-ins a second (the rate limit) held 720,000 sessions an hour, and made every
    sign-in, and so every request the event loop serves, slower with each one. Now a key holds at most
    MAX_SESSIONS_PER_KEY: a sign-in past it signs out that key's oldest session."""
    from service.admin.session import COOKIE, MAX_SESSIONS_PER_KEY

    def sign_in() -> str:
        r = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]}, follow_redirects=False)
        assert r.status_code == 303, r.text
        return r.cookies[COOKIE]

    def page(token: str) -> int:
        return httpx.get(svc.url + "/admin/dashboard", headers={"Cookie": f"{COOKIE}={token}"}, follow_redirects=False).status_code

    tokens = [sign_in() for _ in range(MAX_SESSIONS_PER_KEY + 1)]
    assert page(tokens[-1]) == 200 and page(tokens[1]) == 200
    assert page(tokens[0]) == 401  # the oldest signed out (before: 200, every session kept until it expired)


@pytest.mark.parametrize("group_by", ["seg\u202eevil", "seg\nment", "seg\x1b[2Jment", "seg\u2028ment"])
def test_an_audit_by_a_name_no_attribute_may_hold_is_refused_naming_group_by(svc, group_by):
    """breakB62: feedback refuses an attribute name holding a control character, a line separator or a bidi override
    (`name_control_problem`), but an audit's `group_by` took one: queued (201, 202), its job ran only to fail (no
    comparison carries such an attribute), the job table, its log and the worker's argument holding the control. Now
    both routes refuse it as feedback does, nothing queued."""
    with svc.client("admin") as admin:
        before = len(admin.get("/admin/jobs", params={"kind": "audit", "limit": 1000}).json()["jobs"])
        posted = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": group_by, "tenant": "acme"}})
        assert posted.status_code == 400 and posted.json()["error"]["param"] == "params.group_by", posted.text  # before: 201
        asked = admin.get("/admin/audits/fairness", params={"group_by": group_by, "tenant": "acme", "wait": 0})
        assert asked.status_code == 400 and asked.json()["error"]["param"] == "group_by", asked.text  # before: 202
        assert len(admin.get("/admin/jobs", params={"kind": "audit", "limit": 1000}).json()["jobs"]) == before
