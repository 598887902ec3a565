"""Admin routes: training jobs, fairness audits and the operator's dashboard (admin keys only)."""
