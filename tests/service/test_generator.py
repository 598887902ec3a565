"""The generator on a tiny random Llama with SmolLM2's tokenizer: candidates, stops, streaming, adapters."""

from __future__ import annotations

import itertools

import pytest
import torch

from pluralign.policy.generator import Candidate, Generator, Sampling, cut_at_stop
from pluralign.policy.rerank import rerank

MESSAGES = [{"role": "user", "content": "Tell me about cats."}]


@pytest.fixture(scope="module")
def generator(tiny_generator_dir):
    return Generator.from_folder(tiny_generator_dir, device=torch.device("cpu"))


def test_n_candidates_are_reproducible_under_a_seed(generator):
    first, prompt_tokens = generator.generate(MESSAGES, n=3, sampling=Sampling(max_tokens=6, seed=5))
    again, _ = generator.generate(MESSAGES, n=3, sampling=Sampling(max_tokens=6, seed=5))
    assert len(first) == 3 and prompt_tokens > 5
    assert [c.text for c in first] == [c.text for c in again]
    assert all(c.tokens <= 6 and c.finish_reason in ("stop", "length") for c in first)
    other, _ = generator.generate(MESSAGES, n=3, sampling=Sampling(max_tokens=6, seed=6))
    assert [c.text for c in other] != [c.text for c in first]


def test_stream_pieces_join_to_the_final_text(generator):
    out = list(generator.stream(MESSAGES, Sampling(max_tokens=10, temperature=0)))
    *pieces, final = out
    assert isinstance(final, Candidate) and len(pieces) >= 2
    assert "".join(pieces) == final.text
    greedy, _ = generator.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=10, temperature=0))
    assert greedy[0].text == final.text


def test_streamed_text_is_exactly_the_non_streamed_text_for_a_seed(generator):
    """No leading or trailing whitespace in the pieces that the non-streamed answer has not."""
    for seed in range(12):
        sampling = Sampling(max_tokens=8, temperature=1.0, seed=seed)
        *pieces, final = generator.stream(MESSAGES, sampling)
        (whole,), _ = generator.generate(MESSAGES, n=1, sampling=sampling)
        assert "".join(pieces) == final.text == whole.text, seed


def test_stop_strings_cut_the_answer(generator):
    greedy, _ = generator.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=12, temperature=0))
    text = greedy[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut, _ = generator.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=12, temperature=0, stop=(stop,)))
    assert cut[0].finish_reason == "stop" and stop not in cut[0].text and text.startswith(cut[0].text)
    *pieces, final = generator.stream(MESSAGES, Sampling(max_tokens=12, temperature=0, stop=(stop,)))
    assert final.text == cut[0].text and final.finish_reason == "stop" and stop not in "".join(pieces)
    assert cut_at_stop("abcXYdef", ["XY", "de"]) == ("abc", True)


def test_generation_ends_at_the_stop_string(generator):
    """transformers' stop_strings end the generation itself: fewer tokens are generated, not just
    fewer characters returned (the old cut-after-max_tokens generated all 24)."""
    greedy, _ = generator.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=24, temperature=0))
    text = greedy[0].text
    assert greedy[0].tokens == 24 and greedy[0].finish_reason == "length"
    stop = text[len(text) // 4 : len(text) // 4 + 2]
    cut, _ = generator.generate(MESSAGES, n=2, sampling=Sampling(max_tokens=24, temperature=0, stop=(stop,)))
    for candidate in cut:  # both rows of the batch stop on their own
        assert candidate.finish_reason == "stop" and text.startswith(candidate.text) and stop not in candidate.text
        assert candidate.tokens < 24 * 0.6, candidate.tokens
    *_, final = generator.stream(MESSAGES, Sampling(max_tokens=24, temperature=0, stop=(stop,)))
    assert final.text == cut[0].text and final.tokens < 24 * 0.6


def test_penalties_follow_openais_formula():
    from pluralign.policy.generator import Penalties

    ids = torch.tensor([[9, 9, 1, 1, 1, 2]])  # prompt of 2 tokens, then token 1 three times and token 2 once
    scores = torch.zeros(1, 4)
    out = Penalties(prompt_length=2, frequency=0.5, presence=1.0)(ids, scores)
    assert out.tolist() == [[0.0, -(3 * 0.5 + 1.0), -(0.5 + 1.0), 0.0]]  # prompt tokens are not penalized


def test_penalties_reach_generation(generator):
    """The tiny random model never repeats a token under greedy decoding; negative penalties (which
    reward what was already said) make it repeat, in `generate` and in `stream` alike."""

    def distinct(text: str) -> float:
        tokens = generator.tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(set(tokens)) / max(1, len(tokens))

    plain, _ = generator.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=16, temperature=0))
    repeat = Sampling(max_tokens=16, temperature=0, presence_penalty=-2.0, frequency_penalty=-2.0)
    penalized, _ = generator.generate(MESSAGES, n=1, sampling=repeat)
    assert distinct(plain[0].text) > 0.9 and distinct(penalized[0].text) < 0.5
    *_, streamed = generator.stream(MESSAGES, repeat)
    assert streamed.text == penalized[0].text


def test_sampling_is_validated():
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=5)
    with pytest.raises(ValueError, match="max_tokens"):
        Sampling(max_tokens=0)
    with pytest.raises(ValueError, match="presence_penalty"):
        Sampling(presence_penalty=3)


def test_a_users_adapter_changes_only_their_answers(tiny_generator_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    generator = Generator.from_folder(tiny_generator_dir, device=torch.device("cpu"))
    greedy = Sampling(max_tokens=8, temperature=0)
    plain = generator.generate(MESSAGES, sampling=greedy)[0][0].text
    with pytest.raises(ValueError, match="not loaded"):
        generator.generate(MESSAGES, sampling=greedy, adapter="u1")
    generator.load_adapter("u1", tmp_path / "adapter")
    assert generator.generate(MESSAGES, sampling=greedy)[0][0].text == plain  # base answers unchanged
    assert generator.generate(MESSAGES, sampling=greedy, adapter="u1")[0][0].text != plain
    generator.load_adapter("u2", tmp_path / "adapter")
    generator.drop_adapter("u1")  # the active one: another stays usable, the base too
    assert generator.generate(MESSAGES, sampling=greedy, adapter="u2")[0][0].text != plain
    generator.drop_adapter("u2")
    assert "u1" not in generator.adapters and not generator.adapters
    # after the last user's adapter is gone (a user deleted), everyone else is still served
    assert generator.generate(MESSAGES, sampling=greedy)[0][0].text == plain


def test_rerank_orders_by_reward_and_keeps_ties_stable():
    import numpy as np

    prompt = np.zeros(3, np.float32)
    candidates = np.array([[0, 1, 0], [3, 0, 0], [0, 1, 0]], np.float32)
    ranked = rerank(lambda p, r: r[:, 0] + r[:, 1], prompt, candidates)
    assert ranked.order == [1, 0, 2] and ranked.best == 1 and ranked.scores == [1.0, 3.0, 1.0]


def test_a_streamed_answer_cut_by_a_stop_string_is_the_plain_answer(generator):
    """A stop string that spans tokens and follows a space: the stream held back only the stop's length
    less one character, so the space before the stop went out before the stop was seen, and the streamed
    text ended in a space the plain answer (and the stored one) has not (SmolLM2, `stop: "social,"`:
    streamed 'Cats are intelligent, ', answered 'Cats are intelligent,'). Only stops that span the stream's
    pieces are tried (a stop within one piece never met the bug): 16 tried took 14 s of the suite."""
    *pieces, greedy = generator.stream(MESSAGES, Sampling(max_tokens=24, temperature=0))
    text = greedy.text
    assert "".join(pieces) == text
    ends = set(itertools.accumulate(len(p) for p in pieces))  # where a piece ends, in `text`
    starts = [i for i in range(1, len(text) - 3) if text[i - 1] == " " and not text[i].isspace()]
    stops = {text[i : i + 4] for i in starts if text.find(text[i : i + 4]) == i and text[i : i + 4].strip() == text[i : i + 4]
             and ends.intersection(range(i + 1, i + 4))}
    assert stops, (text, pieces)
    for stop in sorted(stops):
        sampling = Sampling(max_tokens=24, temperature=0, stop=(stop,))
        (cut,), _ = generator.generate(MESSAGES, n=1, sampling=sampling)
        *pieces, final = generator.stream(MESSAGES, sampling)
        assert final.finish_reason == cut.finish_reason == "stop", stop
        assert "".join(pieces) == final.text == cut.text, (stop, pieces)


def test_a_stop_string_in_a_styles_opening_ends_the_answer_there(generator):
    """OpenAI's `stop`: the returned text never holds a stop string. A style's opening is prefilled, not
    generated, so the model's stop never saw it: with SmolLM2, `stop: "\\n"` answered
    'Certainly. Consider the following:\\n- 3 days at ...' (the formal list's opening), `stop: "."` 'Yes. How ...'.
    Cut at the stop instead, 3 of 4 answers to `stop: "."` were the opening's first word (`Certainly`, `Sure thing`):
    a style whose opening holds a stop string is generated from its instruction alone."""
    from pluralign.policy.styles import ALL_STYLES, AnswerStyle

    styles = [*ALL_STYLES[:4], AnswerStyle("detailed", "list", "formal", "no")]
    for stop in ("\n", ".", "!", "thing"):
        sampling = Sampling(max_tokens=6, temperature=0, stop=(stop,))
        candidates, _ = generator.generate_styled(MESSAGES, styles, sampling=sampling)
        cut = [(c, s) for c, s in zip(candidates, styles, strict=True) if stop in s.opening]
        assert cut, stop
        for candidate in candidates:
            assert stop not in candidate.text, (stop, candidate)
            assert candidate.text == candidate.text.strip(), candidate
        for candidate, style in cut:
            # generated from the style's instruction alone, not its opening cut short (`Certainly`, `Sure`, a lead-in)
            assert candidate.style == style.name and candidate.text != cut_at_stop(style.opening, (stop,))[0].strip(), (stop, candidate)


def test_a_stop_string_spanning_a_styles_opening_and_its_continuation_cuts_the_answer(generator):
    """Review session trial47a: the model's stop strings see only the tokens it generates, not the prefilled opening,
    so a stop made of the opening's last characters and the answer's first ones never ended the generation: the
    answer is cut at it afterwards (docs/api.md, `stop`). No test failed with that cut removed."""
    from pluralign.policy.styles import AnswerStyle

    style = AnswerStyle("detailed", "list", "formal")
    (plain,), _ = generator.generate_styled(MESSAGES, [style], sampling=Sampling(max_tokens=6, temperature=0))
    assert plain.text.startswith(style.opening) and len(plain.text) > len(style.opening) + 2, plain
    stop = plain.text[len(style.opening) - 2 : len(style.opening) + 2]  # "- " and the first item's first characters
    assert stop not in style.opening
    (cut,), _ = generator.generate_styled(MESSAGES, [style], sampling=Sampling(max_tokens=6, temperature=0, stop=(stop,)))
    assert cut.text == plain.text[: len(style.opening) - 2].strip() and cut.finish_reason == "stop", (stop, cut)
