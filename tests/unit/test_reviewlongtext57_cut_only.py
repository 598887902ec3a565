"""Session review longtext57: the encoders that only cut long texts (the ONNX encoder, which tokenizes the texts itself
next, and the remote encoder, which sends them on) tokenize nothing but long texts' starts to cut them: a short text
is not tokenized beforehand to count its word pieces, a count they never use. Before, `window_texts` counted every
text kept whole, so each batch was tokenized once more (2,048 short texts: ~0.3-1.1 s of the caller's CPU, thrown away;
in remote mode, the front service tokenized every text the embeddings server then tokenized)."""

from __future__ import annotations

from pluralign.embed.models import MINILM_ID
from service.encoders import make_encoder
from tests.service.test_small52_remote_encoder import stub  # noqa: F401

SHORT = [f"I would rather have a short answer with sources, number {i}." for i in range(16)]
LONG = "The committee met on Tuesday; its members, weary, argued until dawn about the budget. " * 500  # 43 KB


class Reading:
    """`tokenizer` itself (every attribute its own), its calls noting each text it is given in `texts`."""

    def __init__(self, tokenizer):
        self.__dict__.update(_tokenizer=tokenizer, texts=[])

    def __call__(self, text, *args, **kwargs):
        self.texts.extend([text] if isinstance(text, str) else text)
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def only_long_starts(texts: list[str]) -> bool:
    return bool(texts) and all(LONG.startswith(t) and len(t) > 1000 for t in texts)


def test_the_remote_encoder_tokenizes_only_the_long_texts_to_cut_them(stub):  # noqa: F811
    """(The ONNX encoder's: tests/unit/test_onnx_encoder.py, its counter given no text.)"""
    server = stub(dim=384)
    encoder = make_encoder(f"openai:{server.url}", MINILM_ID)
    encoder.counter = Reading(encoder.counter)
    try:
        vectors = encoder.encode([*SHORT, LONG, *SHORT])
    finally:
        encoder.close()
    assert vectors.shape == (2 * len(SHORT) + 1, 384)
    assert only_long_starts(encoder.counter.texts), [t[:40] for t in encoder.counter.texts][:4]  # before: the 32 short ones too
    sent = [text for call in server.calls for text in call][-len(vectors) :]  # (after the dimension probe)
    assert sent[: len(SHORT)] == SHORT and len(sent[len(SHORT)]) < len(LONG) and sent[len(SHORT) + 1 :] == SHORT


def test_the_remote_encoders_tokenizer_is_not_changed_by_its_calls():
    """Threads share it (`RemoteEncoder`'s `counter`). Before, the folder's truncation and padding to 128 were set,
    and the first call turned them off: a change while another thread may be tokenizing."""
    from pluralign.embed.base import window_texts
    from pluralign.embed.models import minilm_tokenizer

    tokenizer = minilm_tokenizer()
    settings = lambda: (tokenizer.backend_tokenizer.truncation, tokenizer.backend_tokenizer.padding)  # noqa: E731
    before = settings()
    window_texts(tokenizer, [LONG, *SHORT], 256)
    assert settings() == before == (None, None)
