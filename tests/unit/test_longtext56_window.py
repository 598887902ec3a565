"""A long text is cut before it is tokenized, to the start whose word pieces are exactly those the encoder reads
(`pluralign.embed.base.window_texts`): the same ids, so the same vectors, in every script, for every encoder that
tokenizes locally (sentence-transformers, ONNX, causal LM) and for `pluralign serve-embeddings`' token count.
The time it saves is measured in benchmarks/long_texts.py (BENCHMARKS.md), not here."""

from __future__ import annotations

import copy
import itertools
import logging
import random

import numpy as np
import pytest

from pluralign.embed.base import window_texts

# pieces of text a tokenizer may join or split: whitespace of several kinds (and \x1c, which Python calls space and
# BERT deletes), combining marks alone and after a base, CJK and Thai (no spaces), emoji with joiners and skin tones,
# contractions, digits, letters whose case or form changes when normalized
ALPHABET = ["a", "b", "Z", "é", "e\u0301", "\u0301", "\u0300", "你", "好", "世", "。", "，", " ", " ", "  ", "\n", "\t",
            "\u3000", "\xa0", "\x1c", "\u200b", "🙂", "👩\u200d👩\u200d👧", "🏽", ",", ".", "'", "'s", "-", "1", "23", "ก", "ข",
            "\u0e34", "अ", "\u093f", "ب", "ـ", "Σ", "ς", "İ", "ß", "ﬁ", "\u2028", "\r\n"]


def mixed_texts(count: int) -> list[str]:
    """Texts of 50 to 3,000 pieces of ALPHABET, each text drawing them with its own weights (some nearly all CJK,
    some nearly all letters with no space, some all emoji)."""
    texts = []
    for seed in range(count):
        rng = random.Random(seed)
        weights = [rng.random() ** 3 for _ in ALPHABET]
        texts.append("".join(rng.choices(ALPHABET, weights, k=rng.randint(50, 3000))))
    return texts


def long_texts() -> dict[str, str]:
    """10-40 KB texts of one kind each: what a chat message or feedback text near the body limit may be, and more."""
    return {
        "latin": "The committee met on Tuesday; its members, weary, argued until dawn about the budget. " * 120,
        "cjk without spaces": "我们今天讨论了预算问题，委员会成员一直争论到天亮。这是一个很长的句子没有空格" * 250,
        "thai without spaces": "คณะกรรมการประชุมกันในวันอังคารและถกเถียงเรื่องงบประมาณจนรุ่งเช้า" * 150,
        "emoji with spaces": "🙂 👩\u200d👩\u200d👧 🏽👍 🎉🎉 ok " * 600,
        "emoji without spaces": "🙂👩\u200d👩\u200d👧🏽👍🎉" * 1000,
        "one long word": "supercalifragilistic" * 500,
        "long words and punctuation": ("pneumonoultramicroscopicsilicovolcanoconiosis" * 3 + "-") * 300,
        "combining marks": "Z\u0351\u0357a\u0306\u0301l\u0300g\u0308o\u0327 te\u0301xt\u0301 " * 400,
        "arabic and devanagari": "مرحبا بالعالم हिन्दी भाषा किताब " * 400,
        "urls": "https://example.com/a/very/long/path?query=" + "x1y2z3" * 2000,
    }


def ids(tokenizer, text: str, max_length: int) -> list[int]:
    return tokenizer(text, truncation=True, max_length=max_length, verbose=False)["input_ids"]


@pytest.fixture(scope="module")
def tokenizers(sentence_encoder):
    """Copies (their truncation settings change here) of MiniLM's WordPiece tokenizer and SmolLM2's byte-level BPE."""
    from transformers import AutoTokenizer

    from pluralign.embed.models import smollm2_dir

    return {"minilm": copy.deepcopy(sentence_encoder.counter), "smollm2": AutoTokenizer.from_pretrained(str(smollm2_dir()))}


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_the_cut_start_has_the_texts_word_pieces_in_many_scripts(tokenizers, name):
    tokenizer = tokenizers[name]
    cut_count, texts = 0, mixed_texts(30)
    for max_length in (8, 40):  # small windows: the cut falls in many different places
        for text, cut, count in zip(texts, *window_texts(tokenizer, texts, max_length), strict=True):
            assert text.startswith(cut)
            assert ids(tokenizer, cut, max_length) == ids(tokenizer, text, max_length), (text, max_length, len(cut))
            whole = len(tokenizer(text, verbose=False)["input_ids"])
            assert (count > max_length) == (whole > max_length)
            if cut == text:
                assert count == whole
            cut_count += cut != text
    assert cut_count > 50  # of 60: the texts were cut, not read whole


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_long_texts_are_read_only_to_their_window(tokenizers, name):
    tokenizer = tokenizers[name]
    for kind, text in long_texts().items():
        (cut,), (count,) = window_texts(tokenizer, [text], 256)
        assert ids(tokenizer, cut, 256) == ids(tokenizer, text, 256), kind
        assert min(count, 257) == min(len(tokenizer(text, verbose=False)["input_ids"]), 257), kind  # past 256 as the text is
        # one word to its end is read whole, as before (its pieces depend on all of it): for BERT a word past 100
        # characters is one [UNK], so those texts are a few word pieces; for BPE the emoji run and the long word are
        # one word each (tens of thousands of pieces), and Thai's marks split its words
        whole = {"thai without spaces", "emoji without spaces", "one long word", "urls"} if name == "minilm" else \
            {"emoji without spaces", "one long word"}
        assert (cut == text) == (kind in whole), (kind, len(cut))
        assert kind in whole or len(cut) <= (2048 if kind != "long words and punctuation" else 32768), (kind, len(cut))


def test_long_texts_embed_bit_for_bit_as_before(sentence_encoder):
    encoder = sentence_encoder
    kinds = ["latin", "cjk without spaces", "emoji with spaces", "combining marks", "arabic and devanagari"]  # cut ones
    texts = [long_texts()[kind] for kind in kinds]
    truncated = encoder.truncated
    alone = []
    for kind, text in zip(kinds, texts, strict=True):
        alone.append(encoder._run([text]))  # the model given the whole text, as before: it cuts at 256 word pieces
        assert np.array_equal(encoder.encode([text]), alone[-1]), kind
    assert encoder.truncated - truncated == len(texts)  # each counted as longer than the encoder reads
    together = encoder.encode([*texts[:3], "a short one"])  # a slice of several texts: their rows as alone
    assert np.allclose(together[:3], np.concatenate(alone[:3]), atol=1e-6)


def test_the_cache_keeps_a_long_texts_vector_under_the_whole_text(sentence_encoder, tmp_path):
    from pluralign.embed.cache import CachedEncoder, EmbeddingCache, text_key

    text = long_texts()["latin"]
    cut = window_texts(sentence_encoder.counter, [text], sentence_encoder.max_length)[0][0]
    assert len(cut) < len(text)
    cached = CachedEncoder(sentence_encoder, EmbeddingCache(tmp_path / "embeddings.sqlite"))
    vector = cached.encode([text])
    rows = cached.cache.get(cached.cache_id, [text_key(text), text_key(cut)])
    assert list(rows) == [text_key(text)] and np.array_equal(rows[text_key(text)], vector[0])
    assert np.array_equal(cached.encode([text]), vector) and cached.embedded == 1  # read back, not embedded again


def test_onnx_minilm_reads_the_same_window():
    from pluralign.embed.onnx import OnnxMiniLM

    encoder = OnnxMiniLM()
    texts = [long_texts()[kind] for kind in ("latin", "cjk without spaces")]
    alone = [encoder._batch([text]) for text in texts]  # the whole text, as before: cut at 256 word pieces
    assert np.array_equal(encoder.encode(texts[:1]), alone[0])
    assert np.allclose(encoder.encode(texts), np.concatenate(alone), atol=1e-6)


def test_a_causal_lm_encoder_reads_the_same_window(tokenizers):
    from pluralign.embed.encoders import CausalLMEncoder
    from tests.unit.test_encoder_turns import tiny_causal_lm

    tokenizer = copy.deepcopy(tokenizers["smollm2"])
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    encoder = CausalLMEncoder(tiny_causal_lm(tokenizer), tokenizer, encoder_id="tiny")
    for kind in ("latin", "cjk without spaces", "thai without spaces", "urls"):  # cut for its byte-level BPE
        text = long_texts()[kind]
        assert np.array_equal(encoder.encode([text]), encoder._encode([text])), kind


def test_embedding_a_long_text_warns_of_no_indexing_errors():
    """transformers warned "Token indices sequence length is longer than the specified maximum sequence length for
    this model (... > 512). Running this sequence through the model will result in indexing errors" when the encoder
    counted a long text's word pieces: misleading (the model is given 256), and the text was read whole."""
    from transformers import AutoTokenizer

    from pluralign.embed.encoders import CausalLMEncoder
    from pluralign.embed.models import minilm_path
    from tests.unit.test_encoder_turns import tiny_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), model_input_names=["input_ids", "attention_mask"])  # not warned yet
    encoder = CausalLMEncoder(tiny_causal_lm(tokenizer), tokenizer, encoder_id="tiny")
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)  # (its own stderr handler is bound to the stderr of its first use)
    try:
        assert encoder.encode([long_texts()["latin"]]).shape == (1, 16)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [line for line in said if "indexing errors" in line]


def test_serve_embeddings_counts_a_long_texts_window(sentence_encoder):
    from service.embeddings.app import tokens_read

    texts = [long_texts()["latin"], "hello world"]
    assert tokens_read(sentence_encoder, texts) == 256 + 4  # MiniLM reads 256 of the first, [CLS] hello world [SEP]


# what a start's end may cut that changes the words before it: an added (special) token's text, which the tokenizer
# reads as one id before it splits words ("[SEP]", "<|im_end|>": in a start, "[SE" is two words, and the whitespace
# before a cut "<|im_end" is a word of its own), and byte-level BPE's contractions, three characters ("they're": a
# start ending "they'r" reads "'" then "r", the text "'re")
NEEDLES = {"minilm": ["[SEP]", "[MASK]", "x [CLS]"], "smollm2": ["they're", "we've", "i'll", " \n<|im_end|>", "<jupyter_output>"]}


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_a_cut_through_a_special_token_or_a_contraction_keeps_the_texts_word_pieces(tokenizers, name):
    """Each needle placed across the start's end, after every count of word pieces the window may end on."""
    tokenizer, checked = tokenizers[name], 0
    max_length, size = 8, 64  # window_texts' first start: FIRST_CHARS x max_length characters
    for needle in NEEDLES[name]:
        for inside in range(1, len(needle)):  # the needle's characters in the start
            for words, fill in itertools.product(range(2 * max_length), " b"):  # spaces: no pieces in BERT
                pad = size - inside - 2 * words
                if pad < 1:
                    break
                text = fill * pad + " a" * words + needle + " and then more words, many of them." * 8
                (cut,), _ = window_texts(tokenizer, [text], max_length)
                assert ids(tokenizer, cut, max_length) == ids(tokenizer, text, max_length), (needle, cut[-12:])
                checked += cut != text
    assert checked > 100


def test_a_message_with_sep_across_the_start_embeds_as_before(sentence_encoder):
    """MiniLM's window (254 pieces between [CLS] and [SEP]) ending on the "[" of a "[SEP]" the start cuts to "[SE": the
    text's vector was another (its 254th piece "[" against the text's [SEP])."""
    head = "a " * 253
    text = head + " " * (2048 - len(head) - 3) + "[SEP] and the rest of the message. " * 100
    assert np.array_equal(sentence_encoder.encode([text]), sentence_encoder._run([text]))


def test_a_tokenizer_that_keeps_a_texts_end_is_read_whole(tokenizers):
    """A tokenizer with `truncation_side="left"` (as some causal LMs' are; `CausalLMEncoder` takes any) keeps a long
    text's last pieces: its start is not what the encoder reads of it."""
    tokenizer = copy.deepcopy(tokenizers["smollm2"])
    tokenizer.truncation_side = "left"
    text = long_texts()["latin"] + "and the end is what it reads"
    (cut,), (count,) = window_texts(tokenizer, [text], 40)
    assert ids(tokenizer, cut, 40) == ids(tokenizer, text, 40)
    assert count == len(tokenizer(text, verbose=False)["input_ids"])
