"""Candidates in balanced answer styles: the design, the cuts, and a styled batch from a real model."""

from __future__ import annotations

import itertools

import pytest

from pluralign.policy.styles import ALL_STYLES, AXES, AnswerStyle, asks_judgement, choose_styles


def sides(style: AnswerStyle) -> tuple[str, str, str]:
    return (style.length, style.format, style.register)


@pytest.mark.parametrize("seed", range(6))
def test_four_styles_balance_every_axis_and_every_pair_of_axes(seed):
    styles = choose_styles(4, seed)
    assert len(set(styles)) == 4
    for axis in range(3):
        assert sorted(sides(s)[axis] for s in styles) == sorted(AXES[axis] * 2)
    for a, b in itertools.combinations(range(3), 2):
        assert len({(sides(s)[a], sides(s)[b]) for s in styles}) == 4
    assert choose_styles(4, seed) == styles  # deterministic under the request's seed


def test_other_counts():
    assert set(choose_styles(8, 0)) == set(ALL_STYLES)
    two = choose_styles(2, 3)
    assert all(x != y for x, y in zip(sides(two[0]), sides(two[1]), strict=True))  # opposite corners


@pytest.mark.parametrize("seed", range(8))
def test_a_question_asking_a_judgement_gets_both_answers_balanced(seed):
    plain = choose_styles(4, seed)
    styles = choose_styles(4, seed, stances=True)
    assert [sides(s) for s in styles] == [sides(s) for s in plain]  # the other axes are unchanged
    assert sorted(s.stance for s in styles) == ["no", "no", "yes", "yes"]
    for s in styles:
        assert s.opening.startswith({"yes": ("Yes.", "Oh yes"), "no": ("No.", "Nope")}[s.stance])
        assert s.name.endswith("-" + s.stance) and ("Answer " + s.stance) in s.instruction
    assert all(s.stance is None for s in plain)
    two = choose_styles(2, seed, stances=True)
    assert {s.stance for s in two} == {"yes", "no"}


def test_which_questions_ask_a_judgement():
    assert asks_judgement([{"role": "user", "content": 'Do you agree with this statement? "Science is fun."'}])
    assert asks_judgement([{"role": "user", "content": "Should I buy a car?"}])
    assert not asks_judgement([{"role": "user", "content": "How do I learn to cook?"}])
    assert not asks_judgement([{"role": "user", "content": "Do the dishes."}])
    assert not asks_judgement([{"role": "user", "content": "Is it raining?"}, {"role": "user", "content": "Plan my day."}])


@pytest.mark.parametrize("question", [
    "Should I learn Python or Rust first?",
    "Should I learn Python, Go or Rust first?",
    "Is it better to rent or to buy?",
    "Do you prefer tea or coffee? I drink both.",
    "Would you pick Vim versus Emacs?",
])
def test_a_question_offering_alternatives_is_not_a_yes_or_no_judgement(question):
    """It used to be: 'Should I learn Python or Rust first?' opens with an auxiliary verb and asks,
    so its candidates were told to answer "Yes." and "No."."""
    assert not asks_judgement([{"role": "user", "content": question}])


@pytest.mark.parametrize("question", [
    'Do you agree with this statement? "I would rather be rich or famous."',  # the closed loop's persona prompts
    'Do you agree with this statement? "Either you win or you learn."',
    'Do you agree that "cats or dogs make better pets"?',
    "Is it true that coffee or tea dehydrates you?",
    "Should I learn Python or not?",
    "Should I quit my job, yes or no?",
    "Should I buy a car?",
])
def test_judgements_stay_judgements_whatever_their_statement_says(question):
    assert asks_judgement([{"role": "user", "content": question}])


def test_brief_answers_are_cut_and_detailed_ones_kept():
    text = "\nGo for a walk. Then rest.\n- more\n- and more\n- again"
    brief_prose = AnswerStyle("brief", "prose", "formal").finish(text)
    assert brief_prose == ("Certainly. Go for a walk.", True)
    brief_list, cut = AnswerStyle("brief", "list", "casual").finish(text)
    assert cut and brief_list.count("\n- ") == 2 and brief_list.startswith("Sure thing! Here are a few ideas:\n- Go")
    detailed, cut = AnswerStyle("detailed", "prose", "casual").finish(text)
    assert not cut and detailed.endswith("- again")


def test_a_styled_batch_gives_one_candidate_per_style(tiny_generator_dir):
    from pluralign.policy.generator import Generator, Sampling

    gen = Generator.from_folder(tiny_generator_dir)
    styles = choose_styles(4, 1)
    messages = [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "Plan my weekend"}]
    candidates, prompt_tokens = gen.generate_styled(messages, styles, Sampling(max_tokens=6, seed=1))
    assert [c.style for c in candidates] == [s.name for s in styles]
    for style, c in zip(styles, candidates, strict=True):
        assert c.text.startswith(style.opening.strip().split("\n")[0])
        assert 1 <= c.tokens <= 6
    assert prompt_tokens == gen.prompt_tokens(messages)
    again, _ = gen.generate_styled(messages, styles, Sampling(max_tokens=6, seed=1))
    assert [c.text for c in again] == [c.text for c in candidates]


@pytest.mark.parametrize("question", [
    "Should I buy a car? Or lease one?",  # only the text up to the first '?' used to be read
    "Should I go? Or is it too late?",
    "Should I go? Or else stay home.",
])
def test_a_follow_up_or_offers_an_alternative(question):
    """The tester's reproducer: these got yes/no stance styles though the second sentence offers
    another choice."""
    assert not asks_judgement([{"role": "user", "content": question}])


@pytest.mark.parametrize("question", [
    "Should I go？",  # a full-width question mark used to be no question mark at all
    "Is it true or false that the earth is flat?",  # the "or" of "true or false" offers no alternative
    "Should I go? Or not?",
    "Should I go? I am tired. Is it too late?",
    'Do you agree with this statement? "Stay? Or go?"',  # the quoted statement's "Or" is not the question's
])
def test_yes_or_no_questions_the_classifier_used_to_miss(question):
    assert asks_judgement([{"role": "user", "content": question}])


def test_every_persona_prompt_is_a_judgement():
    """The closed loop's persona prompts ('Do you agree with this statement? "<statement>"', over
    every statement of the Anthropic persona data) all ask a judgement."""
    import json
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "anthropic_persona" / "persona"
    if not folder.is_dir():
        pytest.skip("no ../shared/data/anthropic_persona")
    statements = {json.loads(line)["statement"] for path in folder.glob("*.jsonl") for line in path.open()}
    missed = [s for s in statements if not asks_judgement([{"role": "user", "content": f'Do you agree with this statement? "{s}"'}])]
    assert len(statements) > 100_000 and missed == []
