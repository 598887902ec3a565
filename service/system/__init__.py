"""Health, metrics."""
