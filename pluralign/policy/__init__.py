"""Generators, the FSPO few-shot context, LoRA adapters, MaxMin objectives and reranking."""

import warnings


def ignore_peft_deprecation() -> None:
    """Leave out, in this process, the one FutureWarning peft 0.21 causes on every LoRA model it wraps
    (it reads `is_gradient_checkpointing`, which transformers 5 deprecated): a message about code not ours,
    nothing a user can act on. That message of that category only; every other warning is shown as before.
    For a process's entry point: `pluralign` commands (`training.cli.main`) and the generation process of
    `pluralign serve` (`pluralign.policy.process`, a spawned interpreter that keeps no filter of its parent's)."""
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
