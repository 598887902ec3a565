"""One tenant never stalls another through the shared text encoder. Each encoder held one lock for a
whole call, and `threading.Lock` is not fair: an acme score of 33 texts of 2,200 characters held it
8-10 s, and two acme loops of them took globex's score from p50 101 ms to 22 s (a hostile-tenant trial).
An encoder now runs a call in slices of a bounded number of word pieces, one turn each, callers
served round-robin (`pluralign.turns.Turns`): another tenant's text is encoded between two slices of
a big batch. Deterministic: hooks record whose slice ran, and hold a slice until the other caller waits."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from pluralign.embed.base import slices
from pluralign.turns import CALLER, Turns


def wait_until(condition, what: str) -> None:
    """Polls `condition` (a safety net against a hang, not a timing assertion)."""
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.002)


def as_tenant(tenant: str, fn, *args):
    def run():
        CALLER.set(f"tenant:{tenant}")  # as service.auth sets it for a request (a fresh thread: its own context)
        fn(*args)

    return threading.Thread(target=run)


def globex_waiting(turns: Turns, ran: list) -> threading.Thread:
    """globex's caller, started (while another lane holds the turn), once it waits for its turn; it appends "globex" to
    `ran` when its turn comes."""
    def globex():
        with turns.turn("tenant:globex"):
            ran.append("globex")

    other = threading.Thread(target=globex)
    other.start()
    wait_until(lambda: turns.waiting() == 1, "globex waits for its turn")
    return other


def test_the_caller_that_waited_goes_before_the_holders_next_turn():
    turns, ran = Turns(), []
    with turns.turn("tenant:acme"):
        other = globex_waiting(turns, ran)
    with turns.turn("tenant:acme"):  # acme's next piece, asked for at once
        ran.append("acme")
    other.join()
    assert ran == ["globex", "acme"] and turns.waiting() == 0



def test_a_tenant_with_several_callers_waiting_gets_one_turn_a_round():
    """Lanes, not callers, take turns: acme's request threads all waiting (a burst of scores) put globex
    behind one of theirs, not behind each of them (a fair lock that ignored lanes passed the tests above)."""
    turns, ran, threads = Turns(), [], []

    def take(lane, name):
        with turns.turn(lane):
            ran.append(name)

    with turns.turn("tenant:acme"):
        for name, lane in [("acme 1", "tenant:acme"), ("acme 2", "tenant:acme"), ("acme 3", "tenant:acme"), ("globex", "tenant:globex")]:
            threads.append(threading.Thread(target=take, args=(lane, name)))
            threads[-1].start()
            wait_until(lambda n=len(threads): turns.waiting() == n, f"{name} waits")
    for thread in threads:
        thread.join()
    assert ran == ["acme 1", "globex", "acme 2", "acme 3"] and turns.waiting() == 0


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("handed", [False, True], ids=["before its turn", "as its turn came"])
def test_a_caller_interrupted_while_waiting_leaves_the_turns_to_the_others(handed):
    """A signal (Ctrl-C in the CLI, SIGTERM's handler) raising in a caller that waits for its turn: it leaves
    the queue, and a turn handed to it meanwhile goes on to the next caller, not lost with it."""
    turns, release, holding = Turns(), threading.Event(), threading.Event()

    def acme():
        with turns.turn("tenant:acme"):
            holding.set()
            release.wait()

    holder = threading.Thread(target=acme)
    holder.start()
    holding.wait()

    def interrupt(*_):
        if handed:  # acme's turn ends, and is handed to this caller, before the handler raises
            release.set()
            holder.join()
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.get_ident()
    kick = threading.Thread(target=lambda: (wait_until(lambda: turns.waiting() == 1, "the main thread waits"),
                                            signal.pthread_kill(main, signal.SIGUSR1)))
    kick.start()
    try:
        with pytest.raises(Interrupted), turns.turn("tenant:globex"):
            pytest.fail("the interrupted caller got its turn")
    finally:
        signal.signal(signal.SIGUSR1, previous)
        kick.join()
    release.set()
    holder.join()
    ran = []

    def initech():
        with turns.turn("tenant:initech"):
            ran.append(1)

    later = threading.Thread(target=initech, daemon=True)
    later.start()
    later.join(20)  # a safety net: a turn lost with the interrupted caller is held for ever
    assert ran == [1] and turns.waiting() == 0

def test_slices_bound_the_padded_word_pieces():
    tokens = [256, 256, 256, 256, 256, 10, 10, 10, 300]
    assert slices(range(9), tokens, budget=1024, most=64) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert slices([5, 6, 7], tokens, budget=1024, most=2) == [[5, 6], [7]]
    assert slices([], tokens) == []


LONG = [f"Text {i}: " + "a sentence about values, trade-offs and what people prefer. " * 6 for i in range(6)]  # ~70 word pieces


def tiny_causal_lm(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(params=["sentence", "causal"])
def encoder(request, sentence_encoder, monkeypatch):
    """A real encoder whose slices hold one long text each, and the name of the method one slice runs."""
    if request.param == "sentence":
        monkeypatch.setattr(sentence_encoder, "slice_tokens", 80)
        return sentence_encoder, sentence_encoder.model, "encode"
    from transformers import AutoTokenizer

    from pluralign.embed.encoders import CausalLMEncoder
    from pluralign.embed.models import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), model_input_names=["input_ids", "attention_mask"])
    causal = CausalLMEncoder(tiny_causal_lm(tokenizer), tokenizer, encoder_id="tiny", slice_tokens=80)
    return causal, causal, "_encode"


def test_another_tenants_text_is_encoded_before_a_big_batch_ends(encoder, monkeypatch):
    encoder, owner, method = encoder
    real = getattr(owner, method)
    ran: list[tuple[str, int]] = []  # whose slice ran, and its texts
    got = {}

    def globex():
        got["globex"] = encoder.encode(["Suggest a weekend plan"])

    victim = as_tenant("globex", globex)

    def slice_runs(texts, *args, **kwargs):
        ran.append(("globex" if texts == ["Suggest a weekend plan"] else "acme", len(texts)))
        if len(ran) == 1:  # acme's first slice: globex asks for the encoder meanwhile
            victim.start()
            wait_until(lambda: encoder.turns.waiting() == 1, "globex waits for the encoder")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(owner, method, slice_runs)
    attacker = as_tenant("acme", lambda: got.setdefault("acme", encoder.encode(LONG)))
    attacker.start()
    attacker.join()
    victim.join()
    assert got["acme"].shape == (6, encoder.dim) and got["globex"].shape == (1, encoder.dim)
    assert sum(n for who, n in ran if who == "acme") == 6
    assert ran.index(("globex", 1)) == 1  # right after acme's first slice, not after its whole batch


def test_sliced_vectors_are_the_whole_calls(sentence_encoder, monkeypatch):
    texts = [*LONG[:3], "short.", "word " * 300, "", "Suggest a weekend plan", "short."]  # one cut at 256, one empty, a repeat
    whole = sentence_encoder.model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    before = sentence_encoder.truncated
    monkeypatch.setattr(sentence_encoder, "slice_tokens", 80)
    sliced = sentence_encoder.encode(texts)
    assert sliced.dtype == np.float32 and sliced.shape == whole.shape
    assert np.abs(sliced - whole).max() < 1e-5  # the same vectors, in the callers' order (padding differs: float noise)
    assert sentence_encoder.truncated - before == 1


def test_onnx_encodes_another_tenants_text_while_a_big_batch_runs(monkeypatch):
    """The default `minilm-onnx` holds no lock (ONNX Runtime runs calls side by side; its tokenizer is always
    called with one setting): globex's text is encoded while acme's batch is inside the model. A guard:
    this passed before session 42 too."""
    from pluralign.embed.encoders import make_encoder

    encoder = make_encoder("minilm-onnx")
    real, done, got = encoder.session.run, threading.Event(), {}

    def run(outputs, feeds):
        if len(feeds["input_ids"]) > 1:  # acme's batch: globex's one text comes and goes meanwhile
            victim = as_tenant("globex", lambda: (got.setdefault("globex", encoder.encode(["Suggest a weekend plan"])), done.set()))
            victim.start()
            done.wait(20)  # a safety net: before globex is done, only a lock taken for acme's call would keep it out
            got["globex first"] = done.is_set()
        return real(outputs, feeds)

    monkeypatch.setattr(encoder.session, "run", run)
    attacker = as_tenant("acme", lambda: got.setdefault("acme", encoder.encode(LONG)))
    attacker.start()
    attacker.join()
    assert got["globex first"] and got["globex"].shape == (1, 384) and got["acme"].shape == (6, 384)


def test_another_tenants_text_is_encoded_while_a_big_call_is_counted(encoder, monkeypatch):
    """A call's texts are counted (word pieces, to cut it into slices) outside the turns: the count of the
    feedback worker's 1,024 texts of 20,000 characters took ~20 s, and held the encoder's first turn so, every
    tenant's text behind it. Here globex's text comes and goes while acme's count runs."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    encoder, _, _ = encoder
    count, done, got = PreTrainedTokenizerBase.__call__, threading.Event(), {}

    def counting(self, texts, *args, **kwargs):
        if kwargs.get("truncation") is False and len(texts) == len(LONG) and "globex first" not in got:  # acme's count
            victim = as_tenant("globex", lambda: (got.setdefault("globex", encoder.encode(["Suggest a weekend plan"])), done.set()))
            victim.start()
            done.wait(10)  # a safety net: only a turn held over acme's count keeps globex out
            got["globex first"] = done.is_set()
        return count(self, texts, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", counting)
    attacker = as_tenant("acme", lambda: got.setdefault("acme", encoder.encode(LONG)))
    attacker.start()
    attacker.join()
    assert got["globex first"] and got["acme"].shape == (6, encoder.dim)
    wait_until(lambda: "globex" in got, "globex's text is encoded")
    assert got["globex"].shape == (1, encoder.dim) and encoder.turns.waiting() == 0


def test_pass_turn_keeps_the_turn_when_no_one_waits_and_else_serves_the_other_lanes_first():
    """A generation calls `pass_turn` after each token: alone it keeps the model (no hand-over, no wait); with another
    lane waiting, that lane's work runs before the holder's next step, and the holder then goes on in the same block."""
    turns, ran = Turns(), []
    with turns.turn("tenant:acme"):
        assert turns.pass_turn("tenant:acme") is False
        ran.append("acme 1")
        other = globex_waiting(turns, ran)
        assert turns.pass_turn("tenant:acme") is True
        ran.append("acme 2")
    other.join()
    assert ran == ["acme 1", "globex", "acme 2"] and turns.waiting() == 0
