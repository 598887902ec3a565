"""One tenant never stalls another through the shared text encoder. Each encoder held one lock for a
whole call, and `threading.Lock` is not fair: an acme score of 33 texts of 2,200 characters held it
8-10 s, and two acme loops of them took globex's score from p50 101 ms to 22 s (a hostile-tenant trial).
An encoder now runs a call in slices of a bounded number of word pieces, one turn each, callers
served round-robin (`pluralign.turns.Turns`): another tenant's text is encoded between two slices of
a big batch. Deterministic: hooks record whose slice ran, and hold a slice until the other caller waits."""

from __future__ import annotations

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


def test_the_caller_that_waited_goes_before_the_holders_next_turn():
    turns, ran = Turns(), []

    def globex():
        with turns.turn("tenant:globex"):
            ran.append("globex")

    other = threading.Thread(target=globex)
    with turns.turn("tenant:acme"):
        other.start()
        wait_until(lambda: turns.waiting() == 1, "globex waits for its turn")
    with turns.turn("tenant:acme"):  # acme's next piece, asked for at once
        ran.append("acme")
    other.join()
    assert ran == ["globex", "acme"] and turns.waiting() == 0


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
