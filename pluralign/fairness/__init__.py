"""Fairness audits: who does the one-size-fits-all reward model fail, and does personalization help them."""
