"""The admin area over real HTTP: admin keys only, jobs in worker processes, audits of stored feedback,
the adapter trigger, and the dashboard."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from pluralign.data.persona import PersonaConfig, build_persona
from pluralign.fairness.report import report_encoder
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import SHARED_DATA, start_service
from training.jobs.record import Job


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(
        tmp_path_factory.mktemp("admin-data"), tiny_generator_dir, tiny_pal_dir, minilm,
        admin_handlers=ADMIN_HANDLERS, adapter_every=20, job_workers=2,
        deletion_sweep_s=3600,  # its tests finish journal entries by hand (`delete(rt, ..., entry)`): no pass of the service's own in between
    )
    with server:
        yield service


def wait_job(client, job_id, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/admin/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_admin_routes_refuse_tenant_keys_and_missing_keys(svc):
    routes = [("GET", "/admin/jobs"), ("POST", "/admin/jobs"), ("GET", "/admin/jobs/x"), ("POST", "/admin/jobs/x/cancel"),
              ("GET", "/admin/audits/fairness?group_by=segment"), ("GET", "/admin/dashboard")]
    with svc.client("acme") as tenant, svc.client(None) as anonymous:
        for method, path in routes:
            assert tenant.request(method, path, json={"kind": "audit"}).status_code == 403, path
            assert anonymous.request(method, path, json={"kind": "audit"}).status_code == 401, path
    with svc.client("admin") as admin:
        assert admin.get("/admin/jobs").status_code == 200
        assert admin.post("/v1/feedback", json={"type": "comparison", "user": "x", "prompt": "p", "chosen": "a", "rejected": "b"}).status_code == 403



def test_an_admin_routes_errors_point_to_the_admin_doc(svc):
    """Session trial47a: an admin's job sent with `tenant` beside `kind` (it goes in `params`), or a path no admin
    route has, was told "docs/api.md lists the fields this API takes" / "... lists the routes": docs/api.md does not
    list them, docs/admin.md does. A /v1 request's errors still point to docs/api.md."""
    with svc.client("admin") as admin:
        r = admin.post("/admin/jobs", json={"kind": "audit", "tenant": "acme", "params": {"group_by": "segment"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tenant", r.text
        assert r.json()["error"]["message"] == "`tenant`: unknown field (docs/admin.md lists the fields this API takes)", r.text
        r = admin.get("/admin/nope")
        assert r.json()["error"]["message"] == "no route `GET /admin/nope`: docs/admin.md lists the routes", r.text
        r = admin.get("/admin/jbos")
        assert r.json()["error"]["message"] == "no route `GET /admin/jbos`: did you mean `GET /admin/jobs`? (docs/admin.md lists the routes)", r.text
    with svc.client("acme") as tenant:
        r = tenant.post("/v1/feedback", json={"type": "comparison", "user": "x", "prompt": "p", "chosen": "a", "rejected": "b", "foo": 1})
        assert r.json()["error"]["message"] == "`foo`: unknown field (docs/api.md lists the fields this API takes)", r.text

def test_an_unknown_job_id_is_repeated_escaped_as_other_errors_repeat_values(svc):
    """Before: the 404 said `no job ` and then the id's characters as sent, a right-to-left override (U+202E)
    included, which turns the rest of the message (and the log line, the terminal) around; every other error
    repeats a client's value as `shown` does, escaped and quoted ('\\u202e...')."""
    sneaky = "\u202ebol\u200b" * 3
    with svc.client("admin") as admin:
        for r in (admin.get(f"/admin/jobs/{sneaky}"), admin.post(f"/admin/jobs/{sneaky}/cancel")):
            assert r.status_code == 404, r.text
            message = r.json()["error"]["message"]
            assert "\u202e" not in message and "\u200b" not in message, message
            assert message.startswith("no job '\\u202ebol\\u200b"), message


def test_a_crashing_job_is_recorded_failed_and_the_service_keeps_serving(svc):
    with svc.client("admin") as admin:
        # an audit of a tenant with no stored comparisons (other tenants have many): the worker exits with an error,
        # and the route names the tenant; before, a 400 naming `group_by`: "there are no stored comparisons to audit yet"
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "nobody-here", "wait": 120}, timeout=240)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "tenant", r.text
        assert "tenant 'nobody-here' has no stored comparisons to audit" in r.json()["error"]["message"], r.text
        (job,) = [j for j in admin.get("/admin/jobs", params={"kind": "audit"}).json()["jobs"] if j["params"].get("tenant") == "nobody-here"]
        assert job["state"] == "failed" and "exit code" in job["error"], job
        assert admin.post("/admin/jobs", json={"kind": "no-such-kind"}).status_code == 400
        assert admin.post("/admin/jobs", json={"kind": "adapter", "params": {}}).status_code == 400  # needs a user
    with svc.client("acme") as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "dora", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."})
        assert r.status_code == 201


def test_cancel_a_queued_job(svc):
    with svc.client("admin") as admin:
        # queued behind nothing, it may start at once: cancel works either way and ends cancelled
        job = admin.post("/admin/jobs", json={"kind": "em", "params": {"protocol": "persona", "groups": 2, "max_iter": 1000}}).json()
        cancelled = admin.post(f"/admin/jobs/{job['id']}/cancel").json()
        assert cancelled["cancel_requested"] is True
        assert wait_job(admin, job["id"])["state"] == "cancelled"
        assert admin.post("/admin/jobs/nope/cancel").status_code == 404


def give_twenty_comparisons(svc, user):
    with svc.client("acme") as c:
        for i in range(20):
            body = {"type": "comparison", "user": user, "prompt": f"Question {i}?", "chosen": f"Helpful answer {i}.", "rejected": f"Rude answer {i}."}
            assert c.post("/v1/feedback", json=body).status_code == 201
    svc.runtime.wait_for_background()  # the trigger runs after the 201
    with svc.client("admin") as admin:
        jobs = admin.get("/admin/jobs", params={"kind": "adapter"}).json()["jobs"]
    (job,) = [j for j in jobs if j["params"].get("user") == user]
    assert {k: job["params"][k] for k in ("tenant", "user", "comparisons")} == {"tenant": "acme", "user": user, "comparisons": 20}
    # the adapter fits the served model (its folder shown by name: left30) and a snapshot of the user's comparisons
    # in the data folder (shown relative to it)
    assert job["params"]["base"] == Path(svc.runtime.settings.generator).name
    assert (svc.runtime.settings.data_path / job["params"]["data"]).read_text().count("\n") == 20
    return job


def test_n_new_comparisons_queue_an_adapter_job_for_the_user(svc):
    """The job queued is what this checks; its training (a worker fitting a LoRA adapter on the tiny model, ~15 CPU-s
    counted against whichever test of the module reaps it) is the slow test's below, so it is cancelled here (speedC63)."""
    job = give_twenty_comparisons(svc, "erin")
    with svc.client("admin") as admin:
        assert admin.post(f"/admin/jobs/{job['id']}/cancel").status_code == 200
        assert wait_job(admin, job["id"])["state"] in ("cancelled", "succeeded")  # (one that ended first stays as it ended)


@pytest.mark.slow
def test_the_triggered_adapter_is_trained_promoted_and_served(svc):
    job = give_twenty_comparisons(svc, "fred")
    with svc.client("admin") as admin:
        done = wait_job(admin, job["id"], timeout=300)
    assert done["state"] == "succeeded", done["log_tail"]
    assert done["promoted"] is True and "held_out_acc_after" in done["metrics"]
    from pluralign.policy.adapters import adapter_name, read_meta

    record = svc.runtime.store.get_user("acme", "fred")
    served = svc.runtime.settings.adapters_path / "acme" / "fred"
    assert (served / "adapter_config.json").is_file()
    assert read_meta(served).user == "fred"
    with svc.client("acme") as c:  # the next completion for fred is generated with his adapter
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "messages": [{"role": "user", "content": "Hi"}], "user": "fred", "seed": 1})
        profile = c.get("/v1/users/fred").json()
    # one name everywhere: the user's row, the profile, and the adapter the completion was generated with
    assert r.status_code == 200 and r.json()["pluralign"]["adapter"] == adapter_name("acme", "fred")
    assert record.adapter == adapter_name("acme", "fred") and profile["adapter"] == record.adapter


@pytest.fixture(scope="module")
def audited(svc):
    """globex's persona users (a 25% minority holding the opposite stance) and umbrella's four, each tenant audited once
    by `segment` (umbrella first): (globex's records, globex's first report). A fixture, not the first test's side
    effect: xdist may run this module's later tests on another worker, which then audits on its own service."""
    protocol = build_persona(PersonaConfig(groups=2, group_weights=(0.75, 0.25), users_per_group=4, comparisons_per_user=12, seed=2), SHARED_DATA)
    records = [*protocol.seen.train, *protocol.seen.val, *protocol.seen.test]  # 12 per user: below adapter_every
    with svc.client("globex") as c:
        for r in records:
            segment = "majority" if r.attributes["group"] == "g0" else "minority"
            body = {"type": "comparison", "user": r.user_id, "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected,
                    "attributes": {"segment": segment}}
            assert c.post("/v1/feedback", json=body).status_code == 201
    # another tenant's earlier audit by the same attribute: other users, so globex's first audit has no change since it
    # (before admin42 the change was drawn against it, as if globex's worst group had moved since umbrella's audit)
    svc.keys.setdefault("umbrella", svc.runtime.keys.issue("umbrella"))
    with svc.client("umbrella") as c:
        for i in range(3):
            # two users a segment: a group of one user is suppressed (session 49), and an audit of no group shown has no row
            for user, segment in (("kim", "a"), ("kay", "a"), ("lee", "b"), ("lou", "b")):
                body = {"type": "comparison", "user": user, "prompt": f"Tea or coffee, round {i}?", "chosen": "Tea.",
                        "rejected": "Water.", "attributes": {"segment": segment}}
                assert c.post("/v1/feedback", json=body).status_code == 201
    with svc.client("admin") as admin:
        other = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "umbrella", "min_comparisons": 1, "wait": 120}, timeout=240)
        assert other.status_code == 200, other.text
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "min_comparisons": 20, "wait": 120}, timeout=240)  # longer than the server's own wait
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["previous_created_at"] is None, (report, other.json()["created_at"])
        assert report["worst_group_accuracy_change"] is None and report["gap_change"] is None
    return records, report


@pytest.mark.slow  # two audit jobs more than `audited` (~10 CPU-s; make test-cli): the next test keeps its checks of the first audit
@pytest.mark.skipif(not (SHARED_DATA / "anthropic_persona").is_dir(), reason="persona data not present")
def test_fairness_audit_of_stored_feedback_reports_the_minority_gap_and_the_dashboard_shows_it(svc, audited):
    records, report = audited
    with svc.client("admin") as admin:
        by = {g["group"]: g for g in report["groups"]}
        assert set(by) == {"majority", "minority"}
        assert by["majority"]["users"] == 6 and by["minority"]["users"] == 2
        assert by["majority"]["comparisons"] + by["minority"]["comparisons"] == len(records)
        # the minority holds the opposite stance: the one-size-fits-all model fails it, and the audit says so
        assert by["majority"]["base_accuracy"] - by["minority"]["base_accuracy"] > 0.4
        assert report["base_worst_group"] == "minority"
        # the report was stored by an audit job, so it can be compared over time
        audits = admin.get("/admin/jobs", params={"kind": "audit", "state": "succeeded"}).json()["jobs"]
        assert audits and audits[0]["metrics"]["comparisons"] == len(records)
        # a later audit of recent feedback only, with another `min_comparisons`: other comparisons, other groups ranked,
        # so it is compared with no audit (until session 43 it was given its change since the first: the settings'
        # difference read as the service's)
        half = sorted(svc.runtime.store.preferences_for("globex", u)[0][6].created_at for u in {r.user_id for r in records})[0]
        windowed = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "since": half, "min_comparisons": 1}).json()
        assert 0 < windowed["comparisons"] < len(records)
        assert windowed["previous_created_at"] is None and windowed["gap_change"] is None
        # the first audit's settings again, once the minority said more: compared with the first
        with svc.client("globex") as c:
            minority = sorted({r.user_id for r in records if r.attributes["group"] != "g0"})[0]
            for r in [r for r in records if r.user_id == minority][:6]:
                body = {"type": "comparison", "user": minority, "prompt": f"{r.prompt} (again)", "chosen": r.chosen,
                        "rejected": r.rejected, "attributes": {"segment": "minority"}}
                assert c.post("/v1/feedback", json=body).status_code == 201
        recent = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "min_comparisons": 20, "wait": 120},
                           timeout=240).json()
        assert recent["comparisons"] == len(records) + 6
        assert recent["previous_created_at"] == report["created_at"] and recent["gap_change"] is not None
        # each change is its own figure's: personalized against personalized, base against base
        assert recent["gap_change"] == pytest.approx(recent["gap"] - report["gap"])
        assert recent["base_gap_change"] == pytest.approx(recent["base_gap"] - report["base_gap"])
        assert recent["worst_group_accuracy_change"] == pytest.approx(recent["worst_group_accuracy"] - report["worst_group_accuracy"])

        page = admin.get("/admin/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert 'class="bar personalized" data-group="minority"' in html and 'class="bar base" data-group="majority"' in html
        assert 'id="worst-group-over-time"' in html and 'class="point personalized"' in html
        # it says whose audit the latest is, draws over time only the audits it is compared with (globex's two; before
        # admin42 one unlabelled line ran through umbrella's too), and names each stored audit's tenant
        assert "Audit of tenant <bdi>globex</bdi> by <b><bdi>segment</bdi></b>" in html, html
        chart = html.split('id="worst-group-over-time"')[1].split("</svg>")[0]
        assert chart.count('class="point personalized"') == 2, chart
        assert "<td>tenant <bdi>umbrella</bdi></td>" in html and "<td>tenant <bdi>globex</bdi></td>" in html
    # an audit of every tenant is compared with the audits of every tenant only: one stored before globex's first (as
    # its job leaves it: a record with no `tenant` param and its report) is neither globex's previous nor given theirs
    admin = svc.server.server.config.app.state.admin
    audit_of_every_tenant_compared_with_those_only(admin, report, "audit-of-every-tenant")
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # issue 16: the population's prototypes, each shown by stored answers it scores highest and lowest
    assert 'id="prototypes"' in html and 'class="prototype" data-prototype="0"' in html
    import html as html_lib
    shown = re.findall(r"<br>(?:<bdi>)?(.*?)(?:</bdi>)? <span", html.split('id="prototypes"')[1])  # user text in <bdi> (i18n30)
    stored = {html_lib.escape(t, quote=True) for t in svc.runtime.store.answers_sample(None, 100_000)[1]}  # every tenant's
    assert shown and all(any(s.startswith(x.rstrip("…")) for s in stored) for x in shown)


@pytest.mark.skipif(not (SHARED_DATA / "anthropic_persona").is_dir(), reason="persona data not present")
def test_a_fairness_audit_of_stored_feedback_reports_the_minority_gap_and_the_dashboard_shows_it(svc, audited, monkeypatch):
    """The checks of the slow-marked test above on `audited`'s audits alone (no audit job of its own): the minority's gap,
    the stored audit job, the dashboard's bars, whose audit it shows, the tenants' table and the prototypes, and an
    audit of every tenant compared with audits of every tenant only. Then the first's settings again, its worker left
    out (`Admin.audit` hands back an audit recorded as the runner records one that succeeded): the route gives its
    change since the newest such audit stored before it (globex's first, unless the slow test ran first and stored
    one more), each figure against its own, and the dashboard's line over time draws globex's audits of those settings,
    not umbrella's. The later audits' workers (recent feedback only, the first's settings again) are the slow test's.
    What earlier tests of the process stored is read first, not assumed: run after the slow test (`make test-all`,
    file order) this expected one point on the line and globex's first as the previous audit, and failed. The dashboard
    is read once that audit is stored, the newest of every tenant's: read before it (review gaps62), its latest audit was
    initech's after the slow initech test above had run, no bars, and this failed."""
    import html as html_lib

    from service.admin.services import Admin
    from tests.service.test_audit41_suppressed_delete import recorded_succeeded

    records, report = audited
    by = {g["group"]: g for g in report["groups"]}
    assert set(by) == {"majority", "minority"}
    assert by["majority"]["users"] == 6 and by["minority"]["users"] == 2
    assert by["majority"]["comparisons"] + by["minority"]["comparisons"] == len(records)
    # the minority holds the opposite stance: the one-size-fits-all model fails it, and the audit says so
    assert by["majority"]["base_accuracy"] - by["minority"]["base_accuracy"] > 0.4
    assert report["base_worst_group"] == "minority"
    with svc.client("admin") as admin:
        # the report was stored by an audit job, so it can be compared over time
        audits = admin.get("/admin/jobs", params={"kind": "audit", "state": "succeeded", "limit": 1000}).json()["jobs"]
        *_, first_of_globex = [j for j in audits if j["params"].get("tenant") == "globex" and "since" not in j["params"]]
        assert first_of_globex["metrics"]["comparisons"] == len(records)
    # an audit of every tenant is compared with the audits of every tenant only (as in the slow test)
    admin = svc.server.server.config.app.state.admin
    first = audit_of_every_tenant_compared_with_those_only(admin, report, "audit-of-every-tenant-first")
    # globex's audits of the first's settings stored so far, newest first: the first alone, or the slow test's later one too
    like_first = admin.reports(like=first)
    assert like_first.jobs[-1].id == first.id and like_first.readable[-1].created_at == report["created_at"], like_first.jobs
    # the first's settings again, other figures, the newest audit stored (of every tenant: the dashboard's latest, whatever
    # earlier tests stored): compared with the newest of those, globex's first when it is the only one (review jobs61: the
    # route's change since the previous audit and the dashboard's line were checked only by the slow test)
    newest = like_first.readable[0]
    again = Job(id=f"audit-again-{first.id}", kind="audit", params=dict(first.params), state="running", created_at=time.time())
    later = msgspec.structs.replace(newest, created_at=again.created_at, gap=newest.gap / 2, base_gap=newest.base_gap / 2,
                                    worst_group_accuracy=newest.worst_group_accuracy / 2)

    async def ended(self, params, wait):  # the job's worker: already done
        return self.runner.get(again.id)

    monkeypatch.setattr(Admin, "audit", ended)
    recorded_succeeded(admin, again, later)
    try:
        with svc.client("admin") as http:
            r = http.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "min_comparisons": 20, "wait": 120})
            html = http.get("/admin/dashboard").text
        assert r.status_code == 200, r.text
        recent = r.json()
        assert recent["created_at"] == again.created_at and recent["previous_created_at"] == newest.created_at, recent
        assert recent["gap_change"] == pytest.approx(recent["gap"] - newest.gap) == pytest.approx(-newest.gap / 2)
        assert recent["base_gap_change"] == pytest.approx(recent["base_gap"] - newest.base_gap)
        assert recent["worst_group_accuracy_change"] == pytest.approx(recent["worst_group_accuracy"] - newest.worst_group_accuracy)
        assert 'class="bar personalized" data-group="minority"' in html and 'class="bar base" data-group="majority"' in html
        assert 'id="worst-group-over-time"' in html and 'class="point personalized"' in html
        assert "Audit of tenant <bdi>globex</bdi> by <b><bdi>segment</bdi></b>" in html, html
        assert "<td>tenant <bdi>umbrella</bdi></td>" in html and "<td>tenant <bdi>globex</bdi></td>" in html
        assert "<script" not in html and "http://" not in html and "https://" not in html
        # issue 16: the population's prototypes, each shown by stored answers it scores highest and lowest
        assert 'id="prototypes"' in html and 'class="prototype" data-prototype="0"' in html
        shown = re.findall(r"<br>(?:<bdi>)?(.*?)(?:</bdi>)? <span", html.split('id="prototypes"')[1])  # user text in <bdi> (i18n30)
        stored = {html_lib.escape(t, quote=True) for t in svc.runtime.store.answers_sample(None, 100_000)[1]}  # every tenant's
        assert shown and all(any(s.startswith(x.rstrip("…")) for s in stored) for x in shown)
        chart = html.split('id="worst-group-over-time"')[1].split("</svg>")[0]
        assert chart.count('class="point personalized"') == len(like_first.readable) + 1, chart  # globex's, this one too; umbrella's not
    finally:
        admin.runner.purge(again.id)


@pytest.mark.slow  # an audit job's worker (~5 CPU-s; make test-cli): test_the_audit_route_reads_its_stored_reports_off_the_event_loop
def test_an_audit_reading_its_stored_reports_does_not_stall_other_requests(svc, monkeypatch):
    """The audit route reads the job's report and every stored report (to say what changed since the
    previous audit). With many stored reports that takes a while; it used to run on the event loop,
    so every other request of every tenant waited for it."""
    import threading

    from service.admin.services import Admin

    svc.keys.setdefault("initech", svc.runtime.keys.issue("initech"))  # a tenant of its own: other tests count theirs
    with svc.client("initech") as c:
        for i in range(4):
            for user, segment in (("ivy", "a"), ("ian", "b")):
                body = {"type": "comparison", "user": user, "prompt": f"Tea or coffee, take {i}?", "chosen": "Tea.",
                        "rejected": "Coffee.", "attributes": {"segment": segment}}
                assert c.post("/v1/feedback", json=body).status_code == 201
    reading, answered, original = threading.Event(), threading.Event(), Admin.reports
    answered_meanwhile = []

    def slow_reports(self, limit=50, **scope):  # as if hundreds of reports were stored: read until /health is answered
        reading.set()
        # read on the event loop, the /health below cannot be answered before this gives up (after 10 s)
        answered_meanwhile.append(answered.wait(10))
        return original(self, limit, **scope)

    monkeypatch.setattr(Admin, "reports", slow_reports)
    answer = {}

    def audit():
        with svc.client("admin") as admin:
            answer["r"] = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "initech", "min_comparisons": 1,
                                                                     "wait": 120}, timeout=240)

    thread = threading.Thread(target=audit)
    thread.start()
    assert reading.wait(180), "the audit job did not end"
    with svc.client("acme") as other:
        assert other.get("/health", timeout=60).status_code == 200
    answered.set()
    thread.join(60)
    assert answer["r"].status_code == 200, answer["r"].text
    assert answered_meanwhile[0], answered_meanwhile  # False while the reports were read on the event loop


def test_the_audit_route_reads_its_stored_reports_off_the_event_loop(svc, monkeypatch):
    """The check of the slow-marked test above without an audit job's worker (~5 CPU-s): the audit route over HTTP is
    handed an ended audit (`Admin.audit` answers with a job recorded as the runner records one that succeeded), then
    reads its report and every stored report as after any audit; a /health of another tenant is answered meanwhile."""
    import threading

    from pluralign.fairness.report import AuditReport
    from service.admin.services import Admin
    from tests.service.test_audit41_suppressed_delete import recorded_succeeded
    from tests.service.test_privacy40_audit_figures import figures

    admin_state = svc.server.server.config.app.state.admin
    created = time.time()
    params = {"group_by": "segment", "min_group_size": 1, "min_comparisons": 1, "tenant": "initech-stub"}
    job = Job(id=f"audit-off-the-loop-{created:.0f}", kind="audit", params=params, state="running", created_at=created)
    report = AuditReport(group_by="segment", created_at=created, encoder_id="minilm", personalized_model="online-logistic",
                         base_model="crossfit-logistic", users=4, comparisons=8, overall=figures("all", 4, 0.625),
                         groups=[figures("a", 2, 0.5), figures("b", 2, 0.75)], worst_group="a", worst_group_accuracy=0.5, gap=0.25)
    recorded_succeeded(admin_state, job, report)
    reading, answered, original = threading.Event(), threading.Event(), Admin.reports
    answered_meanwhile = []

    async def ended(self, params, wait):  # the job's worker: already done
        return self.runner.get(job.id)

    def slow_reports(self, limit=50, **scope):  # as if hundreds of reports were stored: read until /health is answered
        reading.set()
        # read on the event loop, the /health below cannot be answered before this gives up (after 10 s)
        answered_meanwhile.append(answered.wait(10))
        return original(self, limit, **scope)

    monkeypatch.setattr(Admin, "audit", ended)
    monkeypatch.setattr(Admin, "reports", slow_reports)
    answer = {}

    def audit():
        with svc.client("admin") as admin:
            answer["r"] = admin.get("/admin/audits/fairness", params={k: v for k, v in params.items() if k != "min_group_size"}
                                    | {"wait": 120}, timeout=240)

    thread = threading.Thread(target=audit)
    thread.start()
    try:
        assert reading.wait(60), "the audit route did not read the stored reports"
        with svc.client("acme") as other:
            assert other.get("/health", timeout=60).status_code == 200
    finally:
        answered.set()
        thread.join(60)
        admin_state.runner.purge(job.id)
    assert answer["r"].status_code == 200, answer["r"].text
    assert answer["r"].json()["created_at"] == created
    assert answered_meanwhile[0], answered_meanwhile  # False while the reports were read on the event loop


def test_an_audit_whose_check_fails_keeps_no_report_figures_or_group_names_of_a_user_deleted_since(svc, monkeypatch):
    """auditfail42: the runner's check of a succeeded audit (`Admin.keep_audit_members`) can raise (a full disk
    refusing the members index); the job is then recorded failed and its artifact folder removed. Before, its
    result.json, `out` and the record's `metrics` (figures drawn with each member's comparisons) stayed, under no
    members file a DELETE reads: a member deleted later left their group's name (their own attribute's value) and
    the figures computed with them readable until the retention purged the job 7 days on. Now a failed check
    leaves the job its error and no result."""
    svc.keys.setdefault("hooli", svc.runtime.keys.issue("hooli"))  # a tenant of its own: other tests count theirs
    segment = "segment-only-gus-sends"
    with svc.client("hooli") as c:
        for i in range(2):
            for user, value in (("gus", segment), ("hal", "segment-hal-sends")):
                body = {"type": "comparison", "user": user, "prompt": f"Tea or cocoa, cup {i}?", "chosen": "Tea.",
                        "rejected": "Cocoa.", "attributes": {"segment": value}}
                assert c.post("/v1/feedback", json=body).status_code == 201
    admin = svc.server.server.config.app.state.admin

    def full_disk(job_id, user_hashes):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(admin.audit_members, "add", full_disk)  # the check's first write (`_prune_audit`)
    with svc.client("admin") as client:
        r = client.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "hooli", "min_comparisons": 1,
                                                        "wait": 120}, timeout=240)
        assert r.status_code == 422 and r.json()["error"]["code"] == "audit_failed", r.text
        monkeypatch.undo()
        (job,) = [j for j in client.get("/admin/jobs", params={"kind": "audit"}).json()["jobs"] if j["params"].get("tenant") == "hooli"]
        assert job["state"] == "failed" and "checking its result failed" in job["error"], job
        with svc.client("hooli") as c:
            assert c.delete("/v1/users/gus").status_code == 200
        job = client.get(f"/admin/jobs/{job['id']}").json()
        assert job["metrics"] == {} and job["result_path"] is None and job["artifact"] is None, job
        assert "No space left on device" in job["error"], job  # why it failed stays
        assert segment not in client.get("/admin/dashboard").text
    assert not admin.runner.store.path(job["id"], "result.json").exists()
    assert not admin.runner.store.path(job["id"], "out").exists()
    data = admin.folder.parent
    assert [str(p) for p in data.rglob("*") if p.is_file() and segment.encode() in p.read_bytes()] == []


@pytest.fixture(scope="module")
def capped(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("capped-data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, job_memory_mb=64)
    with server:
        yield service


def test_the_services_job_memory_cap_is_its_runners(svc):
    """`job_memory_mb` (the default, 6144 MB here) is the cap the service's job runner kills a worker over; the kill and
    the failed job's figure are tests/unit/test_speedC63_memory_cap.py's, on the runner (the slow test below: a service
    capped at 64 MB and an EM job's worker)."""
    admin = svc.server.server.config.app.state.admin
    assert svc.runtime.settings.job_memory_mb == 6144
    assert admin.runner.config.memory_mb == svc.runtime.settings.job_memory_mb


# slow (make test-cli): a service of its own and an EM job's worker, ~14 CPU-s of the default suite's (speedC63); the
# runner's cap, its kill and the failed job's figure: tests/unit/test_speedC63_memory_cap.py; the service serving on after
# a job's worker failed: test_a_crashing_job_is_recorded_failed_and_the_service_keeps_serving
@pytest.mark.slow
def test_a_job_over_the_memory_cap_is_killed_and_failed_with_the_figure_and_the_service_keeps_serving(capped):
    with capped.client("admin") as admin:
        r = admin.post("/admin/jobs", json={"kind": "em", "params": {"protocol": "persona", "groups": 2, "max_iter": 1000}})
        assert r.status_code == 201, r.text
        job = wait_job(admin, r.json()["id"])
    assert job["state"] == "failed", job
    assert "memory cap exceeded" in job["error"] and "over the cap of 64 MB (setting job_memory_mb)" in job["error"], job["error"]
    held = float(job["error"].split("held ")[1].split(" MB")[0])
    assert held >= 64  # rounded to 0.1 MB: a worker just over the cap reads 64.0 (was rounded to whole MB, "held 64 MB, over the cap of 64 MB")
    assert job["log_tail"][-1] == job["error"]
    with capped.client("acme") as c:  # the service is unharmed
        assert c.get("/health").status_code == 200
        body = {"type": "comparison", "user": "dora", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
        assert c.post("/v1/feedback", json=body).status_code == 201


def test_the_report_of_a_job_that_is_no_audit_is_a_404_naming_its_kind(svc):
    """GET /admin/jobs/{id}/report of another kind of job: 404 saying which kind it is, in words ("is a adapter job"
    until fuzz43)."""
    state = svc.server.server.config.app.state.admin
    now = time.time()
    adapter = Job(id="adapter-not-an-audit", kind="adapter", params={}, state="succeeded", created_at=now, started_at=now, finished_at=now)
    state.runner.store.add(adapter)
    try:
        with svc.client("admin") as admin:
            r = admin.get(f"/admin/jobs/{adapter.id}/report")
        assert r.status_code == 404 and "is an adapter job: only an audit job has a report" in r.json()["error"]["message"], r.text
    finally:
        state.runner.purge(adapter.id)


@pytest.mark.skipif(not (SHARED_DATA / "anthropic_persona").is_dir(), reason="persona data not present")
def test_polling_an_audit_while_it_runs_is_that_job_and_its_report_is_read_by_its_id(svc, audited):
    """An admin polls: the audit route's 202 names the job, and its report is `GET /admin/jobs/{id}/report` (202 with the
    job until it ends, then the report with its change since the previous one). Before, no route gave a finished
    audit's report (`GET /admin/jobs/{id}` has its top-level numbers only, no group), and asking the audit route again
    while the audit ran queued another audit per call. A running audit is the job of a request whose feedback it read
    (nothing moved into the table since it started); feedback moved after its start queues one that covers it."""
    state = svc.server.server.config.app.state.admin
    query = {"group_by": "segment", "tenant": "globex", "min_comparisons": 20, "wait": 0}
    with svc.client("admin") as admin:
        first = next(j for j in admin.get("/admin/jobs", params={"kind": "audit", "state": "succeeded", "limit": 1000}).json()["jobs"]
                     if j["params"].get("tenant") == "globex" and j["params"].get("min_comparisons") == 20)
        report = admin.get(f"/admin/jobs/{first['id']}/report")
        assert report.status_code == 200, report.text
        assert {g["group"] for g in report.json()["groups"]} == {"majority", "minority"}
        assert report.json()["created_at"] == first["metrics"]["created_at"]
        assert admin.get("/admin/jobs/no-such-job/report").status_code == 404
        # a stand-in for its worker: the record of an identical audit that started after the last feedback moved
        now = time.time()
        running = Job(id="audit-still-running", kind="audit", params=first["params"] | {"store": svc.runtime.settings.lancedb_uri},
                      state="running", created_at=now, started_at=now)
        state.runner.store.add(running)
        queued: list[str] = []
        try:
            for _ in range(3):
                polled = admin.get("/admin/audits/fairness", params=query)
                assert polled.status_code == 202 and polled.json()["job"]["id"] == running.id, polled.text
            job_request = {"kind": "audit", "params": {k: v for k, v in query.items() if k != "wait"}}
            same = admin.post("/admin/jobs", json=job_request)
            assert same.status_code == 200 and same.json()["id"] == running.id, same.text
            assert [j["id"] for j in admin.get("/admin/jobs", params={"kind": "audit", "state": "queued"}).json()["jobs"]] == []
            pending = admin.get(f"/admin/jobs/{running.id}/report")
            assert pending.status_code == 202 and pending.json()["job"]["state"] == "running"
            with svc.client("globex") as c:  # feedback after it started: not in what it read
                body = {"type": "comparison", "user": "late", "prompt": "Tea?", "chosen": "Tea.", "rejected": "Water.",
                        "attributes": {"segment": "minority"}}
                assert c.post("/v1/feedback", json=body).status_code == 201
            again = admin.post("/admin/jobs", json=job_request)  # moves it in first, as the audit route does
            assert again.status_code == 201, again.text
            queued.append(again.json()["id"])
        finally:
            for job_id in queued:
                admin.post(f"/admin/jobs/{job_id}/cancel")
            state.runner.purge(running.id)


@pytest.mark.skipif(not (SHARED_DATA / "anthropic_persona").is_dir(), reason="persona data not present")
def test_a_tenants_dashboard_shows_its_own_audits_however_many_another_tenant_ran_since(svc, audited):
    """`/admin/dashboard?tenant=umbrella` shows umbrella's latest audit and its audits over time. Before, `?tenant=` chose
    only whose answers describe the prototypes: the page read the newest 50 audits of every tenant, so it showed
    globex's latest audit, and 50 audits of globex since pushed umbrella's off the page altogether."""
    state = svc.server.server.config.app.state.admin
    (theirs,) = [j for j in state.runner.list(kind="audit", state="succeeded") if j.params.get("tenant") == "umbrella"]
    busy = next(j for j in state.runner.list(kind="audit", state="succeeded") if j.params.get("tenant") == "globex")
    stored = state.report(busy)
    added = []
    try:
        for i in range(50):  # a busy tenant's audits, newer than umbrella's (as its jobs leave them)
            job = Job(id=f"busy-audit-{i:02d}", kind="audit", params=busy.params, state="succeeded", created_at=time.time() + i,
                      result_path="result.json")
            state.runner.store.add(job)
            added.append(job.id)
            state.runner.store.path(job.id, "result.json").write_bytes(
                report_encoder.encode(msgspec.structs.replace(stored, created_at=job.created_at)))
        with svc.client("admin") as admin:
            page = admin.get("/admin/dashboard", params={"tenant": "umbrella"}).text
            assert "Audit of tenant <bdi>umbrella</bdi> by <b><bdi>segment</bdi></b>" in page, page
            chart = page.split('id="worst-group-over-time"')[1].split("</svg>")[0]
            assert chart.count('class="point personalized"') == 1, chart
            assert "<td>tenant <bdi>globex</bdi></td>" not in page  # the table: umbrella's audits
            every = admin.get("/admin/dashboard").text  # every tenant's page: the latest of any tenant, as before
            assert "Audit of tenant <bdi>globex</bdi>" in every
    finally:
        for job_id in added:
            state.runner.purge(job_id)


@dataclass
class RunningAudit:
    """A running audit's record (`job`, no worker behind it), the audit route's parameters that find it (`params`), and
    the audits the test's polls queued instead (`queued`)."""

    job: Job
    params: dict
    queued: list[str] = field(default_factory=list)

    def poll(self, admin) -> str:
        """The id of the audit a `wait=0` poll of `params` answers with (202: queued or running), kept in `queued`."""
        polled = admin.get("/admin/audits/fairness", params=self.params | {"wait": 0})
        assert polled.status_code == 202, polled.text
        self.queued.append(polled.json()["job"]["id"])
        return self.queued[-1]


@contextlib.contextmanager
def audit_running(svc, job_id: str, tenant: str, started: float) -> Iterator[RunningAudit]:
    """A running audit `job_id` of `tenant`'s segments recorded as started at `started` (seconds since the epoch); on the
    way out the audits the test's polls queued are cancelled and the record purged."""
    state = svc.server.server.config.app.state.admin
    params = {"group_by": "segment", "tenant": tenant, "min_group_size": 1, "min_comparisons": 20}
    running = RunningAudit(Job(id=job_id, kind="audit", params=params | {"store": svc.runtime.settings.lancedb_uri},
                               state="running", created_at=started, started_at=started), params)
    state.runner.store.add(running.job)
    try:
        yield running
    finally:
        with svc.client("admin") as admin:
            for queued in running.queued:
                if queued != job_id:
                    admin.post(f"/admin/jobs/{queued}/cancel")
        state.runner.purge(job_id)


def test_a_poll_while_the_feedback_worker_is_past_its_commit_does_not_get_an_audit_that_started_before_it(svc):
    """The audit route's `wait=0` poll during a running audit, right after feedback whose batch the worker committed
    and has not finished (its hooks run after the commit: the compaction, the refits, then the admin's). Before, the
    time feedback last moved in was set by the admin's hook, the last of them: the poll's move found nothing pending
    (the worker held its lock; the rows were done) and the time not yet set, so it was given the running audit, which
    started before that commit and did not read the feedback (as if no feedback had come since)."""
    import threading

    committed, go_on = threading.Event(), threading.Event()

    def compacting(rows):  # what runs between the batch's commit and the admin's hook (`after_move`: a compaction)
        if any(r.user_id == "late-in-the-batch" for r in rows):
            committed.set()
            go_on.wait(60)

    with audit_running(svc, "audit-running-before-the-commit", "globex", time.time()) as audit:
        svc.runtime.moved_hooks.insert(0, compacting)
        try:
            with svc.client("globex") as c, svc.client("admin") as admin:
                body = {"type": "comparison", "user": "late-in-the-batch", "prompt": "Tea?", "chosen": "Tea.", "rejected": "Water.",
                        "attributes": {"segment": "minority"}}
                assert c.post("/v1/feedback", json=body).status_code == 201
                assert committed.wait(60)  # in the table; the worker still in its hooks
                assert audit.poll(admin) != audit.job.id, "the running audit started before the feedback's commit and did not read it"
        finally:
            go_on.set()
            svc.runtime.moved_hooks.remove(compacting)


def test_an_audit_running_since_before_the_service_started_is_not_taken_to_have_read_what_is_stored(svc):
    """A running audit whose record says it started before this service did (a Ray actor a restarted service attached
    to; the table may hold comparisons the stopped service moved in after it started, which this one was never told
    of): a poll queues an audit. Before, the time feedback last moved in was that of this process's moves only, none
    for a tenant with no feedback since the start, so the audit of before the restart was given."""
    with audit_running(svc, "audit-running-since-before-the-start", "initech", time.time() - 3600) as audit, \
            svc.client("admin") as admin:
        assert audit.poll(admin) != audit.job.id


def test_a_poll_after_a_users_delete_does_not_get_an_audit_that_started_before_it(svc):
    """A DELETE while an audit runs: the audit read the user's comparisons, so when it ends the groups they were in are
    withheld from its report (`keep_audit_members`). Before, a poll after the DELETE was given that audit (no feedback
    had moved in since it started): the admin who deleted a user and asked again waited for a report without those
    groups, where an audit started after the DELETE shows them, figured without the user."""
    with svc.client("globex") as c:
        body = {"type": "comparison", "user": "leaving", "prompt": "Tea?", "chosen": "Tea.", "rejected": "Water.",
                "attributes": {"segment": "minority"}}
        assert c.post("/v1/feedback", json=body).status_code == 201
        assert c.get("/v1/users/leaving").status_code == 200  # moved into the table (a read moves the user's rows)
    with audit_running(svc, "audit-running-before-the-delete", "globex", time.time()) as audit, \
            svc.client("globex") as c, svc.client("admin") as admin:
        assert c.delete("/v1/users/leaving").status_code == 200
        assert audit.poll(admin) != audit.job.id, "the running audit read the deleted user's comparisons"


def test_a_tenants_dashboard_lists_only_that_tenants_jobs(svc):
    """`/admin/dashboard?tenant=umbrella` lists umbrella's jobs only: no job of another tenant (its user ids, its
    parameters, its errors), none for the whole service (a population model, an audit of every tenant), and counts
    only umbrella's in the job chart. Before (admin43 made the audits per tenant, not the job list) it listed the
    newest 200 jobs of every tenant, so umbrella's page named acme's users."""
    state = svc.server.server.config.app.state.admin
    now = time.time()
    jobs = [Job(id="tenant44-acme-adapter", kind="adapter", params={"tenant": "acme", "user": "acme-only-user-7q"}, state="failed",
                created_at=now, error="exit code 1: acme-only-error-7q"),
            Job(id="tenant44-default-adapter", kind="adapter", params={"user": "default-only-user-7q"}, state="failed", created_at=now),
            Job(id="tenant44-population", kind="pal", params={"protocol": "persona"}, state="failed", created_at=now),
            Job(id="tenant44-umbrella-adapter", kind="adapter", params={"tenant": "umbrella", "user": "umbrella-user-7q"},
                state="cancelled", created_at=now)]
    try:
        for job in jobs:
            state.runner.store.add(job)
        with svc.client("admin") as admin:
            page = admin.get("/admin/dashboard", params={"tenant": "umbrella"}).text
            every = admin.get("/admin/dashboard").text
    finally:
        for job in jobs:
            state.runner.purge(job.id)
    table = page.split('<table id="jobs">')[1].split("</table>")[0]
    assert "umbrella-user-7q" in table, table
    for other in ("acme-only-user-7q", "acme-only-error-7q", "default-only-user-7q", "tenant44-population"):
        assert other not in page, other
    umbrellas = [j for j in state.runner.list(limit=1 << 30) if j.params.get("tenant") == "umbrella"]
    assert table.count('<th scope="row">') == min(25, len(umbrellas) + 1), table  # its stored jobs and the one added
    assert "Jobs of tenant <bdi>umbrella</bdi>" in page
    for job in jobs:  # every tenant's page: every job, as before
        assert job.id in every, job.id


def test_a_tenants_dashboard_finds_its_jobs_behind_the_newest_limit_of_others(svc, monkeypatch):
    """A tenant's jobs are chosen before the page's limit (DASHBOARD_JOBS, 200), as tenant44 says: a busy tenant's newer
    jobs, as many as the limit, do not leave umbrella's page without umbrella's job. The test above has too few jobs to
    tell (choosing after the limit passed it). The limit is cut to 3 here: 200 job records, each written and synced,
    took 2.5 s."""
    import service.admin.controllers

    monkeypatch.setattr(service.admin.controllers, "DASHBOARD_JOBS", 3)
    state = svc.server.server.config.app.state.admin
    now = time.time()
    own = Job(id="t44-umbrella-older", kind="adapter", params={"tenant": "umbrella", "user": "umbrella-older-7q"}, state="failed",
              created_at=now - 60)
    busy = [Job(id=f"t44-acme-{i}", kind="adapter", params={"tenant": "acme", "user": f"acme-{i}"}, state="failed", created_at=now)
            for i in range(3)]
    try:
        for job in (own, *busy):
            state.runner.store.add(job)
        with svc.client("admin") as admin:
            page = admin.get("/admin/dashboard", params={"tenant": "umbrella"}).text
    finally:
        for job in (own, *busy):
            state.runner.purge(job.id)
    assert "umbrella-older-7q" in page.split('<table id="jobs">')[1].split("</table>")[0]
    assert "t44-acme-" not in page


def test_another_tenants_backlog_does_not_hold_up_a_tenants_audit(svc):
    """An audit of globex moves globex's acknowledged feedback into the table first, not every tenant's: acme's
    backlog (a large import being embedded; here rows held in the log by `Ingestor.paused`) is not what globex's audit
    covers. Before (until session 44) the audit moved every tenant's backlog first, so acme's import made globex's
    audit a 503 `feedback_backlog` naming acme's rows, or held it for as long as they took to embed."""
    from tests.service.test_break20_delete import give_comparisons

    rt = svc.runtime
    with svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin:
        give_comparisons(globex, "gil-t44", "tea", n=2)
        rt.ingest.flush()  # globex's: in the table
        with rt.ingest.paused():
            give_comparisons(acme, "ann-t44", "tea", n=2)  # acme's: acknowledged, still in the log
            r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "min_comparisons": 7,
                                                           "wait": 0}, timeout=20)
            assert rt.ingest.pending_rows("acme") >= 2  # left to the worker
            give_comparisons(globex, "gil-t44", "rain", n=2)  # globex's own backlog: its audit still covers it (a 503
            own = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "min_comparisons": 7,
                                                             "wait": 0}, timeout=20)  # naming globex's rows only)
        assert r.status_code == 202, r.text
        assert r.json()["job"]["params"]["tenant"] == "globex"
        admin.post(f"/admin/jobs/{r.json()['job']['id']}/cancel")
        assert own.status_code == 503 and own.json()["error"]["code"] == "feedback_backlog", own.text
        assert own.json()["error"]["message"].startswith("2 acknowledged feedback rows"), own.text


# An adapter job's worker of a second (session locks52), for the promotion tests below.

COPY_ADAPTER = """
import json, shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True)
print(json.dumps({"held_out_acc_after": 0.9, "artifact": sys.argv[2]}))
"""


@contextlib.contextmanager
def adapters_copied(runner, source: Path) -> Iterator[None]:
    """The runner's adapter jobs, while inside, copy the adapter folder `source` into their artifact folder and report a
    held-out accuracy (a worker of a second, not a training run: what is tested is what the runner and the service do
    once it ended); their promotion is the real one (`Admin.put_into_service`, its key `adapter/<tenant>/<user>`)."""
    import sys

    from training.jobs.kinds import JobKind

    real = runner.kinds["adapter"]
    runner.kinds["adapter"] = JobKind("adapter", lambda job, out: [sys.executable, "-c", COPY_ADAPTER, str(source), str(out)],
                                      required=("user", "data"), promotion_key=real.promotion_key)
    try:
        yield
    finally:
        runner.kinds["adapter"] = real


def worker_ended(runner, job_id: str, timeout: float = 60) -> None:
    """Wait until the dispatcher has seen job `job_id`'s worker exit (it is no longer among the runner's workers)."""
    deadline = time.monotonic() + timeout
    while runner.get(job_id).state == "queued" or job_id in runner._running:
        assert time.monotonic() < deadline, f"job {job_id}'s worker never ended"
        time.sleep(0.05)


def test_a_delete_of_a_user_whose_adapter_job_is_being_promoted_does_not_deadlock(svc, tiny_generator_dir, tmp_path):
    """Session 51. An adapter's promotion (`Admin.put_into_service`) takes the user's lock; a DELETE of that user holds
    it and stops their jobs (`Admin.forget_jobs`: `runner.purge`, which takes the runner's lock). When the job runner's
    dispatcher promoted under its own lock, each waited for the other for good: the DELETE never answered, and no job
    of any tenant was launched or finished again (locks51 made the promotion give up once a DELETE of the user ran
    here). Since locks52 the promotion waits on a thread of its own, outside the runner's lock (driven here through the
    real dispatcher: the job's worker ends while the DELETE holds the user's lock): the DELETE purges the job meanwhile,
    and the promotion, once it has the user's lock, finds the job gone: nothing of it is served, kept or named."""
    import threading

    from service.users.services import adapter_folder
    from tests.service.test_service_adapters import random_adapter

    user = "locks51p"
    rt = svc.runtime
    admin = svc.server.server.config.app.state.admin
    runner = admin.runner
    source = random_adapter(tiny_generator_dir, tmp_path / "adapter", rt.adapters.base_model, "user", 51)
    deleting, go = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}
    with svc.client("acme") as c:
        for i in range(2):
            assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tea {i}?", "chosen": "Yes.",
                                                "rejected": "No."}).status_code == 201
        rt.ingest.flush()

        def noted(forget) -> int:  # the DELETE's first step, under the store's turn and the user's lock
            deleting.set()
            assert go.wait(60), "the test never let the DELETE go on"
            return 0

        rt.delete_hooks.insert(0, noted)
        delete = threading.Thread(target=lambda: outcome.update(delete=c.delete(f"/v1/users/{user}")), daemon=True)
        with adapters_copied(runner, source):
            try:
                delete.start()
                assert deleting.wait(30), "the DELETE never began"
                job = runner.submit("adapter", {"tenant": "acme", "user": user, "data": "unread"})
                worker_ended(runner, job.id)  # its promotion waits for the user's lock, which the DELETE holds
                go.set()
                delete.join(15)
                hung = delete.is_alive()
            finally:
                go.set()
                rt.delete_hooks.remove(noted)
                delete.join(60)
            deadline = time.monotonic() + 30
            while runner._promotion_due(job.id) and time.monotonic() < deadline:  # the promotion ends: it finds the job gone
                time.sleep(0.05)
    assert not hung, "the DELETE and the adapter job's promotion waited for each other"
    assert outcome["delete"].status_code == 200, outcome["delete"].text
    assert not runner._promotion_due(job.id), "the promotion never ended"
    assert runner.get(job.id) is None and not [j for j in runner.list() if j.params.get("user") == user]  # purged, never recorded again
    assert not (runner.config.folder / "artifacts" / job.id).exists()
    assert not adapter_folder(rt, "acme", user).exists() and rt.store.get_user("acme", user) is None  # nothing served
    assert runner.promotions.served(f"adapter/acme/{user}") is None


def test_a_cancel_waiting_for_the_job_runner_holds_up_no_other_request(svc):
    """The job runner's dispatcher holds its lock while it polls and finishes jobs (and, until session locks52, while it
    promoted them: an adapter copied in, a population model swapped in, a wait for its user's lock). A job's cancel takes
    that lock too (`LocalJobRunner.cancel`). Before (review of locks51) POST /admin/jobs/{id}/cancel ran on the event loop
    (`sync_to_thread=False`): while it waited, no request of any tenant was answered, /health included. Now it waits
    on a thread of its own: globex's request is answered meanwhile, and the cancel once the dispatcher lets go."""
    import threading

    runner = svc.server.server.config.app.state.admin.runner
    held, release = threading.Event(), threading.Event()
    answers: dict[str, object] = {}

    def dispatcher_promoting() -> None:  # as `LocalJobRunner._loop` holds its lock over a long promotion
        with runner._lock:
            held.set()
            release.wait(60)

    with svc.client("admin") as admin, svc.client("globex") as globex:
        job = admin.post("/admin/jobs", json={"kind": "em", "params": {"protocol": "persona", "groups": 2, "max_iter": 1000}}).json()
        holding = threading.Thread(target=dispatcher_promoting, daemon=True)
        holding.start()
        assert held.wait(30)
        cancel = threading.Thread(target=lambda: answers.update(cancel=admin.post(f"/admin/jobs/{job['id']}/cancel")), daemon=True)
        try:
            cancel.start()
            time.sleep(0.2)  # the cancel reaches the runner's lock
            started = time.monotonic()
            try:
                answers["globex"] = globex.get("/v1/users/nobody-locks51", timeout=10)
            except Exception as exc:  # httpx's timeout: the event loop answered nothing
                answers["globex"] = exc
            took = time.monotonic() - started
        finally:
            release.set()
            holding.join(30)
            cancel.join(60)
        assert wait_job(admin, job["id"])["state"] == "cancelled"
    assert not isinstance(answers["globex"], Exception), f"globex's request waited for the job runner's lock: {answers['globex']!r}"
    assert answers["globex"].status_code == 404 and took < 10, answers["globex"].text
    assert answers["cancel"].status_code == 200 and answers["cancel"].json()["cancel_requested"] is True, answers["cancel"].text


def test_an_adapter_promotion_waiting_for_its_users_chat_holds_up_no_other_job(svc, tiny_generator_dir, tmp_path):
    """Until session locks52 the job runner's dispatcher promoted a finished adapter job under its own lock (held here
    by hand around the real `Admin.put_into_service`, as it was; since then a promotion runs on a thread of its own, and
    this keeps that it never waits for a chat either); the
    promotion copies the new adapter in and drops the old one from memory, which waits for
    the user's chats still generating with it. Before (review of locks51) it waited there, holding the runner's lock:
    no job of any tenant was launched, finished or cancelled until acme's user's chat ended (another job's cancel
    waited). Now the old adapter leaves the pool at once and is dropped once that chat ends, on a thread of its own:
    the cancel is answered meanwhile, and the user's next chat is generated with the new adapter."""
    import threading

    from pluralign.policy.adapters import adapter_name, read_meta
    from service.users.services import register_adapter
    from tests.service.test_generation_turns import wait_until
    from tests.service.test_service_adapters import random_adapter
    from tests.serving import adapter_generation_held

    rt, user = svc.runtime, "locks51chat"
    admin = svc.server.server.config.app.state.admin
    runner, pool = admin.runner, rt.adapters
    name = adapter_name("acme", user)
    register_adapter(rt, "acme", user, random_adapter(tiny_generator_dir, tmp_path / "old", pool.base_model, "user", 11))
    new = random_adapter(tiny_generator_dir, tmp_path / "new", pool.base_model, "user", 12)
    answers: dict[str, object] = {}
    chat = {"model": "pluralign", "messages": [{"role": "user", "content": "Tea?"}], "user": user, "temperature": 0,
            "pluralign": {"rerank": False, "shots": 0}}
    with adapter_generation_held(rt, name) as (generating, proceed):
        with svc.client("acme") as c, svc.client("admin") as ops:
            for i in range(2):
                assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tea {i}?", "chosen": "Yes.",
                                                    "rejected": "No."}).status_code == 201
            rt.ingest.flush()
            chatting = threading.Thread(target=lambda: answers.update(chat=c.post("/v1/chat/completions", json=chat)), daemon=True)
            chatting.start()
            assert generating.wait(60), "the chat never began generating with the user's adapter"
            promoted = threading.Event()

            def promoting() -> None:  # as the dispatcher promoted the user's finished adapter job until locks52: under the runner's lock
                with runner._lock:
                    job, _ = admin.submit("adapter", {"tenant": "acme", "user": user})  # not launched: the lock is held
                    answers["job"] = job
                    promoted.set()
                    admin.put_into_service(msgspec.structs.replace(job, artifact=str(new)), f"adapter/acme/{user}")

            other = ops.post("/admin/jobs", json={"kind": "em", "params": {"protocol": "persona", "groups": 2, "max_iter": 1000}}).json()
            dispatcher = threading.Thread(target=promoting, daemon=True)
            dispatcher.start()
            assert promoted.wait(30)
            started = time.monotonic()
            cancel = threading.Thread(target=lambda: answers.update(cancel=ops.post(f"/admin/jobs/{other['id']}/cancel")), daemon=True)
            cancel.start()
            cancel.join(15)
            took, held = time.monotonic() - started, cancel.is_alive()
            proceed.set()
            for thread in (cancel, dispatcher, chatting):
                thread.join(60)
            runner.purge(answers["job"].id)
            assert answers["chat"].status_code == 200 and answers["chat"].json()["pluralign"]["adapter"] == name, answers["chat"].text
            wait_until(lambda: not pool._dropping, "the old adapter is dropped once the chat ended")
            again = c.post("/v1/chat/completions", json=chat)
    assert not held, "another job's cancel waited for acme's user's chat (the dispatcher's promotion held the runner's lock)"
    assert took < 15 and answers["cancel"].status_code == 200, answers["cancel"].text
    assert again.status_code == 200 and again.json()["pluralign"]["adapter"] == name, again.text
    assert pool.loaded[name][1] == read_meta(new).created_at  # the promoted adapter serves the user now


def test_an_adapter_promotion_waiting_for_its_users_refit_holds_up_no_other_tenants_job(svc, tiny_generator_dir, tmp_path):
    """Session locks52. An adapter's promotion (`Admin.put_into_service`) takes its user's lock, which a stated-preferences
    change holds over its refit. Before, the job runner's dispatcher promoted under its own lock (`LocalJobRunner._loop`):
    while acme's user's refit ran, no job of any tenant was launched or finished (globex's job stayed queued). Now the
    promotion waits on a thread of its own, outside the runner's lock: globex's job runs and is promoted meanwhile, and
    acme's once the refit let the user's lock go."""
    import threading

    from pluralign.policy.adapters import adapter_name
    from tests.service.test_service_adapters import random_adapter
    from tests.serving import refit_held

    rt, admin = svc.runtime, svc.server.server.config.app.state.admin
    runner, users = admin.runner, {"acme": "locks52a", "globex": "locks52g"}
    source = random_adapter(tiny_generator_dir, tmp_path / "adapter", rt.adapters.base_model, "user", 52)
    for tenant, user in users.items():
        with svc.client(tenant) as c:
            for i in range(2):
                assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Tea {i}?", "chosen": "Yes.",
                                                    "rejected": "No."}).status_code == 201
    rt.ingest.flush()
    rt.wait_for_background()
    answers: dict[str, object] = {}
    jobs: dict[str, Job] = {}
    with adapters_copied(runner, source), refit_held("acme", users["acme"]) as (refitting, proceed), svc.client("acme") as c:
        patch = threading.Thread(target=lambda: answers.update(patch=c.patch(f"/v1/users/{users['acme']}/stated-preferences",
                                                                             json={"preferences": {"length": "less"}})), daemon=True)
        try:
            patch.start()
            assert refitting.wait(30), "the stated change never refitted the user"
            jobs["acme"] = runner.submit("adapter", {"tenant": "acme", "user": users["acme"], "data": "unread"})
            worker_ended(runner, jobs["acme"].id)  # its promotion waits for acme's user's lock now
            jobs["globex"] = runner.submit("adapter", {"tenant": "globex", "user": users["globex"], "data": "unread"})
            try:
                other = runner.wait(jobs["globex"].id, timeout=15)
            except TimeoutError as exc:
                other = exc
            waiting = runner.get(jobs["acme"].id)
        finally:
            proceed.set()
            patch.join(60)
        done = runner.wait(jobs["acme"].id, timeout=30)
    try:
        assert not isinstance(other, Exception), f"globex's job waited for acme's user's refit: {other}"
        assert other.state == "succeeded" and other.promoted is True, other
        assert waiting.state == "running" and waiting.promoted is None, waiting  # its promotion was still waiting
        assert answers["patch"].status_code == 200, answers["patch"].text
        assert done.state == "succeeded" and done.promoted is True, done
        for tenant, user in users.items():
            assert rt.store.get_user(tenant, user).adapter == adapter_name(tenant, user)
            assert rt.adapters.registry.meta(tenant, user) is not None
    finally:
        for job in jobs.values():
            runner.purge(job.id)


def test_a_delete_resumed_for_a_user_who_came_back_leaves_their_newer_adapter_to_be_promoted(svc, tiny_generator_dir, tmp_path):
    """Session locks52. A DELETE stopped part way (here after the store's step: a population file it could not rewrite)
    is finished from the journal (`UnfinishedDeletes`); for a user who came back meanwhile it removes what they sent
    before it began, and keeps what they sent since (`forget_before`), an adapter job queued since included (its
    snapshot holds only what they sent since). Before, that job's promotion, finding the resumed DELETE
    running (`DeleteJournal.running`, the give-up locks51 added against a deadlock), gave up: the adapter trained on
    what the user sent since was kept, not served. Now the promotion waits for the user's lock outside the job
    runner's lock, and once the DELETE is done it is served."""
    import threading

    from pluralign.policy.adapters import adapter_name
    from service.runtime import ForgetIncomplete
    from service.users.services import adapter_folder, delete
    from tests.service.test_service_adapters import random_adapter

    user, rt = "locks52back", svc.runtime
    runner = svc.server.server.config.app.state.admin.runner
    source = random_adapter(tiny_generator_dir, tmp_path / "adapter", rt.adapters.base_model, "user", 53)

    def give(c, what: str) -> None:
        for i in range(2):
            assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"{what} {i}?", "chosen": "Yes.",
                                                "rejected": "No."}).status_code == 201
        rt.ingest.flush()

    def unwritable(forget):  # a population file that cannot be rewritten: the DELETE stops after the store's step
        raise ForgetIncomplete(0, ["pal-promoted/users.jsonl: read-only"])

    with svc.client("acme") as c:
        give(c, "Before")
        rt.forget_population_users = unwritable
        try:
            stopped = c.delete(f"/v1/users/{user}")
        finally:
            del rt.forget_population_users
        assert stopped.status_code == 500, stopped.text
        entry = rt.delete_journal.unfinished("acme", user)  # left for the journal's next pass
        assert entry is not None and rt.store.count_comparisons("acme", user) == 0
        time.sleep(0.01)
        give(c, "Since")  # the user comes back before that pass
    rt.wait_for_background()
    deleting, go = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def noted(forget) -> int:  # the resumed DELETE's first step, under the store's turn and the user's lock
        deleting.set()
        assert go.wait(60), "the test never let the DELETE go on"
        return 0

    rt.delete_hooks.insert(0, noted)
    resumed = threading.Thread(target=lambda: outcome.update(counts=delete(rt, "acme", user, entry)), daemon=True)
    with adapters_copied(runner, source):
        try:
            resumed.start()
            assert deleting.wait(30), "the resumed DELETE never began"
            job = runner.submit("adapter", {"tenant": "acme", "user": user, "data": "unread"})  # queued since: theirs
            worker_ended(runner, job.id)
            time.sleep(0.5)  # its promotion meets the resumed DELETE running (before: it gave up within 0.05 s)
            go.set()
            resumed.join(30)
        finally:
            go.set()
            rt.delete_hooks.remove(noted)
            resumed.join(60)
        done = runner.wait(job.id, timeout=30)
    try:
        assert sum(outcome["counts"].values()) == 0, outcome  # what they sent before it began went with the first try
        assert rt.store.count_comparisons("acme", user) == 2 and rt.delete_journal.unfinished("acme", user) is None
        assert done.state == "succeeded" and done.promoted is True, done.promotion_note
        assert rt.store.get_user("acme", user).adapter == adapter_name("acme", user)
        assert adapter_folder(rt, "acme", user).is_dir()
    finally:
        runner.purge(job.id)


def test_a_delete_resumed_for_a_user_who_came_back_while_their_old_rows_were_stored_serves_no_adapter_made_since(
        svc, tiny_generator_dir, tmp_path):
    """Session locks52. A DELETE whose process was killed before its store's step left the user's rows stored; the user
    came back before the journal's pass, and an adapter job was queued: its snapshot holds the rows the DELETE removes
    as well as the new ones. Finished from the journal (`forget_before`), the DELETE removed the old rows and kept that
    job (made after the DELETE began), whose adapter was then served, trained on deleted rows. Now what was made since
    it began goes too when the old rows were still stored as it looks: the job is purged, its promotion finds it gone,
    and nothing of it is served; what the user sent since stays."""
    import threading

    from service.users.services import adapter_folder, delete
    from tests.service.test_service_adapters import random_adapter

    user, rt = "locks52old", svc.runtime
    runner = svc.server.server.config.app.state.admin.runner
    source = random_adapter(tiny_generator_dir, tmp_path / "adapter", rt.adapters.base_model, "user", 54)

    def give(c, what: str) -> None:
        for i in range(2):
            assert c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"{what} {i}?", "chosen": "Yes.",
                                                "rejected": "No."}).status_code == 201
        rt.ingest.flush()

    with svc.client("acme") as c:
        give(c, "Before")
        entry = rt.delete_journal.begin("acme", user, time.time())  # a DELETE begun, and its process killed before any step
        rt.delete_journal.release(entry)
        time.sleep(0.01)
        give(c, "Since")  # the user comes back: their old rows are still stored
    rt.wait_for_background()
    outcome: dict[str, object] = {}
    with adapters_copied(runner, source):
        job = runner.submit("adapter", {"tenant": "acme", "user": user, "data": "unread"})  # as the trigger's, on old and new rows
        worker_ended(runner, job.id)
        resumed = threading.Thread(target=lambda: outcome.update(counts=delete(rt, "acme", user, entry)), daemon=True)
        resumed.start()
        resumed.join(30)
        deadline = time.monotonic() + 30
        while runner._promotion_due(job.id) and time.monotonic() < deadline:
            time.sleep(0.05)
    served = rt.store.get_user("acme", user)
    try:
        assert outcome["counts"]["preferences"] == 2, outcome  # what they sent before it began went
        assert rt.store.count_comparisons("acme", user) == 2 and rt.delete_journal.unfinished("acme", user) is None
        assert runner.get(job.id) is None, runner.get(job.id)  # made from the old rows: purged, never served
        assert not adapter_folder(rt, "acme", user).exists() and (served is None or served.adapter is None), served
    finally:
        runner.purge(job.id)


def test_a_delete_resumed_after_other_deletes_purged_old_versions_keeps_what_was_made_after_its_store_step(svc):
    """Review of jobs53. A DELETE stopped after its store's step (a 500: a population file it could not rewrite) is
    finished from the journal for a user who came back; what was made after their old rows left the store holds none
    of them and stays (an adapter job of what they sent since: locks52, jobs53). When those rows went, the review of
    jobs53 first read from the store's kept versions (`Store.received_before_left_at`), but another user's DELETE
    meanwhile purges every older version of the table (one process on the store: at once): the first kept one was
    then committed after the returning user's job was queued, which was purged with their old rows. Now the DELETE
    notes in its journal entry when its store's step was done (`Unfinished.rows_left_at`), and that is when they left."""
    from service.runtime import ForgetIncomplete
    from service.users.services import delete

    user, rt = "rj53back", svc.runtime
    runner = svc.server.server.config.app.state.admin.runner

    def give(c, who: str, what: str) -> None:
        for i in range(2):
            assert c.post("/v1/feedback", json={"type": "comparison", "user": who, "prompt": f"{what} {i}?", "chosen": "Yes.",
                                                "rejected": "No."}).status_code == 201
        rt.ingest.flush()

    def unwritable(forget):  # a population file that cannot be rewritten: the DELETE stops after the store's step
        raise ForgetIncomplete(0, ["pal-promoted/users.jsonl: read-only"])

    with svc.client("acme") as c:
        give(c, user, "Before")
        give(c, "rj53other", "Other")
        rt.forget_population_users = unwritable
        try:
            assert c.delete(f"/v1/users/{user}").status_code == 500
        finally:
            del rt.forget_population_users
        entry = rt.delete_journal.unfinished("acme", user)  # left for the journal's next pass
        assert entry is not None and rt.store.count_comparisons("acme", user) == 0
        time.sleep(0.01)
        give(c, user, "Since")  # the user comes back, and an adapter job of what they sent since is queued
        job = runner.submit("adapter", {"tenant": "acme", "user": user, "data": "unread"})
        time.sleep(0.01)
        assert c.delete("/v1/users/rj53other").status_code == 200  # its purge removes the table's older versions
    try:
        delete(rt, "acme", user, entry)  # the journal's pass
        assert rt.store.count_comparisons("acme", user) == 2 and rt.delete_journal.unfinished("acme", user) is None
        assert runner.get(job.id) is not None, "the job queued after the user came back was purged"
    finally:
        runner.purge(job.id)


def test_the_every_tenant_dashboard_names_the_tenant_of_each_answer_it_shows(svc):
    """trial16_52: the dashboard without `?tenant=` describes the prototypes by every tenant's stored answers, and
    showed them side by side with nothing to say whose they are ("BETA SECRET ..." under acme's): an auditor could not
    tell which tenant's texts the page holds. Each answer there now names its tenant, read back here against what that
    tenant stored; a tenant's own page (`?tenant=`) needs no such label."""
    import html as html_lib
    import re

    for tenant, word in (("label-a", "Alpha"), ("label-b", "Bravo")):
        svc.keys.setdefault(tenant, svc.runtime.keys.issue(tenant))
        with svc.client(tenant) as c:
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "u", "prompt": f"{word} question?",
                                                "chosen": f"{word} short.", "rejected": f"{word}: an answer a good deal longer."}).status_code == 201
        svc.runtime.ingest.flush(tenant)
    with svc.client("admin") as c:
        every, own = (c.get("/admin/dashboard", params=p).text for p in ({}, {"tenant": "label-a"}))
    items = re.findall(r"<li>(.*?)</li>", every.split('id="prototypes"')[1].split("</table>")[0])
    assert items
    for item in items:
        named = re.search(r'tenant <bdi>(.*?)</bdi>', item)
        assert named, item
        answer = re.search(r"<br><bdi>(.*?)</bdi> <span", item).group(1)
        stored = {html_lib.escape(t, quote=True) for t in svc.runtime.store.answers_sample(html_lib.unescape(named.group(1)), 100_000)[1]}
        assert any(s.startswith(answer.rstrip("\u2026")) for s in stored), (named.group(1), answer)
    assert "tenant <bdi>" not in own.split('id="prototypes"')[1]


def test_bidi_controls_in_stored_text_are_shown_not_obeyed_on_the_dashboard_and_in_the_summary(svc):
    """pool52's reproducer: a stored answer holding U+202E RIGHT-TO-LEFT OVERRIDE read reversed inside its <bdi> on
    the dashboard ("LUN htiw 1 tpmorp live" for "evil prompt 1 with NUL"), and so in the profile's summary sentence
    that quotes it: an auditor read another text than the one stored. Bidi controls (Unicode's Bidi_Control: the
    embeddings, overrides, isolates and marks) in stored text are now shown as their code points ("[U+202E]"), on the
    page in a marked span naming the character, in the summary as text; the stored text and its JSON stay as sent."""
    rt = svc.runtime
    svc.keys.setdefault("bidi52", rt.keys.issue("bidi52"))
    prompt, chosen, rejected = "\u202eevil prompt 1", "\u202eLUN htiw 1 tpmorp live", "plain \u2067answer\u2069 two"
    state = svc.server.server.config.app.state.admin
    job = Job(id="pool52-bidi-job", kind="adapter", params={"tenant": "bidi52", "user": "u\u202eser"}, state="failed",
              created_at=time.time(), error="exit code 1: \u202ereversed")
    state.runner.store.add(job)
    try:
        with svc.client("bidi52") as c, svc.client("admin") as admin:
            assert c.post("/v1/feedback", json={"type": "comparison", "user": "overrider", "prompt": prompt,
                                                "chosen": chosen, "rejected": rejected}).status_code == 201
            rt.ingest.flush_user("bidi52", "overrider")
            profile = c.get("/v1/users/overrider").json()
            page = admin.get("/admin/dashboard", params={"tenant": "bidi52"}).text
    finally:
        state.runner.purge(job.id)
    for control in ("\u202e", "\u2067", "\u2069"):
        assert control not in page
    shown = '<span class="bidi-control" title="U+202E RIGHT-TO-LEFT OVERRIDE">[U+202E]</span>'
    prototypes = page.split('id="prototypes"')[1].split("</table>")[0]
    assert f"{shown}evil prompt 1" in prototypes and f"{shown}LUN htiw 1 tpmorp live" in prototypes
    assert "[U+2067]answer[U+2069] two" in re.sub(r"<span[^>]*>|</span>", "", prototypes)
    jobs = page.split('<table id="jobs">')[1].split("</table>")[0]
    assert f"u{shown}ser" in jobs and f"exit code 1: {shown}reversed" in jobs
    sentence = next(s for s in profile["summary"]["sentences"] if "prototype" in s)
    assert "\u202e" not in sentence and "\u2067" not in sentence, sentence
    assert "answers like \u201c[U+202E]LUN htiw 1 tpmorp live\u201d" in sentence or \
        "answers like \u201cplain [U+2067]answer[U+2069] two\u201d" in sentence, sentence
    assert profile["summary"]["nearest_prototype"]["highest"][0]["answer"] in (chosen, rejected)  # the data as stored


@pytest.mark.slow  # a job's worker process, ~5-15 s on a loaded 2-core box (make test-cli)
def test_jobs_run_when_the_service_was_given_its_folder_beside_an_empty_data_dir_variable(svc, monkeypatch):
    """Review of trial53: `PLURALIGN_DATA_DIR= pluralign serve --data-dir X` serves X (--data-dir wins over the
    variable), but each job's worker is a `pluralign` command that inherits the service's environment and checks the
    settings first: with the empty variable every job exited 2, "PLURALIGN_DATA_DIR (setting data_dir): `data_dir` is
    empty". The workers are given the service's data folder now, as its store's settings."""
    monkeypatch.setenv("PLURALIGN_DATA_DIR", "")
    with svc.client("admin") as admin:  # an audit of a tenant with nothing stored: its worker runs, then says so
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "nobody53", "wait": 120}, timeout=240)
    assert r.status_code == 400 and "PLURALIGN_DATA_DIR" not in r.text, r.text
    assert "tenant 'nobody53' has no stored comparisons to audit" in r.json()["error"]["message"], r.text


def audit_of_every_tenant_compared_with_those_only(admin, report: dict, job_id: str):
    """An audit of every tenant stored before globex's first (as its job leaves it: a record with no `tenant` param and
    its report, `job_id`) is neither globex's previous nor given theirs, and the dashboard lists it; purged after.
    Returns globex's first audit job."""
    *_, first = [j for j in admin.runner.list(kind="audit", state="succeeded") if j.params.get("tenant") == "globex" and "since" not in j.params]
    every = Job(id=job_id, kind="audit", params={"group_by": "segment", "min_comparisons": 20}, state="succeeded",
                created_at=report["created_at"] - 60, result_path="result.json")
    admin.runner.store.add(every)
    try:
        admin.runner.store.path(every.id, "result.json").write_bytes(
            report_encoder.encode(msgspec.structs.replace(admin.report(first), created_at=every.created_at)))
        assert [r.created_at for r in admin.reports(like=every).readable] == [every.created_at]
        assert every.created_at not in [r.created_at for r in admin.reports(like=first).readable]
        assert every.created_at in [r.created_at for r in admin.reports().readable]  # the dashboard lists it, as every tenant's
    finally:
        admin.runner.purge(every.id)
    return first
