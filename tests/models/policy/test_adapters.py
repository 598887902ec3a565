"""Per-user LoRA adapters: training touches only LoRA weights, the registry round-trips and guards
the base model, and a mixed-adapter batch equals each adapter's own output row by row."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from pluralign.data.record import Preference
from pluralign.policy.adapters import AdapterError, AdapterMeta, AdapterPool, AdapterRegistry, ModelHost, load_adapter
from pluralign.policy.fspo import FSPOConfig, ReferencePolicy, add_lora, episode, train
from pluralign.policy.logprobs import BASE_ADAPTER, encode_responses, score_responses, sequence_logprobs

CONVERSATIONS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which fruit do you like best, and why?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Tell me something about the sea and the sky at night."}],
]
RESPONSES = ["Red.", "Apples, because they are crisp and sweet.", "Hello there!", "It is dark."]


def random_adapter(model, seed: int):
    """A LoRA adapter with random (non-zero) weights, so it changes the output."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    return get_peft_model(model, config)


def meta_for(base_model: str) -> AdapterMeta:
    return AdapterMeta(kind="user", base_model=base_model, shots=0, data_version="test", metrics={"acc": 1.0})


def test_training_changes_only_lora_weights(make_tiny_lm, tokenizer):
    policy = add_lora(make_tiny_lm(), FSPOConfig(lora_rank=4))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    pairs = [Preference(user_id="u", prompt=f"Q{i}?", chosen="Yes, gladly.", rejected="No.") for i in range(4)]
    episodes = [episode(pairs[:1], p) for p in pairs[1:]]
    train(policy, ReferencePolicy(policy), tokenizer, episodes, FSPOConfig(shots=1, lr=1e-2, steps=3, batch_size=2))
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "no weight trained"
    assert all("lora_" in n for n in changed), sorted(changed)[:5]
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)


def test_registry_round_trip_and_base_model_guard(make_tiny_lm, tokenizer, tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    model = random_adapter(make_tiny_lm("tiny-a"), seed=1)
    batch = encode_responses(tokenizer, CONVERSATIONS, RESPONSES)
    with torch.no_grad():
        expected = sequence_logprobs(model, batch)
    folder = registry.save("acme", "alice/b.c", model, meta_for("tiny-a"))
    assert {"adapter_config.json", "adapter_model.safetensors", "pluralign.json"} <= {p.name for p in folder.iterdir()}
    assert registry.users("acme") == ["alice/b.c"]

    loaded, meta = load_adapter(make_tiny_lm("tiny-a"), registry.require("acme", "alice/b.c", "tiny-a")[0], "tiny-a")
    with torch.no_grad():
        torch.testing.assert_close(sequence_logprobs(loaded, batch), expected)
    assert meta.metrics == {"acc": 1.0} and meta.tenant == "acme" and meta.user == "alice/b.c"

    with pytest.raises(AdapterError, match="trained on base model 'tiny-a', but this model is 'other-base'"):
        registry.require("acme", "alice/b.c", "other-base")
    with pytest.raises(AdapterError, match="trained on base model"):
        load_adapter(make_tiny_lm("other-base"), folder, "other-base")
    assert registry.delete("acme", "alice/b.c") and not folder.exists()
    with pytest.raises(AdapterError, match="no adapter for user"):
        registry.require("acme", "alice/b.c", "tiny-a")


def test_mixed_adapter_batch_equals_each_adapter_alone(make_tiny_lm, tokenizer, tmp_path):
    registry = AdapterRegistry(tmp_path)
    users = [("acme", "alice"), ("acme", "bob"), ("zeta", "alice")]
    for seed, (tenant, user) in enumerate(users, start=1):
        registry.save(tenant, user, random_adapter(make_tiny_lm(), seed), meta_for("tiny-llama-a"))
    base_scores = score_responses(make_tiny_lm(), tokenizer, CONVERSATIONS, RESPONSES)

    own = {}  # each adapter on its own, one row at a time, in a fresh model
    for tenant, user in users:
        alone, _ = load_adapter(make_tiny_lm(), registry.folder(tenant, user), "tiny-llama-a")
        own[(tenant, user)] = torch.cat(
            [score_responses(alone, tokenizer, [c], [r]) for c, r in zip(CONVERSATIONS, RESPONSES, strict=True)]
        )

    pool = AdapterPool(ModelHost(make_tiny_lm()), registry, "tiny-llama-a", budget_bytes=10 << 20)
    rows = [users[0], None, users[2], users[1]]
    mixed = pool.score(rows, CONVERSATIONS, RESPONSES, tokenizer)
    for i, key in enumerate(rows):
        expected = base_scores[i] if key is None else own[key][i]
        torch.testing.assert_close(mixed[i], expected, rtol=1e-4, atol=1e-4)
    assert len({round(own[u][0].item(), 3) for u in users} | {round(base_scores[0].item(), 3)}) == 4

    # generation: each row's greedy reply is the one its adapter gives alone
    replies = pool.generate(rows, CONVERSATIONS, tokenizer, max_new_tokens=6)
    for i, key in enumerate(rows):
        assert replies[i] == pool.generate([key], [CONVERSATIONS[i]], tokenizer, max_new_tokens=6)[0]
    assert pool.adapters_for([None]) == [BASE_ADAPTER]

    # with a fallback (FSPO) adapter, users without their own adapter get the fallback's output
    fallback = registry.folder(*users[1])
    pool = AdapterPool(ModelHost(make_tiny_lm()), registry, "tiny-llama-a", budget_bytes=10 << 20, fallback=fallback)
    mixed = pool.score([users[0], ("acme", "nobody"), None], CONVERSATIONS[:3], RESPONSES[:3], tokenizer)
    torch.testing.assert_close(
        mixed, torch.stack([own[users[0]][0], own[users[1]][1], own[users[1]][2]]), rtol=1e-4, atol=1e-4
    )


def test_pool_evicts_least_recently_used_within_budget(make_tiny_lm, tokenizer, tmp_path):
    registry = AdapterRegistry(tmp_path)
    for seed, user in enumerate(["a", "b", "c"], start=1):
        registry.save("t", user, random_adapter(make_tiny_lm(), seed), meta_for("tiny-llama-a"))
    pool = AdapterPool(ModelHost(make_tiny_lm()), registry, "tiny-llama-a", budget_bytes=1 << 30)
    one = pool.adapter_for("t", "a")
    size = pool.bytes_used
    pool.budget_bytes = 2 * size
    pool.adapter_for("t", "b")
    pool.adapter_for("t", "a")  # a is now the most recent
    pool.adapter_for("t", "c")  # evicts b
    assert set(pool.loaded) == {one, pool.adapter_for("t", "c")} and pool.bytes_used == 2 * size
    with pytest.raises(AdapterError, match="exceed the pool's budget"):
        pool.adapters_for([("t", "a"), ("t", "b"), ("t", "c")])
    assert pool.adapter_for("t", "missing") == BASE_ADAPTER
    registry.delete("t", "a")
    assert pool.adapter_for("t", "a") == BASE_ADAPTER and one not in pool.loaded


def test_a_forget_drops_a_model_hosts_adapter_with_no_forward_pass_running(make_tiny_lm, tokenizer, tmp_path):
    """`ModelHost` deletes an adapter's weights from the model's layers at once, and the pool's `score` and `generate`
    run forward passes with the pool's lock held. Before (pool47) `forget` dropped outside that lock (for the service's
    Generator, whose drop waits for its own generations): another thread's `score` ran through the layers peft was
    deleting from. A host that does not track its generations (no `adapters_in_use`) is dropped under the lock."""
    import threading

    registry = AdapterRegistry(tmp_path)
    registry.save("t", "a", random_adapter(make_tiny_lm(), 1), meta_for("tiny-llama-a"))
    host = ModelHost(make_tiny_lm())
    pool = AdapterPool(host, registry, "tiny-llama-a", budget_bytes=1 << 30)
    a = pool.adapter_for("t", "a")
    drop = host.drop_adapter
    other_got_the_lock: list[bool] = []

    def drop_while_another_thread_scores(name):
        def try_lock():
            other_got_the_lock.append(pool._lock.acquire(blocking=False))
            if other_got_the_lock[-1]:
                pool._lock.release()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        drop(name)

    host.drop_adapter = drop_while_another_thread_scores
    registry.delete("t", "a")
    pool.forget("t", "a")
    assert other_got_the_lock == [False], "a forward pass could run while the adapter's weights were deleted"
    assert a not in host.adapters and a not in pool.loaded


def test_one_tenants_users_never_push_another_tenants_adapter_out_of_the_pool(make_tiny_lm, tmp_path):
    """The adapter budget is shared fairly between tenants (session tenant56): acme chatting as more users than fit,
    in turn, pushes out its own adapters, never globex's one. Before, the least recently used of any tenant went:
    globex's adapter at acme's second load, loaded from disk again at globex's next chat."""
    registry = AdapterRegistry(tmp_path)
    users = [("globex", "g1"), ("acme", "a1"), ("acme", "a2")]
    for seed, (tenant, user) in enumerate(users, start=1):
        registry.save(tenant, user, random_adapter(make_tiny_lm(), seed), meta_for("tiny-llama-a"))
    pool = AdapterPool(ModelHost(make_tiny_lm()), registry, "tiny-llama-a", budget_bytes=1 << 30)
    globex = pool.adapter_for("globex", "g1")
    pool.budget_bytes = 2 * pool.bytes_used
    for _ in range(2):
        for tenant, user in users[1:]:
            pool.adapter_for(tenant, user)
    assert globex in pool.loaded, "acme's users pushed globex's adapter out"
    assert len(pool.loaded) == 2 and pool.adapter_for("acme", "a2") in pool.loaded  # acme keeps what is left


def test_a_killed_saves_leftover_is_no_user_of_the_registry(make_tiny_lm, tmp_path):
    """A save killed after its adapter was written whole but before the swap (or a swap killed with the earlier one
    renamed aside) leaves a hidden `.<user>.<suffix>` folder holding a described adapter (`leftovers`): `users` lists
    the users with an adapter, not that folder's name."""
    import shutil
    import tempfile

    registry = AdapterRegistry(tmp_path / "adapters")
    folder = registry.save("acme", "alice", random_adapter(make_tiny_lm("tiny-a"), seed=1), meta_for("tiny-a"))
    for prefix in (".alice.", ".alice.retired"):  # `staged_folder`'s and `swap_folder`'s names
        shutil.copytree(folder, tempfile.mkdtemp(dir=folder.parent, prefix=prefix), dirs_exist_ok=True)
    assert len(registry.leftovers("acme", "alice")) == 2
    assert registry.users("acme") == ["alice"]
    assert registry.holders("acme") == {"alice"}
