"""The adapter pool used from Python (lib38): one user key per row, or a clear ValueError."""

from __future__ import annotations

import pytest

from pluralign.policy.adapters import AdapterPool, AdapterRegistry, ModelHost

CONVERSATIONS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Hi"}]]
RESPONSES = ["Red.", "Hello there!"]


def test_the_pool_names_users_of_another_count_than_the_rows(make_tiny_lm, tokenizer, tmp_path):
    pool = AdapterPool(ModelHost(make_tiny_lm()), AdapterRegistry(tmp_path), "tiny-llama-a", budget_bytes=10 << 20)
    # one user for two rows: before any adapter was loaded the users were not read at all (both rows
    # scored by the base model, silently); with peft, its own error about adapter_names
    with pytest.raises(ValueError, match="`users` has 1 rows, `conversations` 2: one user key \\(or None\\) per row"):
        pool.score([None], CONVERSATIONS, RESPONSES, tokenizer)
    with pytest.raises(ValueError, match="`users` has 3 rows, `conversations` 2"):
        pool.generate([None, None, None], CONVERSATIONS, tokenizer, max_new_tokens=2)
    # no rows: no replies (was ValueError: max() arg is an empty sequence)
    assert pool.generate([], [], tokenizer, max_new_tokens=2) == []
    assert len(pool.score([None, None], CONVERSATIONS, RESPONSES, tokenizer)) == 2
