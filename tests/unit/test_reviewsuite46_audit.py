"""Review of suite46 (the fairness audit in numpy): comparisons whose answers embed alike."""

from __future__ import annotations

from pluralign.fairness.audit import AuditConfig, audit
from pluralign.fairness.synthetic import SyntheticConfig, synthetic_comparisons


def test_an_audit_of_comparisons_whose_answers_embed_alike_reports_chance_not_a_crash():
    """Every comparison's two answers embed alike (an uncased encoder, all-MiniLM's, given an edit that changed only
    the case, or two long answers that differ past its 256 tokens): no direction separates them, and both models can
    only say 0.5. Before: the base model's fit over no direction failed, the job with it: a torch RuntimeError until
    suite46, then the CLI line 'pluralign: error: zero-size array to reduction operation maximum which has no
    identity' (exit 2, as a usage error)."""
    c = synthetic_comparisons(SyntheticConfig(users=20, comparisons_per_user=3, dim=8))  # a minority of 2 users: one is suppressed
    c.diff[:] = 0.0
    report = audit(c, "group", AuditConfig(min_comparisons=1))
    assert report.comparisons == 60 and report.overall is not None
    assert report.overall.base_accuracy == report.overall.personalized_accuracy == 0.5, report.overall
    assert report.overall.base_ece == report.overall.personalized_ece == 0.0, report.overall
    assert [g.group for g in report.groups] == ["majority", "minority"]


def test_an_audit_runs_numpys_blas_and_torch_on_one_thread_and_gives_the_counts_back():
    """`single_threaded` (suite46: numpy's BLAS through threadpoolctl, torch's where it is imported) holds for the whole
    audit, the personalized model's steps included, and the counts are as before once it returns. Until review suite46
    no test looked at it (none named threadpoolctl, `single_threaded` or BLAS threads): the limit could go unnoticed."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from pluralign.fairness.online import OnlineLogistic

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen = []

    class Recording(OnlineLogistic):
        def predict(self, user, rows):
            seen.append((blas_threads(), torch.get_num_threads()))
            return super().predict(user, rows)

    c = synthetic_comparisons(SyntheticConfig(users=4, comparisons_per_user=3, dim=8))
    torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):  # two, whatever this machine's count: one is then told apart
        torch.set_num_threads(2)
        try:
            audit(c, "group", AuditConfig(min_comparisons=1), personalized=Recording(np.zeros((len(c), 2)), len(c.users)))
            after = blas_threads(), torch.get_num_threads()
        finally:
            torch.set_num_threads(torch_threads)
    assert blas_threads() and seen and all(s == ({1}, 1) for s in seen), seen
    assert after == ({2}, 2), after
