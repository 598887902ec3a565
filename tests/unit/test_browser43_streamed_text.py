"""A streamed answer's text goes out as it is generated in every script, whole characters only.

Before: the service streamed through transformers' `TextIteratorStreamer`, which hands text over only up
to the last space (or when the text ends in a CJK ideograph): an answer in Japanese kana or Thai, written
without spaces, came in one piece at the end of generation, so a chat UI showed nothing for the whole
answer's time (a 40-token Japanese answer: no piece before the end). Driven here token by token, as
`generate` feeds it, with SmolLM2's own tokenizer."""

from __future__ import annotations

import pytest

from pluralign.policy.generator import text_streamer

TEXTS = [
    "こんにちは、ありがとうございます。カタカナです",  # kana, no spaces
    "สวัสดีครับขอบคุณมากครับ",  # Thai, no spaces
    "Party 🎉🎉 time 👩\u200d👩\u200d👧 ok",  # emoji of 4 bytes each, split across byte-level tokens; a ZWJ sequence
    "Plain English, word by word.",
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pluralign.embed.models import smollm2_dir

    return AutoTokenizer.from_pretrained(str(smollm2_dir()))


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_come_while_generating_and_hold_no_broken_character(tokenizer, text):
    import torch

    ids = tokenizer.encode(text, add_special_tokens=False)
    streamer = text_streamer(tokenizer, timeout=1)
    streamer.put(torch.tensor([[tokenizer.bos_token_id or 0]]))  # the prompt, skipped
    before_end = []
    for token in ids:
        streamer.put(torch.tensor([token]))
        while not streamer.text_queue.empty():
            before_end.append(streamer.text_queue.get())
    streamer.end()
    pieces = before_end + list(streamer)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces), pieces  # a character is sent once its bytes are all there
    sent_early = "".join(before_end)
    assert len(sent_early) >= len(text) * 3 // 4, (text, before_end)  # all but the last token's worth, at most


def _sent(pieces: list[str], stop: str) -> tuple[str, tuple[str, bool]]:
    """What `Generator._pieces` streams of `pieces` under `stop`, and what it returns."""
    import threading

    from pluralign.policy.generator import Generator, Sampling

    out, sent = Generator._pieces(iter(pieces), threading.Event(), Sampling(stop=(stop,))), []
    while True:
        try:
            sent.append(next(out))
        except StopIteration as done:
            return "".join(sent), done.value


def test_no_space_goes_out_before_a_stop_string_that_follows_it():
    """The stop's length less one is held back: the space before a stop string split across tokens
    went out before the stop was seen, and the stream ended in a space the answer has not."""
    assert _sent(["Hi there EN", "D more"], "END") == ("Hi there", ("Hi there ", True))


def test_a_stop_string_longer_than_the_text_so_far_holds_all_of_it():
    """Text shorter than the held-back window goes out only once the stop can no longer begin in it."""
    assert _sent(["Hello", "WORLD"], "elloWORL") == ("H", ("H", True))
