"""Prompts: content, templates, rating formats and the token budget (trims the oldest history first)."""

import math

import pytest

from reczero.config import PromptOptions
from reczero.data.schema import RatingScale
from reczero.prompts import (
    TAGS,
    build_messages,
    format_answer,
    format_rating,
    render_prompt,
    system_prompt,
)


def make_sample(n_history=8):
    import numpy as np

    history = [{"item_id": f"i{k}", "title": f"Film {k}", "attributes": np.array(["drama", f"tag{k}"]),
                "rating": float(1 + k % 5), "review": f"review number {k} " + "word " * 30, "timestamp": k}
               for k in range(n_history)]
    return {
        "sample_id": "train-u1-i99-100", "user_id": "u1", "item_id": "i99", "rating": 4.0, "timestamp": 100,
        "item_title": "Orbit Nine", "item_attributes": np.array(["sci-fi", "space"]),
        "item_description": "A crew drifts toward a dying star.",
        "user_history": np.array(history, dtype=object),
        "item_history": [{"user_id": "u2", "rating": 5.0, "review": "the best space story", "timestamp": 50}],
        "user_n": n_history, "item_n": 1, "user_avg": 3.25, "item_avg": math.nan,
    }


def test_system_prompt_names_the_steps_of_each_template():
    text = system_prompt("structured", RatingScale(1, 5))
    assert all(f"<{t}>" in text and f"</{t}>" in text for t in TAGS) and "from 1 to 5" in text
    assert "<think>" in system_prompt("think-answer") and "<match>" not in system_prompt("think-answer")
    assert "<rate>" in system_prompt("rate-only") and "<think>" not in system_prompt("rate-only")
    with pytest.raises(ValueError, match="unknown template"):
        system_prompt("freeform")


def test_user_message_shows_the_evidence_but_not_the_target_rating():
    sample = make_sample()
    system, user = build_messages(sample, PromptOptions(prompt_history=3, prompt_snippet_chars=20))
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert "Film 4" not in text and "Film 5 [drama, tag5] rated 1: review number 5" in text  # the last 3 only
    assert "User average: 3.2 (8 ratings)" in text or "User average: 3.3 (8 ratings)" in text
    assert "Target item: Orbit Nine [sci-fi, space]" in text and "dying star" in text
    assert "- rated 5: the best space story" in text and "Item average: none yet" in text
    assert "4.0" not in text


def test_averages_inline_or_together_before_the_question():
    sample = {**make_sample(), "item_avg": 4.5}
    lines = build_messages(sample, PromptOptions())[1]["content"].split("\n")
    user_at, item_at = lines.index("User average: 3.2 (8 ratings)"), lines.index("Item average: 4.5 (1 ratings)")
    assert user_at < lines.index("Target item: Orbit Nine [sci-fi, space]") < item_at   # the paper's layout
    lines = build_messages(sample, PromptOptions(prompt_averages="end"))[1]["content"].split("\n")
    assert lines[-4:] == ["User average: 3.2 (8 ratings)", "Item average: 4.5 (1 ratings)", "",
                          "How will this user rate the target item?"]
    assert sum(line.startswith(("User average", "Item average")) for line in lines) == 2


def test_token_budget_trims_oldest_history_first(tmp_path):
    from conftest import make_test_model

    from reczero.models.load import load_tokenizer

    tokenizer = load_tokenizer(make_test_model(tmp_path / "m"))
    sample = make_sample(8)
    full = render_prompt(sample, PromptOptions(max_prompt_tokens=100_000), tokenizer)
    n_full = len(tokenizer(full)["input_ids"])
    budget = n_full - 60
    opts = PromptOptions(max_prompt_tokens=budget)
    text = render_prompt(sample, opts, tokenizer)
    assert len(tokenizer(text)["input_ids"]) <= budget
    assert "Film 7" in text and "Film 0" not in text          # newest kept, oldest dropped
    assert "Orbit Nine" in text and "dying star" in text      # the target item is never cut
    assert text.endswith("<|im_start|>assistant\n")


def test_format_rating_and_answer():
    assert format_rating(4.0, RatingScale(1, 5)) == "4"
    assert format_rating(3.5, RatingScale(0.5, 5, 0.5)) == "3.5"
    assert format_rating(4.0) == "4" and format_rating(3.25) == "3.25"
    answer = format_answer("structured", {"analyze user": "a", "analyze item": "b", "match": "c"}, 4.0)
    assert answer == ("<analyze user>a</analyze user>\n<analyze item>b</analyze item>\n<match>c</match>\n"
                      "<rate>4</rate>")
    assert format_answer("think-answer", {"think": "t"}, "3.5") == "<think>t</think>\n<rate>3.5</rate>"
    assert format_answer("rate-only", {}, 2) == "<rate>2</rate>"
    with pytest.raises(ValueError, match="match"):
        format_answer("structured", {"analyze user": "a", "analyze item": "b"}, 4)
