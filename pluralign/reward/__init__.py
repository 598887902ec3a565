"""Reward models over frozen embeddings: Bradley-Terry baselines, PAL mixtures, EM mixtures."""
