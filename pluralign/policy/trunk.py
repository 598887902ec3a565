"""Split a decoder at a layer: a frozen trunk computed once, a trainable head run many times.

When LoRA adapts only the top N layers, everything below is the frozen base for the policy and
for pi_ref alike. The hidden states entering layer L - N are then the same for both and for every
training step on the same rows: compute them once (`trunk_states`, no gradients), then score
rows by running only the top N layers on them (`head_logprobs`), with the adapter on (the policy,
with gradients) or off (the reference). On CPU this turns a DPO step from two full forwards into
one shared trunk pass plus two passes over N of L layers, and lets later epochs skip the trunk.

`head_logprobs(model, trunk_states(model, batch, split), batch, split)` equals
`sequence_logprobs(model, batch)` whenever no layer below `split` carries a trainable weight
(tested on a tiny model).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from pluralign.policy.logprobs import PackedBatch, ScoringBatch


class _StopForward(Exception):
    """Raised by the trunk hook once layer `split`'s input is captured: the rest is not needed."""


def _decoder(model) -> nn.Module:
    """The module holding `.layers` (a Llama-style decoder), through a peft wrapper if any."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(inner, "model", None)
    if decoder is None or not isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        raise TypeError(f"{type(inner).__name__} has no `.model.layers` decoder stack to split")
    return decoder


def lowest_adapted_layer(model) -> int:
    """Index of the lowest decoder layer with a trainable weight or a LoRA weight (trainable or
    not: pi_ref switches adapters off, so an adapted layer is never shared); L if none."""
    layers = _decoder(model).layers
    for i, layer in enumerate(layers):
        if any(p.requires_grad or "lora_" in name for name, p in layer.named_parameters()):
            return i
    return len(layers)


def check_split(model, split: int) -> None:
    """A trunk must be frozen: nothing below `split` may train, and nothing outside the layers."""
    decoder = _decoder(model)
    if not 0 < split < len(decoder.layers):  # the head keeps at least one layer
        raise ValueError(f"split must be in 1..{len(decoder.layers) - 1}, got {split}")
    if lowest_adapted_layer(model) < split:
        raise ValueError(f"layer {lowest_adapted_layer(model)} is adapted, below the split at {split}")
    if any(p.requires_grad for p in decoder.embed_tokens.parameters()):
        raise ValueError("the embeddings train: there is no frozen trunk to cache")


def trunk_states(model, batch: ScoringBatch | PackedBatch, split: int) -> torch.Tensor:
    """(B, T, d) hidden states entering decoder layer `split`, without gradients."""
    weight = next(model.parameters())
    batch = batch.to(weight.device)
    captured: dict[str, torch.Tensor] = {}

    def grab(module, args, kwargs):
        captured["h"] = args[0] if args else kwargs["hidden_states"]
        raise _StopForward

    check_split(model, split)
    handle = _decoder(model).layers[split].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(
                input_ids=batch.input_ids,
                **batch.model_inputs(weight.dtype),
                logits_to_keep=1,
                use_cache=False,
            )
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["h"].detach()


@contextmanager
def _only_layers_from(model, split: int):
    decoder = _decoder(model)
    full = decoder.layers
    decoder.layers = nn.ModuleList(list(full)[split:])
    try:
        yield
    finally:
        decoder.layers = full


def head_logprobs(model, states: torch.Tensor, batch: ScoringBatch | PackedBatch, split: int) -> torch.Tensor:
    """Response log-probabilities ((B,), or (N,) for a packed batch) from the trunk's states,
    running layers `split`.. only. Gradients flow to the head's trainable weights when the caller
    has them enabled."""
    batch = batch.to(states.device)
    with _only_layers_from(model, split):
        out = model(
            inputs_embeds=states,
            **batch.model_inputs(states.dtype),
            logits_to_keep=batch.keep,
            use_cache=False,
        )
    return batch.logprobs(out.logits)
