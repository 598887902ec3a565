"""The embedding cache: a second run embeds nothing and returns the same vectors."""

import numpy as np

from pluralign.embed.cache import CachedEncoder, EmbeddingCache


class CountingEncoder:
    encoder_id = "test/counting"
    dim = 4

    def __init__(self):
        self.calls = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0, float(hash(t) % 7)] for t in texts], np.float32)


def test_second_run_embeds_nothing(tmp_path):
    texts = ["apple", "banana", "apple", "cherry"]
    inner = CountingEncoder()
    first = CachedEncoder(inner, EmbeddingCache(tmp_path / "c.sqlite"))
    a = first.encode(texts)
    assert first.embedded == 3 and inner.calls == [["apple", "banana", "cherry"]]
    first.cache.close()

    inner2 = CountingEncoder()
    second = CachedEncoder(inner2, EmbeddingCache(tmp_path / "c.sqlite"))  # a new process would do this
    b = second.encode(texts)
    assert second.embedded == 0 and inner2.calls == []
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(b[0], b[2])


def test_cache_is_keyed_by_encoder_id(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    one = CountingEncoder()
    other = CountingEncoder()
    other.encoder_id = "test/other"
    CachedEncoder(one, cache).encode(["x"])
    wrapped = CachedEncoder(other, cache)
    wrapped.encode(["x"])
    assert wrapped.embedded == 1 and len(cache) == 2


def test_real_minilm_is_normalized_and_cached(minilm):
    vectors = minilm.encode(["The cat sat on the mat.", "A feline rested on a rug.", "Stock prices fell."])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # it embeds meaning
    before = minilm.embedded
    minilm.encode(["The cat sat on the mat."])
    assert minilm.embedded == before


def test_cache_is_keyed_by_the_encoders_max_length(tmp_path):
    """An encoder that reads 512 word pieces embeds a long text differently from one reading 256."""
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    short, longer = CountingEncoder(), CountingEncoder()
    short.max_length, longer.max_length = 256, 512
    CachedEncoder(short, cache).encode(["a long text"])
    again = CachedEncoder(longer, cache)
    again.encode(["a long text"])
    assert again.embedded == 1 and longer.calls == [["a long text"]]
    same = CountingEncoder()
    same.max_length = 256
    assert CachedEncoder(same, cache).encode(["a long text"]) is not None and same.calls == []


class FakeMiniLM(CountingEncoder):
    """Stands for a loaded encoder of MiniLM's identity (id, width, max_length) without its weights."""

    encoder_id, dim, max_length = "sentence-transformers/all-MiniLM-L6-v2", 384, 256

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([np.full(self.dim, len(t) + 1.0, np.float32) for t in texts])


def test_a_lazy_encoder_loads_at_the_first_text_the_cache_lacks(tmp_path):
    """The CLI's encoder (training/common.py cached_encoder): nothing loads while every text is cached;
    vectors cached by another encoder (its id) are not taken for this one's."""
    from pluralign.embed.named import LazyEncoder

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    loads = []

    def load(kind=FakeMiniLM):
        loads.append(kind)
        return kind()

    first = CachedEncoder(LazyEncoder("minilm", load=load), cache)
    assert first.cache_id == "sentence-transformers/all-MiniLM-L6-v2@256" and loads == []  # known before loading
    vectors = first.encode(["apple", "fig"])
    assert len(loads) == 1
    rerun = CachedEncoder(LazyEncoder("minilm", load=load), cache)
    np.testing.assert_array_equal(rerun.encode(["fig", "apple"]), vectors[::-1])
    assert len(loads) == 1 and not rerun.encoder.loaded and rerun.embedded == 0

    class FakeSmolLM2(FakeMiniLM):
        encoder_id, dim = "HuggingFaceTB/SmolLM2-135M-Instruct", 576

    other = CachedEncoder(LazyEncoder("smollm2", load=lambda: load(FakeSmolLM2)), cache)
    assert other.encode(["apple"]).shape == (1, 576) and loads[-1] is FakeSmolLM2 and other.embedded == 1


def test_a_lazy_encoder_refuses_a_load_of_another_identity_and_caches_nothing(tmp_path):
    """What loads must be what the name stands for: vectors of another width (or model) cached under
    MiniLM's id would be served to every later run."""
    import pytest

    from pluralign.embed.named import LazyEncoder

    class Narrow(FakeMiniLM):
        dim = 4

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match=r"encoder 'minilm' loaded as .*'sentence-transformers/all-MiniLM-L6-v2', 4, 256\), not the .* 384, 256\)"):
        CachedEncoder(LazyEncoder("minilm", load=Narrow), cache).encode(["apple"])
    assert len(cache) == 0
    with pytest.raises(ValueError, match="unknown encoder 'minilm2': expected `minilm`"):
        LazyEncoder("minilm2", load=Narrow)


def test_the_real_encoders_are_what_their_names_stand_for(sentence_encoder):
    """`LazyEncoder` keys the cache and checks artifacts by the name's identity before anything loads; the
    real MiniLM is that (the ONNX ones: tests/unit/test_onnx_encoder.py; SmolLM2 576-d: its config)."""
    from pluralign.embed.named import LazyEncoder

    lazy = LazyEncoder("minilm", load=lambda: sentence_encoder)
    assert lazy.encoder() is sentence_encoder and (lazy.encoder_id, lazy.dim, lazy.max_length) == (sentence_encoder.encoder_id, 384, 256)


def test_scoped_vectors_are_kept_per_scope_and_encoder_bounded_in_bytes_and_dropped_by_scope():
    """`ScopedVectors` (the service's pool vectors, session pool52): a text embedded once per (scope, encoder),
    another scope's or encoder's embedded again, the least recently used dropped past `max_bytes` (16 bytes a
    vector here and its entry's VECTOR_ENTRY_BYTES: 3 kept), a scope's dropped by `forget_scope` alone."""
    from pluralign.embed.cache import SCOPE_BYTES, VECTOR_ENTRY_BYTES, ScopedVectors

    kept = ScopedVectors(max_bytes=3 * (16 + VECTOR_ENTRY_BYTES) + 2 * SCOPE_BYTES)  # two scopes' bookkeeping counted too
    inner, other = CountingEncoder(), CountingEncoder()
    other.encoder_id = "test/other"
    a = kept.encode(inner, "acme", ["apple", "banana", "apple"])
    assert inner.calls == [["apple", "banana"]]
    np.testing.assert_array_equal(kept.encode(inner, "acme", ["banana", "apple"]), a[[1, 0]])
    assert len(inner.calls) == 1
    kept.encode(inner, "globex", ["apple"])  # another scope: embedded for it
    kept.encode(other, "acme", ["apple"])  # another encoder: embedded by it
    assert inner.calls[1:] == [["apple"]] and other.calls == [["apple"]]
    assert len(kept) == 3  # four vectors embedded, the least recently used (acme's banana) dropped
    kept.encode(inner, "acme", ["banana"])
    assert inner.calls[2:] == [["banana"]]
    assert kept.forget_scope("acme") == 2 and len(kept) == 1
    kept.encode(inner, "globex", ["apple"])
    assert len(inner.calls) == 3  # globex's apple outlived acme's drop


def test_scoped_vectors_one_scopes_flood_does_not_evict_another_scopes_recent_vectors():
    """Session http54: `ScopedVectors` was one LRU over every scope's vectors, so a tenant scoring many fresh texts
    (`Runtime.score_vectors`, `POST /v1/rewards/score`) pushed out every other tenant's cached vectors: globex's pool,
    used a moment before, was embedded again. Past the bound the scope holding the most gives up its least recently
    used vectors: acme's flood evicts acme's own, globex keeps all of its vectors, and acme keeps what the bound leaves
    it. `forget_scope` gives its bytes back."""
    from pluralign.embed.cache import SCOPE_BYTES, VECTOR_ENTRY_BYTES, ScopedVectors

    one = 16 + VECTOR_ENTRY_BYTES  # a 4-d float32 vector and its entry
    kept, inner = ScopedVectors(max_bytes=20 * one + 2 * SCOPE_BYTES), CountingEncoder()
    pool = [f"globex pool {i}" for i in range(5)]
    kept.encode(inner, "globex", pool)
    for batch in range(10):  # 100 fresh texts of acme's, 10 at a time, globex's pool read again between
        kept.encode(inner, "acme", [f"acme candidate {batch} {i}" for i in range(10)])
        if batch == 4:
            kept.encode(inner, "globex", pool)
    calls = len(inner.calls)
    kept.encode(inner, "globex", pool)
    assert len(inner.calls) == calls, inner.calls[calls:]  # all of globex's five read back: none embedded again
    assert kept.scope_bytes("globex") == 5 * one and kept.scope_bytes("acme") == 15 * one  # acme holds the rest
    assert len(kept) == 20
    kept.encode(inner, "acme", ["acme candidate 9 9"])  # its newest survived its own flood
    assert len(inner.calls) == calls
    assert kept.forget_scope("acme") == 15 and kept.scope_bytes("acme") == 0 and len(kept) == 5
    kept.encode(inner, "initech", [f"initech {i}" for i in range(14)])  # room freed by the drop is anyone's
    assert kept.scope_bytes("globex") == 5 * one and len(kept) == 19


def test_scoped_vectors_an_encode_running_while_its_scope_is_dropped_keeps_nothing():
    """review pool52: `forget_scope` promises that an `encode` under the scope running while it drops it returns its
    vectors but keeps none (a DELETE while a pool is embedded): the encoder here is held mid-call on another thread
    while the scope is dropped; its vectors come back, and the same texts sent again are embedded again. Another
    scope's encode running meanwhile keeps its own."""
    import threading

    from pluralign.embed.cache import ScopedVectors

    entered, release = threading.Event(), threading.Event()

    class Held(CountingEncoder):
        def encode(self, texts):
            if "held" in texts:
                entered.set()
                assert release.wait(10)
            return super().encode(texts)

    kept, inner = ScopedVectors(max_bytes=1 << 20), Held()
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("acme", kept.encode(inner, "acme", ["held", "pear"])))
    worker.start()
    assert entered.wait(10)
    assert kept.forget_scope("acme") == 0  # nothing kept yet; the running encode is told by the generation
    kept.encode(inner, "globex", ["pear"])  # another scope meanwhile: kept
    release.set()
    worker.join(10)
    assert out["acme"].shape == (2, 4) and out["acme"][0, 0] == 4.0  # its vectors are returned ...
    assert len(kept) == 1  # ... but none kept: only globex's pear
    kept.encode(inner, "acme", ["held", "pear"])
    assert inner.calls[-1] == ["held", "pear"]  # embedded again after the drop
    kept.encode(inner, "globex", ["pear"])
    assert inner.calls[-1] == ["held", "pear"]  # globex's was kept


def test_scoped_vectors_hold_no_more_memory_than_their_bound():
    """review pool52: `ScopedVectors(max_bytes)` counted a vector's own bytes alone (`nbytes`, 1,536 at 384-d), while each
    kept one also holds its key (scope, encoder, a sha256), its array's header and the LRU's bookkeeping: the service's
    64 MiB of pool vectors (`POOL_VECTOR_BYTES`, "64 MiB in all" in docs/api.md) took ~86 MiB. What one holds, traced by
    Python's allocator, now stays within `max_bytes`, and is most of it once full."""
    import tracemalloc

    from pluralign.embed.cache import ScopedVectors

    class Wide:
        encoder_id, dim = "test/wide", 384

        def encode(self, texts):
            return np.ones((len(texts), 384), np.float32)

    bound = 4 << 20
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = ScopedVectors(max_bytes=bound)
        for batch in range(40):
            kept.encode(Wide(), f"tenant-{batch % 7}", [f"text {batch} {i}" for i in range(100)])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) < 4000  # full: the least recently used were dropped
    assert 0.7 * bound < held <= bound, (held, bound, len(kept))
