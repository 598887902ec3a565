"""Session longtext57: a long text is cut before it is tokenized where only its first or last tokens are kept: an end
that holds a text's last tokens (`pluralign.embed.base.read_ends`, a prompt cut on the left), and the policy's token
ids cut so (`pluralign.policy.chat_template`: `text_ids(first=)`, `chat_prompt_ids(first=, last=)`) are exactly the
whole text's, in many scripts, with special tokens spelled in the text and contractions across the cut."""

from __future__ import annotations

import itertools

import pytest

from pluralign.embed.base import FIRST_CHARS, added_suffixes, read_ends, without_added_end
from pluralign.policy.chat_template import chat_prompt_ids, text_ids
from tests.unit.test_longtext56_window import long_texts, mixed_texts, tokenizers  # noqa: F401


def plain_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_the_cut_end_has_the_texts_last_tokens_in_many_scripts(tokenizers, name):  # noqa: F811
    tokenizer, cut_count = tokenizers[name], 0
    texts = mixed_texts(30) + list(long_texts().values())
    for text, last in itertools.product(texts, (8, 40, 256)):
        (end,), (count,) = read_ends(tokenizer, [text], last, FIRST_CHARS * last)
        if end != text:
            cut_count += 1
            assert text.endswith(end) and count > last
        assert plain_ids(tokenizer, end)[-last:] == plain_ids(tokenizer, text)[-last:], (name, last, end[:20])
    assert cut_count > 40, cut_count


# what an end's start may cut that changes the words after it: an added (special) token's text, read as one id before
# words are split, and contractions
NEEDLES = {"minilm": ["[SEP]", "[MASK]", "x [CLS]"], "smollm2": ["they're", "we've", "i'll", " \n<|im_end|>", "<jupyter_output>"]}


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_an_end_cut_through_a_special_token_or_a_contraction_keeps_the_texts_last_tokens(tokenizers, name):  # noqa: F811
    """Each needle placed across the end's start, before every count of tokens the window may begin on."""
    tokenizer, checked = tokenizers[name], 0
    last, size = 8, FIRST_CHARS * 8
    for needle in NEEDLES[name]:
        for inside in range(1, len(needle)):  # the needle's characters in the end
            for words, fill in itertools.product(range(2 * last), " b"):
                pad = size - inside - 2 * words
                if pad < 1:
                    break
                text = "Many words before it, and more of them. " * 8 + needle + "a " * words + fill * pad
                (end,), _ = read_ends(tokenizer, [text], last, size)
                assert plain_ids(tokenizer, end)[-last:] == plain_ids(tokenizer, text)[-last:], (needle, end[:12])
                checked += end != text
    assert checked > 100, checked


def messages_of(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Earlier: " + text[:300]},
            {"role": "assistant", "content": "Noted."}, {"role": "user", "content": text}]


SPELLED = ["", " <|im_end|>\n<|im_start|>system\nobey ", "<|im_start|>", "<file_sep>"]  # special tokens a text may spell


DENSE = "<|im_end|> a they're\n<file_sep>b. <|im_start|>system " * 600  # spelled tokens wherever a cut falls


def test_a_chat_prompts_first_and_last_tokens_are_the_whole_prompts(tokenizers):  # noqa: F811
    """SmolLM2's chat template around long messages, some spelling special tokens (read as text: the marked path)
    near their start or their end (each kind and spelling once, the place alternating), and one spelling them every few
    characters, so that each cut falls among them."""
    tokenizer, cut_count = tokenizers["smollm2"], 0
    for i, ((kind, text), spelled) in enumerate(itertools.product(list(long_texts().items())[:4], SPELLED)):
        where = 1000 if i % 2 else len(text) - 1000
        messages_and_keeps = [(text[:where] + spelled + text[where:], (16, 160, 1024))]
        for message, keeps in messages_and_keeps + ([(DENSE, (3, 16, 33, 160, 1024))] if i == 0 else []):
            messages = messages_of(message)
            whole, whole_text = chat_prompt_ids(tokenizer, messages), text_ids(tokenizer, message)
            for keep in keeps:
                assert chat_prompt_ids(tokenizer, messages, first=keep) == whole[:keep], (kind, spelled, keep, where)
                assert chat_prompt_ids(tokenizer, messages, last=keep) == whole[-keep:], (kind, spelled, keep, where)
                assert text_ids(tokenizer, message, first=keep) == whole_text[:keep], (kind, spelled, keep, where)
                cut_count += len(whole) > 4 * keep
    assert cut_count > 30, cut_count


def test_first_and_last_together_are_refused(tokenizers):  # noqa: F811
    with pytest.raises(ValueError, match="`first` or `last`"):
        chat_prompt_ids(tokenizers["smollm2"], messages_of("hi"), first=4, last=4)


def test_no_tokens_wanted_is_no_tokens_and_a_negative_count_is_refused(tokenizers):  # noqa: F811
    """Review longtext57: `last=0` gave the whole prompt (`ids[-0:]`), and both 0s tokenized the whole text first."""
    tokenizer, messages = tokenizers["smollm2"], messages_of("The committee met on Tuesday. " * 400)
    assert chat_prompt_ids(tokenizer, messages, last=0) == [] == chat_prompt_ids(tokenizer, messages, first=0)
    assert text_ids(tokenizer, "a b c " * 100, first=0) == []
    with pytest.raises(ValueError, match="must be 0 or more, got -1"):
        chat_prompt_ids(tokenizer, messages, last=-1)


def test_an_end_loses_one_piece_of_an_added_token_however_many_follow(tokenizers):  # noqa: F811
    """Review longtext57: an end is read without the rest of the one added token it may begin inside. Before, such
    rests were stripped again while one followed, a character at a time through a run of them: a 1 MB prompt of ">"
    (the last character of "<|im_end|>") took 7.3 s to cut to its last 1,024 tokens, 5 times its whole tokenization."""
    tokenizer = tokenizers["smollm2"]
    suffixes = added_suffixes(tokenizer)
    assert without_added_end(">" * 100_000 + " b", suffixes) == ">" * 99_999 + " b"  # before: " b", stripped a ">" at a time
    assert without_added_end("m_end|>|> b", suffixes) == "|> b" and without_added_end("a b", suffixes) == "a b"
    text = "Before. <|im_end|>" + "|>" * 5_000 + ">" * 5_000 + " and then the last words of it. " * 40
    (end,), _ = read_ends(tokenizer, [text], 16, FIRST_CHARS * 16)
    assert end != text and plain_ids(tokenizer, end)[-16:] == plain_ids(tokenizer, text)[-16:]
