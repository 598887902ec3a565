"""What the dashboard's reads of stored audits cost with many tenants: `--tenants` tenants of `--audits` succeeded
audits each (their job records and reports in a temp jobs folder), read as the page without `?tenant=` reads them
(every tenant's newest 50) and as `?tenant=t0` does (t0's newest 50, then the up to 50 its latest is compared with).
Prints one JSON line.

    OMP_NUM_THREADS=1 python -m benchmarks.dashboard_audits
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from types import SimpleNamespace

from pluralign.fairness.report import AuditReport, GroupMetrics, report_encoder
from service.admin.services import Admin
from training.jobs.record import Job
from training.jobs.store import JobStore


def stored(folder: str, tenants: int, audits: int) -> JobStore:
    store = JobStore(folder)
    start = time.time() - 10 * tenants * audits
    groups = [GroupMetrics(group=f"s{k}", users=5, comparisons=60, personalized_accuracy=0.7, base_accuracy=0.6,
                           personalized_ece=0.1, base_ece=0.1) for k in range(4)]
    for i in range(audits):
        for t in range(tenants):
            job = store.add(Job(id=f"audit-{t:03d}-{i:04d}", kind="audit", params={"group_by": "segment", "tenant": f"t{t}"},
                                state="succeeded", created_at=start + i * tenants + t, result_path="result.json"))
            store.path(job.id, "result.json").write_bytes(report_encoder.encode(AuditReport(
                group_by="segment", created_at=job.created_at, encoder_id="e", personalized_model="online-logistic",
                base_model="b", users=20, comparisons=240, min_comparisons=50, groups=groups)))
    return store


def timed(call, rounds: int = 5) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"min_ms": round(min(times) * 1000, 1), "median_ms": round(sorted(times)[len(times) // 2] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--audits", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = stored(folder, args.tenants, args.audits)
        admin = Admin.__new__(Admin)  # the report reads alone, over this jobs folder (`Admin.reports`)
        admin.runner = SimpleNamespace(store=store, list=lambda kind=None, state=None, limit=100: [
            j for j in store.all() if (kind is None or j.kind == kind) and (state is None or j.state == state)][::-1][:limit])

        def tenant_page() -> int:
            own = admin.reports(tenant="t0")
            return len(admin.reports(like=own.jobs[0]).readable)

        every = admin.reports()
        print(json.dumps({
            "tenants": args.tenants, "audits_each": args.audits,
            "every_tenant": timed(admin.reports), "tenant_page": timed(tenant_page),
            "t0_audits_among_every_tenants_newest_50": sum(1 for j in every.jobs if j.params["tenant"] == "t0"),
            "t0_audits_on_its_line": tenant_page(),
        }))


if __name__ == "__main__":
    main()
