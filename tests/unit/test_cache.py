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
