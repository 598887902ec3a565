"""Generations take the model in turns (session 47): one caller's long answer no longer holds it to its end. Before,
one lock was held for a whole `model.generate`, and a tenant's short chat waited behind another's 8 x 1,024 tokens
(not done within ~500 s in session 46's hostile-tenant trial). Now a generation hands the model to another lane's
after each token (`pluralign.policy.generator._InTurns`). Deterministic: token counts and events, no timings."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from pluralign.policy.generator import Generator, Sampling
from pluralign.turns import CALLER

MESSAGES = [{"role": "user", "content": "Tell me about cats."}]
LONG = Sampling(max_tokens=120, temperature=1.0, seed=1)


@pytest.fixture(scope="module")
def generator(tiny_generator_dir):
    return Generator.from_folder(tiny_generator_dir, device=torch.device("cpu"))


class Tokens:
    """A `cancel` that never cancels: counts the tokens of the generation it is given to (asked once a token)."""

    def __init__(self):
        self.count = 0

    def is_set(self) -> bool:
        self.count += 1
        return False


def wait_until(condition, what: str) -> None:
    """Polls `condition` (a safety net against a hang, not a timing assertion)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.001)


def in_lane(lane: str, fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    """A started thread running `fn` as tenant `lane`'s request would (CALLER set), and the list its result goes to."""
    out: list = []

    def run():
        CALLER.set(f"tenant:{lane}")
        out.append(fn(*args, **kwargs))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def long_generation(generator, **kwargs) -> tuple[threading.Thread, list, Tokens]:
    """acme's long generation, started and past its first tokens."""
    tokens = Tokens()
    thread, out = in_lane("acme", generator.generate, MESSAGES, sampling=LONG, cancel=tokens, **kwargs)
    wait_until(lambda: tokens.count >= 3, "the long generation runs")
    return thread, out, tokens


def test_a_short_generation_ends_while_another_lanes_long_one_runs(generator):
    """Before: globex's 4 tokens waited for all 400 of acme's (the lock); now they are generated between acme's."""
    long, long_out, tokens = long_generation(generator)
    short, short_out = in_lane("globex", generator.generate, MESSAGES, sampling=Sampling(max_tokens=4, temperature=0))
    short.join(60)
    assert short_out and short_out[0][0][0].tokens <= 4
    assert tokens.count < LONG.max_tokens and long.is_alive(), f"the long one had generated {tokens.count} tokens"
    long.join(60)
    assert long_out[0][0][0].tokens == LONG.max_tokens  # (the tiny model's sampling over 49k tokens: no end of turn)


def test_a_seeded_generation_gives_the_same_text_interleaved_as_alone(generator):
    """torch's global RNG is kept across the turns handed over: the long unseeded generation samples in between."""
    seeded = Sampling(max_tokens=24, temperature=1.0, seed=11)
    alone = generator.generate(MESSAGES, n=2, sampling=seeded)
    streamed_alone = list(generator.stream(MESSAGES, seeded))
    long, _, tokens = long_generation(generator)
    interleaved, out = in_lane("globex", generator.generate, MESSAGES, n=2, sampling=seeded)
    interleaved.join(60)
    streamed, streamed_out = in_lane("initech", lambda: list(generator.stream(MESSAGES, seeded)))
    streamed.join(60)
    assert tokens.count < LONG.max_tokens, "the long generation ended before the seeded ones: they did not interleave"
    assert out == [alone] and streamed_out == [streamed_alone]
    long.join(60)


def test_an_adapter_loads_between_two_token_steps_of_a_generation_and_a_drop_waits_for_it(generator, tiny_generator_dir,
                                                                                         tmp_path):
    """peft wraps the model's layers in place on a first load and adds weights beside the others' on the next: a load
    takes a turn of its own between two token steps, and the generation paused there resumes unchanged (its rows name
    the base, so the new layers leave them alone). Two generations with different adapters interleaved each get their
    own (peft's own `adapter_names` hooks are registered on the shared layers for a whole `generate`: in turns, each ran
    with the other's rows). A drop takes a turn too and waits only for the generations using its adapter (before,
    reviewturns47b: for every generation in flight, with the adapter pool's lock held, and every chat that came meanwhile
    waited behind it: one tenant's DELETE, or a new user's load evicting another's adapter, held every tenant's next
    chat until the longest chat running, another tenant's in turns, ended)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for seed, name in enumerate(("u1", "u2")):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
        adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        with torch.no_grad():  # strong enough to change every greedy token it takes part in
            for parameter_name, parameter in adapted.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.mul_(30)
        adapted.save_pretrained(tmp_path / name)
    own = Generator.from_folder(tiny_generator_dir, device=torch.device("cpu"))
    greedy = Sampling(max_tokens=LONG.max_tokens, temperature=0)
    short = Sampling(max_tokens=6, temperature=0)
    alone_base = own.generate(MESSAGES, sampling=greedy)
    assert alone_base[0][0].tokens == greedy.max_tokens  # no end of turn: it runs all its tokens

    def long_running(**kwargs) -> tuple[threading.Thread, list, Tokens]:
        tokens = Tokens()
        thread, out = in_lane("acme", own.generate, MESSAGES, sampling=greedy, cancel=tokens, **kwargs)
        wait_until(lambda: tokens.count >= 3, "the long generation runs")
        return thread, out, tokens

    try:
        long, long_out, tokens = long_running()  # on the bare model: the first load wraps its layers
        load, _ = in_lane("admin", own.load_adapter, "u1", tmp_path / "u1")
        load.join(60)
        assert own.adapters == {"u1"} and long.is_alive() and tokens.count < greedy.max_tokens, "the load waited for it"
        long.join(60)
        assert long_out == [alone_base]
        alone_u1 = own.generate(MESSAGES, sampling=greedy, adapter="u1")
        assert alone_u1[0][0].text != alone_base[0][0].text
        alone_short = own.generate(MESSAGES, sampling=short)
        long, long_out, tokens = long_running(adapter="u1")
        other, other_out = in_lane("globex", own.generate, MESSAGES, sampling=short)  # the base, interleaved with u1
        load, _ = in_lane("admin", own.load_adapter, "u2", tmp_path / "u2")
        other.join(60)
        load.join(60)
        assert other_out == [alone_short] and own.adapters == {"u1", "u2"} and long.is_alive()
        drop, _ = in_lane("admin", own.drop_adapter, "u2")  # used by no generation in flight: between two token steps
        drop.join(60)
        assert own.adapters == {"u1"} and long.is_alive() and tokens.count < greedy.max_tokens, "the drop waited for u1's"
        drop, _ = in_lane("admin", own.drop_adapter, "u1")  # the long generation's own: waits for it to end
        wait_until(lambda: own._use._dropping["u1"] == 1, "the drop waits")
        refused: list = []
        late = threading.Thread(target=lambda: refused.append(pytest.raises(ValueError, own.generate, MESSAGES, adapter="u1")))
        late.start()  # u1's, while u1's drop waits: behind the drop, then refused (not loaded), never holding the drop
        after, after_out = in_lane("initech", own.generate, MESSAGES, sampling=short)  # another's: runs meanwhile
        after.join(60)
        assert after_out == [alone_short] and long.is_alive() and own.adapters == {"u1"}, "it waited behind u1's drop"
        long.join(60)
        drop.join(60)
        late.join(60)
        assert long_out == [alone_u1] and own.adapters == set() and "not loaded" in str(refused[0].value)
    finally:
        for name in list(own.adapters):
            own.drop_adapter(name)


def test_two_unseeded_generations_interleaved_do_not_sample_from_one_random_stream(tiny_generator_dir):
    """Before (reviewturns47b): a generation handing the model over kept torch's global RNG where it was, so the one
    starting next sampled from the very state the first resumed from: their random draws were one stream, shifted by
    the tokens in between (two chats "sampled" at once got correlated answers, and a tenant's seeded chat fixed the
    draws of another tenant's unseeded one). On a model whose next token is uniform whatever came before, each token
    is its draw: the second answer was the first's, shifted."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every token equally likely, at every step
    uniform = Generator(model, AutoTokenizer.from_pretrained(str(tiny_generator_dir)), "uniform")
    ids = uniform.encode_chat(MESSAGES)
    sampling = Sampling(max_tokens=40, temperature=1.0)
    tokens, out = Tokens(), {}

    def sample(lane: str, cancel=None):
        CALLER.set(f"tenant:{lane}")
        out[lane] = uniform._sample_rows(ids, torch.ones_like(ids), sampling, None, cancel)[0]

    first = threading.Thread(target=sample, args=("acme", tokens), daemon=True)
    first.start()
    wait_until(lambda: tokens.count >= 3, "the first generation runs")
    second = threading.Thread(target=sample, args=("globex",), daemon=True)
    second.start()
    first.join(60)
    second.join(60)
    assert len(out["acme"]) > 20 and len(out["globex"]) > 20  # (an end of turn is 2 of the 49k tokens: rarely drawn)
    runs = {tuple(out["acme"][i : i + 6]) for i in range(len(out["acme"]) - 5)}
    shared = [i for i in range(len(out["globex"]) - 5) if tuple(out["globex"][i : i + 6]) in runs]
    assert not shared, f"the second generation's tokens from {shared[0]} on are the first's (one random stream)"


def pool_of_users(tiny_generator_dir, tmp_path, users):
    """A fresh tiny Generator and an AdapterPool on it whose registry holds a LoRA adapter for each user of tenant "t"."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pluralign.policy.adapters import AdapterMeta, AdapterPool, AdapterRegistry

    registry = AdapterRegistry(tmp_path)
    for seed, user in enumerate(users):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
        adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        registry.save("t", user, adapted, AdapterMeta(kind="user", base_model="tiny", shots=0, data_version="test", metrics={}))
    own = Generator.from_folder(tiny_generator_dir, model_id="tiny", device=torch.device("cpu"))
    return own, AdapterPool(own, registry, "tiny", budget_bytes=1 << 30)


def test_the_adapter_pool_evicts_an_idle_adapter_before_one_a_long_generation_uses(tiny_generator_dir, tmp_path):
    """A long chat's adapter is the least recently used one because its chat runs long. Before (reviewturns47b) a new
    user's load evicted it, and the drop waited for that chat to end, with the pool's lock held: the new user's chat,
    and every chat that wanted an adapter meanwhile, waited for another tenant's long chat. The generator says which
    adapters its generations in flight use (`adapters_in_use`); the pool evicts those last."""
    own, pool = pool_of_users(tiny_generator_dir, tmp_path, ("a", "b", "c"))
    a = pool.adapter_for("t", "a")
    pool.budget_bytes = 2 * pool.bytes_used
    tokens = Tokens()
    long, long_out = in_lane("bravo", own.generate, MESSAGES, sampling=Sampling(max_tokens=LONG.max_tokens, temperature=0),
                             adapter=a, cancel=tokens)
    wait_until(lambda: tokens.count >= 3, "a's long generation runs")
    b = pool.adapter_for("t", "b")  # now a is the least recently used
    assert own.adapters_in_use == {a}
    c, c_out = in_lane("acme", pool.adapter_for, "t", "c")
    c.join(60)
    assert long.is_alive() and tokens.count < LONG.max_tokens, "c's load waited for a's generation (a evicted)"
    assert set(pool.loaded) == {a, c_out[0]}
    wait_until(lambda: b not in own.adapters, "b's drop, on a thread of its own since pool48, ends")
    long.join(60)
    assert long_out[0][0][0].tokens == LONG.max_tokens and own.adapters_in_use == set()
    assert not own._use._using, "an entry is kept per adapter ever used (memory growing with the users served)"


def test_a_delete_waiting_for_its_users_generation_holds_no_other_tenants_chat(tiny_generator_dir, tmp_path):
    """A DELETE drops the user's adapter from the pool, and the drop waits for that user's generations to end. Before
    (pool47) it waited with the pool's lock held: every other tenant's chat needing `adapter_for` (another user's adapter
    loaded, or one already loaded) waited until the deleted user's long chat ended. Now the adapter leaves the pool's
    table under the lock and is dropped outside it; a chat for the deleted user meanwhile gets the fallback, and nothing
    of theirs is loaded after."""
    own, pool = pool_of_users(tiny_generator_dir, tmp_path, ("u", "v", "w"))
    u = pool.adapter_for("t", "u")
    v = pool.adapter_for("t", "v")
    tokens = Tokens()
    long, long_out = in_lane("acme", own.generate, MESSAGES, sampling=Sampling(max_tokens=LONG.max_tokens, temperature=0),
                             adapter=u, cancel=tokens)
    wait_until(lambda: tokens.count >= 3, "u's long generation runs")

    def delete_u():
        pool.registry.delete("t", "u")  # as the service's DELETE: the files first, then the pool
        pool.forget("t", "u")

    delete, _ = in_lane("acme", delete_u)
    wait_until(lambda: own._use._dropping[u] == 1, "the drop waits for u's generation")
    other, other_out = in_lane("globex", lambda: [pool.adapter_for("t", "w"), pool.adapter_for("t", "v"),
                                                  own.generate(MESSAGES, sampling=Sampling(max_tokens=4, temperature=0),
                                                               adapter=v)])
    other.join(60)
    assert other_out and long.is_alive() and tokens.count < LONG.max_tokens, "globex's chat waited for u's to end"
    assert pool.adapter_for("t", "u") == pool.fallback  # deleted: never u's adapter again, nor waiting for its drop
    assert delete.is_alive() and long.is_alive()
    long.join(60)
    delete.join(60)
    assert long_out[0][0][0].tokens == LONG.max_tokens
    assert u not in own.adapters and u not in pool.loaded and pool.adapter_for("t", "u") == pool.fallback


def test_a_delete_whose_drop_failed_drops_the_adapter_when_sent_again(tiny_generator_dir, tmp_path, monkeypatch):
    """The drop can fail part way (a remote generation server unreachable, a generation process lost mid-call): the
    DELETE answers an error and is sent again (or finished from its journal). Before (pool47) `forget` took the adapter
    out of the pool's table before the drop, so the second DELETE's `forget` found nothing to drop and returned: the
    generator kept the deleted user's weights for good (and a later adapter of that name could not be loaded beside
    them). Now a drop that fails leaves the adapter in the table, and the next `forget` drops it."""
    from pluralign.policy.remote import RemoteGeneratorError

    own, pool = pool_of_users(tiny_generator_dir, tmp_path, ("u",))
    u = pool.adapter_for("t", "u")
    drop = own.drop_adapter

    def unreachable(name):
        monkeypatch.setattr(own, "drop_adapter", drop)  # once
        raise RemoteGeneratorError("generation server at http://gen unreachable (2 retries)")

    monkeypatch.setattr(own, "drop_adapter", unreachable)
    pool.registry.delete("t", "u")
    with pytest.raises(RemoteGeneratorError):
        pool.forget("t", "u")
    assert pool.adapter_for("t", "u") == pool.fallback  # meanwhile: the files are gone
    pool.forget("t", "u")  # the DELETE sent again
    assert u not in own.adapters and u not in pool.loaded and not pool._dropping


def test_a_stream_whose_adapter_is_dropped_before_its_generation_begins_raises_adapter_not_loaded(tiny_generator_dir, tmp_path):
    """A stream for an adapter whose drop waits for another of its generations: the stream's check passes (still
    loaded), its generation waits behind the drop, then finds the adapter gone. Before, that AdapterNotLoaded was raised
    in the generating thread and lost: the stream ended with an empty answer (a chat answered "" and stored), where
    the service asks the pool again on AdapterNotLoaded (pool47). Now the stream raises it, before any piece."""
    from pluralign.policy.generator import AdapterNotLoaded

    own, pool = pool_of_users(tiny_generator_dir, tmp_path, ("u",))
    u = pool.adapter_for("t", "u")
    long, _, tokens = long_generation(own, adapter=u)
    drop, _ = in_lane("acme", own.drop_adapter, u)
    wait_until(lambda: own._use._dropping[u] == 1, "the drop waits for u's generation")
    pieces = own.stream(MESSAGES, sampling=Sampling(max_tokens=4, temperature=0), adapter=u)
    CALLER.set("tenant:globex")
    with pytest.raises(AdapterNotLoaded):
        next(pieces)
    long.join(60)
    drop.join(60)


LONG_PROMPT = [{"role": "user", "content": "Tell me about cats, dogs and the sea. " * 60}]  # ~600 tokens: many slices of 48


def test_a_long_prompt_s_prefill_takes_turns_with_another_lane_s_short_generation(tiny_generator_dir):
    """Session 47's close: a prompt's prefill was one forward in one turn (4 candidates of 1,600 prompt tokens held the
    model ~21 s on two cores), and every other lane's token waited for all of it. Now the prompt is forwarded in slices
    into the KV cache, the model handed to a waiting lane between two: globex's 4 tokens are generated between acme's
    slices, before acme's prefill ends."""
    own = Generator.from_folder(tiny_generator_dir, device=torch.device("cpu"), prefill_slice_tokens=48)
    prompt_tokens = own.prompt_tokens(LONG_PROMPT)
    forwards: list[tuple[str, int]] = []  # (lane, tokens forwarded), in the order the model ran them
    short: list = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        forwards.append((CALLER.get(), int(ids.shape[1])))
        if CALLER.get() == "tenant:acme" and not short:  # acme's first forward: globex's chat comes and waits
            short.extend(in_lane("globex", own.generate, MESSAGES, sampling=Sampling(max_tokens=4, temperature=0)))
            wait_until(lambda: own._turns.waiting() >= 1, "globex waits for the model")

    handle = own.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        long, long_out = in_lane("acme", own.generate, LONG_PROMPT, n=2, sampling=Sampling(max_tokens=3, temperature=0))
        long.join(60)
        short[0].join(60)
    finally:
        handle.remove()
    assert long_out and short[1] and short[1][0][0][0].tokens <= 4
    acme = [i for i, (lane, _) in enumerate(forwards) if lane == "tenant:acme"]
    fed, prefill_end = 0, None
    for i in acme:
        fed += forwards[i][1]
        if fed >= prompt_tokens:
            prefill_end = i
            break
    globex = [i for i, (lane, _) in enumerate(forwards) if lane == "tenant:globex"]
    assert globex and max(globex) < prefill_end, f"globex's steps waited for acme's whole prefill: {forwards}"


def test_a_prompt_prefilled_in_slices_gives_the_same_tokens_as_in_one_forward(tiny_generator_dir, tmp_path):
    """A seeded answer's n candidates of one prompt (forwarded once, the cache repeated), left-padded styled rows
    (greedy), and a seeded stream through an adapter: the same tokens prefilled in slices as in one forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pluralign.policy.styles import choose_styles

    torch.manual_seed(0)
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "u1")
    own = Generator.from_folder(tiny_generator_dir, device=torch.device("cpu"), prefill_slice_tokens=48)
    own.load_adapter("u1", tmp_path / "u1")
    seeded = Sampling(max_tokens=8, temperature=1.0, seed=5)
    greedy = Sampling(max_tokens=8, temperature=0)
    styles = choose_styles(2, seed=1)

    def answers(slice_tokens: int):
        own.prefill_slice_tokens = slice_tokens
        return [own.generate(LONG_PROMPT, n=2, sampling=seeded), own.generate_styled(LONG_PROMPT, styles, sampling=greedy),
                list(own.stream(LONG_PROMPT, seeded, adapter="u1"))]

    ours, theirs = answers(48), answers(1 << 20)  # in slices; in one forward (the prompt fits one slice)
    assert own.prompt_tokens(LONG_PROMPT) > 8 * 48
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"answer {i} differs"


def test_a_chat_cancelled_during_a_long_prompt_s_prefill_stops_between_two_slices(generator):
    """A client gone (`cancel` set, as the service sets it on a disconnect) during a long prompt's prefill stops it at
    the next slice: one forward of 64 of the prompt's ~600 tokens, then `Cancelled`, no other forward. docs/api.md said
    a disconnect was seen only after the prefill, which "runs to its end first" (the one forward before session 48)."""
    from pluralign.policy.generator import Cancelled

    cancel, forwards = threading.Event(), []

    def gone(module, args, kwargs):  # the client goes while the first slice is forwarded
        forwards.append(int(kwargs.get("input_ids", args[0] if args else None).shape[1]))
        cancel.set()

    handle = generator.model.register_forward_pre_hook(gone, with_kwargs=True)
    try:
        with pytest.raises(Cancelled, match=r"^cancelled after 64 of \d+ prompt tokens' prefill$"):
            generator.generate(LONG_PROMPT, n=4, sampling=Sampling(max_tokens=3, temperature=0), cancel=cancel)
    finally:
        handle.remove()
    assert generator.prefill_slice_tokens == 64 and generator.prompt_tokens(LONG_PROMPT) > 8 * 64
    assert forwards == [64], forwards


def test_stop_strings_are_set_up_before_the_generation_takes_its_turn(generator):
    """transformers' stop-string set-up reads the tokenizer's whole vocabulary (~1 s for SmolLM2's 49k tokens). Passed as
    `generate(stop_strings=...)` it ran inside the generation's turn, and every other lane's token waited for it; now it
    is done before the turn is taken (and kept per stop strings): done while the model is still held by another."""
    from transformers.generation.stopping_criteria import STOP_STRING_EMBEDDING_CACHE

    stop = ("zqxunlikely48",)  # (ASCII letters: matched as these bytes by a byte-level tokenizer)
    held, free = threading.Event(), threading.Event()

    def hold() -> None:
        with generator._turns.turn("holder"):
            held.set()
            free.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait(60)
    try:
        waiting, _ = in_lane("globex", generator.generate, MESSAGES, sampling=Sampling(max_tokens=2, temperature=0, stop=stop))
        wait_until(lambda: generator._turns.waiting() >= 1, "the generation waits for the model")
        assert any(stop[0].encode() in key[2] for key in STOP_STRING_EMBEDDING_CACHE), "set up inside the turn, not before it"
    finally:
        free.set()
    waiting.join(60)
    holder.join(60)


def test_a_model_with_no_attention_cache_prefills_a_long_prompt_in_one_forward(generator):
    """Review 48: the sliced prefill forwards a prompt in pieces into a KV cache, which a state-space model folder
    (Mamba: transformers' LinearAttentionLayer, no keys and values) cannot continue: every prompt past one slice was a
    RuntimeError where it was answered before session 48. Such a model's prefill is one forward, as before."""
    from transformers import AutoModelForCausalLM, MambaConfig

    tokenizer = generator.tokenizer  # (the module's: read only)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(MambaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, state_size=4))
    own = Generator(model, tokenizer, "mamba", prefill_slice_tokens=16)
    seeded = Sampling(max_tokens=3, temperature=1.0, seed=5)
    messages = [{"role": "user", "content": "Tell me about cats, dogs and the sea. " * 6}]
    candidates, prompt_tokens = own.generate(messages, n=2, sampling=seeded)
    assert prompt_tokens > 16 and len(candidates) == 2 and all(1 <= c.tokens <= 3 for c in candidates)
    assert not own.shared_prefill and generator.shared_prefill  # its n rows are forwarded each: `max_prefill_tokens` counts them
