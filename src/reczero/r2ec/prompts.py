"""R2ec's two prompts: the user prompt (a history window to reason about) and the item prompt.

What this module chose, and why:

* **User prompt** (the reference's layout): an instruction to analyse the user's history and
  recommend the next item, then one line per history item, oldest first: how long before the
  target it happened, the title, and the rating "out of" the dataset's scale. Implicit datasets
  (no ratings) leave the rating out. Two options the reference lacks: each history item's
  **attributes** in brackets and its **review snippet**. RecWorld's titles are random word pairs,
  and its users' tastes live in the attributes and reviews; real Amazon titles carry much of this.
* **One user message, no system message**: Gemma's chat template refuses a system role, and one
  layout for every backbone keeps the prompts comparable.
* **The model ends its reasoning by writing** ``<answer>`` (generation stops there; the hidden state
  at that token is the user vector). The ``no_reasoning`` ablation pre-fills ``<answer>`` right
  after the generation prompt instead, like the item prompt.
* **Item prompt**: an instruction to summarise the item, then title, average rating, number of
  ratings and the description cut to ``description_words`` words **in source order** (the reference
  builds it from an unordered set, so its item text changes between runs); the assistant turn is
  pre-filled with exactly ``<answer>``.
* **Token budget**: with a tokenizer, the oldest history lines are dropped until the rendered user
  prompt fits ``max_prompt_tokens`` (never the newest line); a prompt that does not fit even with
  one line is kept whole, with a warning.
* Lines reuse the rating prompt's helpers (:func:`reczero.prompts.format_rating`, ``item_label``,
  the snippet cut), so ratings and titles are written the same way in both systems.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from reczero.data.schema import RatingScale
from reczero.prompts import _apply_template, _seq, _snippet, format_average, format_rating, item_label

log = logging.getLogger(__name__)

#: The marker that ends the reasoning; one added token, the position of every user and item vector.
ANSWER = "<answer>"

USER_INSTRUCTION = (
    "Below is a user's history, oldest first: how long before now they interacted with each item, "
    "its title{rated}. Analyse the user's preferences step by step, then write {answer} to recommend "
    "the item they will want next."
)
ITEM_INSTRUCTION = "Summarise the key features of this item and who would enjoy it, then write {answer}."


def time_before(seconds: float) -> str:
    """How long before the target an interaction happened, in the coarsest fitting unit.

    >>> time_before(30), time_before(5 * 3600), time_before(3 * 86400), time_before(95 * 86400)
    ('just before', '5 hours before', '3 days before', '3 months before')
    >>> time_before(800 * 86400)
    '2 years before'
    """
    seconds = max(float(seconds), 0.0)
    for unit, size, limit in (("hour", 3600, 48), ("day", 86400, 60), ("month", 30.44 * 86400, 24)):
        n = seconds / size
        if n < 1 and unit == "hour":
            return "just before"
        if n < limit:
            k = max(int(n), 1)
            return f"{k} {unit}{'s' if k != 1 else ''} before"
    k = int(seconds / (365.25 * 86400))
    return f"{k} year{'s' if k != 1 else ''} before"


def _has_rating(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def history_line(entry: Mapping[str, Any], target_time: int, opts: Any, scale: RatingScale | None) -> str:
    """"- 3 days before: Title [attributes], rated 4 out of 5. Review: …" (parts by option)."""
    attrs = entry.get("attributes") if opts.history_attributes else None
    line = f"- {time_before(target_time - int(entry['timestamp']))}: {item_label(entry.get('title'), attrs)}"
    if _has_rating(entry.get("rating")):
        out_of = f" out of {format_rating(scale.hi, scale)}" if scale is not None else ""
        line += f", rated {format_rating(entry['rating'], scale)}{out_of}"
    if opts.history_reviews:
        review = _snippet(entry.get("review"), opts.review_chars)
        if review:
            line += f". Review: {review}"
    return line


def user_text(sample: Mapping[str, Any], opts: Any, scale: RatingScale | None, history: list | None = None) -> str:
    """The user message for one split row (``schema.SAMPLE_SCHEMA``): instruction + history lines."""
    if history is None:
        history = _seq(sample.get("user_history"))[-opts.history_window:] if opts.history_window > 0 else []
    rated = any(_has_rating(h.get("rating")) for h in history)
    head = USER_INSTRUCTION.format(rated=" and the rating they gave it" if rated else "", answer=ANSWER)
    if not history:
        return head + "\n\nHistory: none yet."
    lines = [history_line(h, int(sample["timestamp"]), opts, scale) for h in history]
    return head + "\n\nHistory:\n" + "\n".join(lines)


def user_prompt(sample: Mapping[str, Any], opts: Any, tokenizer: Any, scale: RatingScale | None,
                *, no_reasoning: bool = False) -> str:
    """The rendered user prompt (chat template, generation prompt added; ``<answer>`` appended when
    ``no_reasoning``), within ``opts.max_prompt_tokens`` by dropping the oldest history lines."""
    history = _seq(sample.get("user_history"))[-opts.history_window:] if opts.history_window > 0 else []
    suffix = ANSWER if no_reasoning else ""

    def render(hist: list) -> str:
        messages = [{"role": "user", "content": user_text(sample, opts, scale, hist)}]
        return _apply_template(tokenizer, messages, add_generation_prompt=True) + suffix

    text = render(history)
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > opts.max_prompt_tokens:
        if len(history) <= 1:
            log.warning("sample %s: the user prompt with one history line is over max_prompt_tokens=%d; kept whole",
                        sample.get("sample_id"), opts.max_prompt_tokens)
            break
        history = history[1:]
        text = render(history)
    return text


def first_words(text: Any, n: int) -> str:
    """The first ``n`` words of ``text`` in source order (whitespace collapsed).

    >>> first_words("a  b\\nc d", 3)
    'a b c'
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return " ".join(str(text).split()[:n])


def item_text(item: Mapping[str, Any], opts: Any) -> str:
    """The item message: instruction, title, average rating and count, capped description.

    ``item`` has ``title``, ``description`` and the training-time statistics ``avg_rating``
    (None on implicit datasets or for an item never rated in training) and ``n_ratings``.
    """
    lines = [ITEM_INSTRUCTION.format(answer=ANSWER), "", f"Title: {item_label(item.get('title'), None)}"]
    avg = format_average(item.get("avg_rating"))
    n = int(item.get("n_ratings") or 0)
    if avg is not None:
        lines.append(f"Average rating: {avg}")
        lines.append(f"Number of ratings: {n}")
    else:
        lines.append(f"Number of interactions: {n}")
    description = first_words(item.get("description"), opts.description_words)
    if description:
        lines.append(f"Description: {description}")
    return "\n".join(lines)


def item_prompt(item: Mapping[str, Any], opts: Any, tokenizer: Any) -> str:
    """The rendered item prompt; the assistant turn is pre-filled with exactly ``<answer>``."""
    messages = [{"role": "user", "content": item_text(item, opts)}]
    return _apply_template(tokenizer, messages, add_generation_prompt=True) + ANSWER
