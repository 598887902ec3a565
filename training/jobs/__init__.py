"""Durable training and audit jobs run in worker processes, outside the service's request loop."""
