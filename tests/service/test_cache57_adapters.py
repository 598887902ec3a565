"""Session cache57: adapters evicted while chats generate with them, past `adapter_budget_mb`, on the live service (the
tiny LM, the real adapter pool, /metrics over HTTP)."""

from __future__ import annotations

import re
import threading

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from pluralign.policy.adapters import FALLBACK_ADAPTER, AdapterMeta, AdapterRegistry
from tests.service.test_generation_turns import wait_until
from tests.service.test_reviewtenant56 import chatting
from tests.service.tiny import start_service


def gauges(client) -> dict[str, float]:
    text = client.get("/metrics").text
    found = {}
    for name in ('pluralign_adapter_bytes{state="loaded"}', 'pluralign_adapter_bytes{state="evicted_in_use"}',
                 "pluralign_adapter_budget_bytes"):
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert match, f"/metrics has no {name}"
        found[name.split("{")[0] + (name[name.index("{"):] if "{" in name else "")] = float(match.group(1))
    return found


def gauges_while_a_load_holds_the_pool(client, pool) -> dict[str, float]:
    """`gauges`, scraped while another thread holds the adapter pool's lock (as a load does, for seconds): answered
    without waiting for it (the holder is still holding when the scrape returns)."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with pool._lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert holding.wait(30)
    try:
        seen = gauges(client)
        assert holder.is_alive(), "the scrape waited for the pool's lock"
    finally:
        release.set()
        holder.join(30)
    return seen


def test_adapters_evicted_while_in_use_are_held_beside_the_budget_bounded_by_the_chats_and_shown_in_metrics(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """An adapter a chat is generating with cannot leave memory until that chat ends: past the budget it leaves the
    pool's table (another user's adapter takes its place) and its weights stay beside the budget. That was nowhere to be
    seen: the pool's bytes said the budget was kept. Now /metrics says it (`pluralign_adapter_bytes{state=
    "evicted_in_use"}`), and it is bounded: one adapter per chat generating, however many other loads come meanwhile
    (idle adapters evicted then leave memory at once, and the gauge counts them no more even while a load holds the
    pool's lock, before their drop threads strike them out of its books); 0 once the chat ends."""
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    users = ["a1", "a2", "a3", "a4"]
    for user in users:  # the same weights: one load each all the same
        registry.save("acme", user, adapted, AdapterMeta(kind="user", base_model=tiny_generator_dir.name, shots=0,
                                                         data_version="test", metrics={}))
    server, service = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server, service.client() as client:
        rt = service.runtime
        pool, generator = rt.adapters, rt.generator
        a1 = pool.adapter_for("acme", "a1")
        size = pool.bytes_used
        pool.budget_bytes = size  # one adapter
        assert gauges(client) == {'pluralign_adapter_bytes{state="loaded"}': size,
                                  'pluralign_adapter_bytes{state="evicted_in_use"}': 0, "pluralign_adapter_budget_bytes": size}
        chat, tokens = chatting("acme", generator, a1)
        for user in users[1:]:  # each load evicts the one before: a1 (in use), then idle ones
            name = pool.adapter_for("acme", user)
            assert pool.bytes_used == size and set(pool.loaded) == {name}
        in_flight = chat.is_alive() and not tokens.ended
        with pool._lock:  # a load holds the pool's lock while the idle adapters evicted are dropped (review cache57)
            wait_until(lambda: set(generator.adapters) - {FALLBACK_ADAPTER} == {a1, name}, "the idle adapters evicted leave memory")
            held = gauges(client)
        assert held['pluralign_adapter_bytes{state="evicted_in_use"}'] == size, f"dropped adapters still counted: {held}"
        seen = gauges_while_a_load_holds_the_pool(client, pool)
        assert in_flight and a1 in generator.adapters_in_use
        assert seen == {'pluralign_adapter_bytes{state="loaded"}': size,
                        'pluralign_adapter_bytes{state="evicted_in_use"}': size, "pluralign_adapter_budget_bytes": size}, seen
        tokens.ended = True  # the chat's client leaves
        chat.join(60)
        wait_until(lambda: gauges(client)['pluralign_adapter_bytes{state="evicted_in_use"}'] == 0,
                   "a1 leaves memory once its chat ends")
        assert a1 not in generator.adapters
