"""Generators, the FSPO few-shot context, LoRA adapters, MaxMin objectives and reranking."""
