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
    c = synthetic_comparisons(SyntheticConfig(users=6, comparisons_per_user=3, dim=8))
    c.diff[:] = 0.0
    report = audit(c, "group", AuditConfig(min_comparisons=1))
    assert report.comparisons == 18 and report.overall is not None
    assert report.overall.base_accuracy == report.overall.personalized_accuracy == 0.5, report.overall
    assert report.overall.base_ece == report.overall.personalized_ece == 0.0, report.overall
    assert [g.group for g in report.groups] == ["majority", "minority"]
