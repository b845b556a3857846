"""Rewards: a table of literal completions with their expected rewards, and properties on any string."""

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reczero.data.schema import RatingScale
from reczero.prompts import format_answer
from reczero.rewards import AnswerReward, FormatReward, check_format, parse_rating

SCALE = RatingScale(1, 5)
GOOD = ("<analyze user>likes quiet dramas</analyze user>\n<analyze item>a slow drama</analyze item>\n"
        "<match>fits well</match>\n<rate>{}</rate>")

# (completion, true rating, expected format reward, expected answer reward)
TABLE = [
    (GOOD.format("4"), 4.0, 0.5, 1.0),
    (GOOD.format("4"), 5.0, 0.5, 0.75),
    (GOOD.format("1"), 5.0, 0.5, 0.0),
    (GOOD.format(" 3.5 "), 4.0, 0.5, 0.875),
    ("\n  " + GOOD.format("2") + "\n\n", 2.0, 0.5, 1.0),                 # surrounding whitespace is fine
    (GOOD.format("6"), 5.0, -0.5, 0.0),                                  # off the scale: unparsable
    (GOOD.format("0"), 1.0, -0.5, 0.0),
    (GOOD.format("four"), 4.0, -0.5, 0.0),
    (GOOD.format(""), 4.0, -0.5, 0.0),
    (GOOD.format("**4**"), 4.0, -0.5, 1.0),                             # decoration: parsed, but bad format
    (GOOD.format("4/5"), 3.0, -0.5, 0.75),
    (GOOD.format("4 stars"), 4.0, -0.5, 1.0),
    (GOOD.format("4, maybe 5"), 4.0, -0.5, 0.0),                        # two numbers: ambiguous
    ("Sure! " + GOOD.format("4"), 4.0, -0.5, 1.0),                      # text outside the tags
    (GOOD.format("4") + " Hope this helps.", 4.0, -0.5, 1.0),
    (GOOD.format("4") + "<rate>2</rate>", 2.0, -0.5, 1.0),              # two rates: the last one counts
    ("<rate>4</rate>", 4.0, -0.5, 1.0),                                  # missing steps
    ("<analyze item>x</analyze item><analyze user>y</analyze user><match>z</match><rate>4</rate>", 4.0, -0.5, 1.0),
    ("<analyze user> </analyze user><analyze item>x</analyze item><match>z</match><rate>4</rate>", 4.0, -0.5, 1.0),
    ("<analyze user>a<match>b</analyze user><analyze item>x</analyze item><match>z</match><rate>4</rate>", 4.0, -0.5, 1.0),
    ("<analyze user>a</analyze user><analyze item>x</analyze item><match>z</match><rate>4", 4.0, -0.5, 0.0),
    ("<think>hmm</think><analyze user>a</analyze user><analyze item>x</analyze item><match>z</match><rate>4</rate>",
     4.0, -0.5, 1.0),
    ("", 3.0, -0.5, 0.0),
    ("4", 4.0, -0.5, 0.0),
    ("</rate>4<rate>", 4.0, -0.5, 0.0),
    ("<rate>nan</rate>", 3.0, -0.5, 0.0),
    ("<rate>1e400</rate>", 3.0, -0.5, 0.0),
    ("<rate>٤</rate>", 4.0, -0.5, 0.0),                                 # non-ASCII digits are not numbers here
]


@pytest.mark.parametrize("completion,rating,fmt,answer", TABLE)
def test_literal_completions(completion, rating, fmt, answer):
    assert FormatReward(SCALE)([completion], rating=[rating]) == [fmt]
    assert AnswerReward(SCALE)([completion], rating=[rating]) == [pytest.approx(answer)]


def test_other_templates():
    think = "<think>slow dramas suit this user</think>\n<rate>4</rate>"
    assert check_format(think, "think-answer") and not check_format(think, "structured")
    assert check_format("<rate>4</rate>", "rate-only") and not check_format(think, "rate-only")
    assert not check_format("<think>x</think><rate>4</rate><match>y</match>", "think-answer")
    for template, parts in [("structured", {"analyze user": "a", "analyze item": "b", "match": "c"}),
                            ("think-answer", {"think": "t"}), ("rate-only", {})]:
        text = format_answer(template, parts, 3.0, SCALE)
        assert check_format(text, template, SCALE), text
        assert FormatReward(SCALE, template)([text]) == [0.5]
        assert parse_rating(text, SCALE, template) == 3.0


def test_conversational_completions_and_names():
    conv = [[{"role": "assistant", "content": GOOD.format("3")}]]
    assert FormatReward(SCALE)(conv, rating=[3.0]) == [0.5]
    assert AnswerReward(SCALE)(conv, rating=[3.0]) == [1.0]
    assert FormatReward(SCALE).__name__ == "format" and AnswerReward(SCALE).__name__ == "answer"
    reward = pickle.loads(pickle.dumps(AnswerReward(SCALE, max_error=2.0)))
    assert reward([GOOD.format("4")], rating=[5.0]) == [0.5]
    assert FormatReward(SCALE, bonus=1.0, penalty=-1.0)(["x", GOOD.format("2")], rating=[1, 1]) == [-1.0, 1.0]


def test_answer_reward_needs_the_rating_column():
    with pytest.raises(ValueError, match="rating"):
        AnswerReward(SCALE)([GOOD.format("4")])
    with pytest.raises(ValueError, match="2 completions but 1"):
        AnswerReward(SCALE)(["a", "b"], rating=[1.0])


def test_half_star_scale():
    half = RatingScale(0.5, 5.0, 0.5)
    assert parse_rating(GOOD.format("0.5"), half) == 0.5
    assert parse_rating(GOOD.format("4.3"), half) == 4.3   # inside the range: parsed as written
    assert parse_rating(GOOD.format("0"), half) is None


def test_hostile_strings_are_fast():
    hostile = ["<rate>" * 100_000, "</rate>" * 100_000 + "<rate>", "<analyze user>" * 50_000 + "</rate>" * 50_000,
               "<rate>" + "9" * 100_000 + "</rate>", "\x00<rate>\ud800</rate>"]
    for text in hostile:
        assert parse_rating(text, SCALE) is None
        assert FormatReward(SCALE)([text]) == [-0.5]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsing_never_raises_and_rewards_are_bounded(text):
    for candidate in (text, f"<rate>{text}</rate>", GOOD.format(text), text + "<rate>4</rate>"):
        value = parse_rating(candidate, SCALE)
        assert value is None or SCALE.contains(value)
        assert FormatReward(SCALE)([candidate]) in ([0.5], [-0.5])
        assert 0.0 <= AnswerReward(SCALE)([candidate], rating=[3.0])[0] <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.floats(1, 5), st.floats(1, 5), st.floats(1, 5))
def test_answer_reward_is_monotone_in_the_error(y, a, b):
    reward = AnswerReward(SCALE)
    ra, rb = (reward([GOOD.format(f"{v:.3f}")], rating=[y])[0] for v in (a, b))
    ea, eb = abs(y - float(f"{a:.3f}")), abs(y - float(f"{b:.3f}"))
    if ea < eb:
        assert ra >= rb
    assert 0.0 <= ra <= 1.0 and 0.0 <= rb <= 1.0
