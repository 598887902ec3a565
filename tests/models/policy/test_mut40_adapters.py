"""Per-user adapters as the service serves them: what survived mutation testing (session 40)."""

from __future__ import annotations

import time

import msgspec
import torch

from pluralign.policy.adapters import AdapterPool, AdapterRegistry, ModelHost, load_adapter
from pluralign.policy.logprobs import encode_responses, sequence_logprobs
from tests.models.policy.test_adapters import CONVERSATIONS, RESPONSES, meta_for, random_adapter


def test_a_retrained_adapter_serves_its_user_at_once(make_tiny_lm, tokenizer, tmp_path):
    """A user's adapter retrained (or promoted) while the pool holds the old one loaded: the next
    request scores with the new weights, not the old ones still in memory."""
    registry = AdapterRegistry(tmp_path)
    pool = AdapterPool(ModelHost(make_tiny_lm()), registry, "tiny-llama-a", 1 << 26)
    users = [("acme", "alice")] * len(CONVERSATIONS)

    def alone() -> torch.Tensor:
        model, _ = load_adapter(make_tiny_lm(), registry.folder("acme", "alice"), "tiny-llama-a")
        with torch.no_grad():
            return sequence_logprobs(model, encode_responses(tokenizer, CONVERSATIONS, RESPONSES))

    registry.save("acme", "alice", random_adapter(make_tiny_lm(), 1), meta_for("tiny-llama-a"))
    torch.testing.assert_close(pool.score(users, CONVERSATIONS, RESPONSES, tokenizer), alone())
    first = alone()
    time.sleep(0.01)  # a later created_at
    meta = msgspec.structs.replace(meta_for("tiny-llama-a"), created_at=time.time())
    registry.save("acme", "alice", random_adapter(make_tiny_lm(), 2), meta)
    retrained = alone()
    assert not torch.allclose(first, retrained)
    torch.testing.assert_close(pool.score(users, CONVERSATIONS, RESPONSES, tokenizer), retrained)
