"""The adapter pool under concurrency (session pool48): an eviction waits for no generation with the pool's lock held, a
call needing several users' adapters never sees the pool change under it while it waits for a drop. The real pool on
a real tiny `Generator` with tiny LoRA adapters; interleavings are made with threads and events, never sleeps."""

from __future__ import annotations

import shutil
import threading

import msgspec
import pytest
import torch

from pluralign.policy.adapters import AdapterMeta, AdapterPool, AdapterRegistry, adapter_name, read_meta, write_meta
from pluralign.policy.generator import Generator, Sampling
from pluralign.turns import CALLER
from tests.service.test_generation_turns import MESSAGES, wait_until

LONG = Sampling(max_tokens=120, temperature=0)
USERS = ("a", "b", "c")


@pytest.fixture(scope="module")
def saved(tiny_generator_dir, tmp_path_factory):
    """A registry folder holding a LoRA adapter of tenant "t" for each of `USERS` (saved once for the module)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    registry = AdapterRegistry(root)
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for seed, user in enumerate(USERS):  # one model, its LoRA weights drawn anew for each user
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, weight in adapted.named_parameters():
                if "lora_" in name:
                    weight.normal_(std=0.02)
        registry.save("t", user, adapted, AdapterMeta(kind="user", base_model="tiny", shots=0, data_version="test", metrics={}))
    return root


@pytest.fixture(scope="module")
def own(tiny_generator_dir):
    return Generator.from_folder(tiny_generator_dir, model_id="tiny", device=torch.device("cpu"))


@pytest.fixture
def pool(own, saved, tmp_path):
    """A pool on the module's generator over a copy of `saved` (a test may change its files); the generator holds no
    adapter once the test ends."""
    shutil.copytree(saved, tmp_path / "adapters")
    yield AdapterPool(own, AdapterRegistry(tmp_path / "adapters"), "tiny", budget_bytes=1 << 30)
    for name in list(own.adapters):
        own.drop_adapter(name)


class Tokens:
    """A `cancel` for a generation: counts its tokens (asked once a token), and stops it once `stop` is set."""

    def __init__(self):
        self.count, self.stop = 0, threading.Event()

    def is_set(self) -> bool:
        self.count += 1
        return self.stop.is_set()


def started(lane: str, fn, *args, **kwargs) -> tuple[threading.Thread, list, list]:
    """A started thread running `fn` as tenant `lane`'s request would, and the lists its result or exception go to."""
    out: list = []
    failed: list = []

    def run():
        CALLER.set(f"tenant:{lane}")
        try:
            out.append(fn(*args, **kwargs))
        except Exception as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out, failed


def long_generation(own, adapter: str) -> tuple[threading.Thread, list, list, Tokens]:
    """bravo's long generation with `adapter`, started and past its first tokens."""
    tokens = Tokens()
    thread, out, failed = started("bravo", own.generate, MESSAGES, sampling=LONG, adapter=adapter, cancel=tokens)
    wait_until(lambda: tokens.count >= 3, "the long generation runs")
    return thread, out, failed, tokens


def test_an_eviction_waiting_for_a_busy_adapters_generation_holds_no_other_users_chat(own, pool):
    """A new user's load with the pool full evicts the least recently used adapter, an idle one first; when every
    loaded adapter is in use, a busy one, and its drop waits for the generations using it. Before (pool48) that drop ran
    under the pool's lock: the new user's chat, and every other user's chat asking the pool for its adapter, waited for
    the evicted adapter's chat to end. Now the evicted adapter leaves the pool's table under the lock and is dropped on a
    thread of its own once its generations end: the load and the others' chats go on."""
    a = pool.adapter_for("t", "a")
    pool.budget_bytes = pool.bytes_used  # room for one adapter: a, in use below
    long, _, long_failed, tokens = long_generation(own, a)
    c, c_out, _ = started("globex", pool.adapter_for, "t", "c")  # evicts a, busy: its drop waits for a's generation
    c.join(60)
    other, other_out, _ = started("initech", pool.adapter_for, "t", "nobody")  # a user without an adapter
    other.join(60)
    assert long.is_alive() and tokens.count < LONG.max_tokens, "the eviction's drop held the pool until a's chat ended"
    assert c_out == [adapter_name("t", "c")] and other_out == [pool.fallback] and set(pool.loaded) == {c_out[0]}
    evicted_at = tokens.count
    wait_until(lambda: tokens.count > evicted_at + 3 or not long.is_alive(), "a's generation goes on after the eviction")
    assert a in own.adapters, "a was dropped under its generation"
    tokens.stop.set()  # its client leaves: the generation ends, then a's drop
    long.join(60)
    assert type(long_failed[0]).__name__ == "Cancelled", long_failed  # not peft's error for an adapter dropped under it
    wait_until(lambda: a not in own.adapters and not pool._dropping, "a is dropped once its generation ended")
    assert own.adapters == {c_out[0]} and pool.adapter_for("t", "a") == a  # a's next chat loads it again (c evicted)


def test_an_eviction_whose_drop_failed_leaves_the_adapter_for_the_next_one_to_drop(own, pool, monkeypatch):
    """The drop can fail (a remote generation server unreachable, a generation process lost): the evicted adapter goes
    back in the pool's table, first in line, so the next eviction (or `forget`) drops it, not left in the host's
    memory unaccounted."""
    a = pool.adapter_for("t", "a")
    pool.budget_bytes = pool.bytes_used
    drop = own.drop_adapter

    def unreachable(name):
        monkeypatch.setattr(own, "drop_adapter", drop)  # once
        raise ConnectionError("generation server at http://gen unreachable")  # (the openai client: seconds to import)

    monkeypatch.setattr(own, "drop_adapter", unreachable)
    b = pool.adapter_for("t", "b")  # evicts a: its drop fails
    wait_until(lambda: not pool._dropping, "the failed drop ended")
    assert list(pool.loaded) == [a, b] and a in own.adapters, "a is held by the host but not counted in the pool"
    c = pool.adapter_for("t", "c")  # evicts a (first in line) and b
    wait_until(lambda: not pool._dropping, "the drops ended")
    assert list(pool.loaded) == [c] and own.adapters == {c}


class Watched(threading.Condition):
    """The pool's condition, telling the test once a caller waits on it (for a drop to end)."""

    def __init__(self, lock, waiting: threading.Event):
        super().__init__(lock)
        self.waiting = waiting

    def wait(self, timeout=None):
        self.waiting.set()
        return super().wait(timeout)


def test_a_call_for_several_users_never_hands_out_an_adapter_dropped_while_it_waited(own, pool):
    """`generate` (and `score`, `adapters_for`) resolve every row's adapter with the pool's lock held, then use them. A
    row whose adapter is being dropped (b retrained: its promotion's `forget` waits for b's chat) waits for the drop,
    and that wait releases the lock. Before (pool48) the rows before it were resolved already: a's adapter, dropped
    meanwhile (a's DELETE, or another user's load evicting it), was handed out once b's drop ended, and the batch
    generated with an adapter the model no longer held. Now the call waits before resolving any row, and resolves them
    all in one hold of the lock, which no drop begins without."""
    a, b = pool.adapter_for("t", "a"), pool.adapter_for("t", "b")
    long, _, long_failed, tokens = long_generation(own, b)
    folder = pool.registry.folder("t", "b")  # b retrained and promoted: new files, then the pool forgets the old ones
    write_meta(folder, msgspec.structs.replace(read_meta(folder), created_at=read_meta(folder).created_at + 1))
    waiting = threading.Event()
    pool._cond = Watched(pool._lock, waiting)
    promotion, _, _ = started("acme", pool.forget, "t", "b")
    wait_until(lambda: own._use._dropping[b] == 1, "b's drop waits for b's generation")
    batch, batch_out, batch_failed = started("globex", pool.generate, [("t", "a"), ("t", "b")], [MESSAGES] * 2,
                                             own.tokenizer, max_new_tokens=4)
    assert waiting.wait(60), "the call never waited for b's drop"
    pool.forget("t", "a")  # meanwhile: a's adapter leaves memory (the next request loads it again)
    tokens.stop.set()  # b's chat ends (its client left): b's drop, then the call, go on
    for thread in (long, promotion, batch):
        thread.join(60)
    assert not batch_failed, f"the call generated with an adapter dropped while it waited: {batch_failed[0]!r}"
    assert len(batch_out[0]) == 2 and {a, b} <= own.adapters and type(long_failed[0]).__name__ == "Cancelled"


def test_a_forward_pass_of_the_pool_runs_beside_no_drop(own, pool, monkeypatch):
    """`generate` and `score` run their forward pass on the host's model under the pool's lock alone, and peft deletes a
    dropped adapter's weights from the layers they run through. So their own evictions are dropped at once, in their
    thread, before the forward pass (the service's `adapter_for` drops on a thread of its own: its generations take the
    model in turns, a drop's included); a drop under way (another user's `forget`) ends before any row is resolved."""
    a = pool.adapter_for("t", "a")
    pool.budget_bytes = pool.bytes_used
    drop, dropped_in = own.drop_adapter, []

    def recorded(name):
        dropped_in.append((name, threading.current_thread().name))
        drop(name)

    monkeypatch.setattr(own, "drop_adapter", recorded)
    assert len(pool.generate([("t", "b")], [MESSAGES], own.tokenizer, max_new_tokens=2)) == 1  # evicts a
    assert dropped_in == [(a, threading.current_thread().name)] and a not in own.adapters and not pool._dropping
