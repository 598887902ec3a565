"""The admin area over real HTTP: admin keys only, jobs in worker processes, audits of stored feedback,
the adapter trigger, and the dashboard."""

from __future__ import annotations

import re
import time
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
    give_twenty_comparisons(svc, "erin")


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


@pytest.mark.skipif(not (SHARED_DATA / "anthropic_persona").is_dir(), reason="persona data not present")
def test_fairness_audit_of_stored_feedback_reports_the_minority_gap_and_the_dashboard_shows_it(svc):
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
            for user, segment in (("kim", "a"), ("lee", "b")):
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
        # a later audit of recent feedback only, compared with the first one
        half = sorted(svc.runtime.store.preferences_for("globex", u)[0][6].created_at for u in {r.user_id for r in records})[0]
        recent = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "globex", "since": half, "min_comparisons": 1}).json()
        assert 0 < recent["comparisons"] < len(records)
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
    (first,) = [j for j in admin.runner.list(kind="audit", state="succeeded") if j.params.get("tenant") == "globex" and "since" not in j.params]
    every = Job(id="audit-of-every-tenant", kind="audit", params={"group_by": "segment", "min_comparisons": 20}, state="succeeded",
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
        assert "<script" not in html and "http://" not in html and "https://" not in html
        # issue 16: the population's prototypes, each shown by stored answers it scores highest and lowest
        assert 'id="prototypes"' in html and 'class="prototype" data-prototype="0"' in html
        import html as html_lib
        shown = re.findall(r"<br>(?:<bdi>)?(.*?)(?:</bdi>)? <span", html.split('id="prototypes"')[1])  # user text in <bdi> (i18n30)
        stored = {html_lib.escape(t, quote=True) for t in svc.runtime.store.answers_sample(None, 100_000)[1]}  # every tenant's
        assert shown and all(any(s.startswith(x.rstrip("…")) for s in stored) for x in shown)


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

    def slow_reports(self, limit=50, **scope):  # as if hundreds of reports were stored: 2 s, or until /health is answered
        reading.set()
        answered.wait(2.0)  # read on the event loop, the /health below waits for these 2 s (it cannot be answered first)
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
        start = time.monotonic()
        assert other.get("/health").status_code == 200
        took = time.monotonic() - start
    answered.set()
    thread.join(60)
    assert answer["r"].status_code == 200, answer["r"].text
    assert took < 1.0, took  # 2 s and more while the reports were read on the event loop


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
