"""POST /v1/feedback: choices, comparisons, ratings and edits, written durably, then learned from."""
