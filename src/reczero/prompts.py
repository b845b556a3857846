"""The rating prompt (RecZero's Think-before-Recommendation template) and its answer formats.

What this module chose, and why:

* **Three answer templates** (``--template``): ``structured`` is the paper's four tagged steps
  ``<analyze user>``, ``<analyze item>``, ``<match>``, ``<rate>``; ``think-answer`` is one free
  ``<think>`` step then ``<rate>`` (the "no structured template" ablation); ``rate-only`` is just
  ``<rate>`` (the "no thinking" ablation). The tags are plain text: a tokenizer should hold them
  as *ordinary* added tokens, since TRL decodes completions with ``skip_special_tokens=True``.
* **A system message explains the steps; the user message shows the evidence**: the user's history
  (oldest first, "Title [attributes] rated 4: review" lines), the user's average, the target item
  (title, attributes, description), other users' earlier reviews of it and its average. Every
  number was computed before the target's timestamp (``data/schema.py``); the target rating never
  appears. The same line formats (:func:`history_line`, :func:`item_review_line`) are used by the
  tiny base's pretraining documents, so the base has read text that looks like its prompts.
* **The model's own chat template renders the messages** (:func:`render_prompt`), so a real
  instruct model and the tiny base are prompted the same way.
* **Token budget**: with a tokenizer, ``max_prompt_tokens`` is enforced by dropping the oldest user
  history entries first, then the oldest item reviews; the target item is never cut. If even the
  bare prompt is too long it is kept whole and a warning is logged (never silently truncated).
* **Ratings are written as the scale writes them**: "4" on a whole-star scale, not "4.0"
  (whole-number rating tokens read better for small models); averages with one decimal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from reczero.data.schema import RatingScale

log = logging.getLogger(__name__)

#: The four step tags of the structured template, in order.
TAGS: tuple[str, ...] = ("analyze user", "analyze item", "match", "rate")

#: Which tags each answer template uses, in order.
TEMPLATE_TAGS: dict[str, tuple[str, ...]] = {
    "structured": TAGS,
    "think-answer": ("think", "rate"),
    "rate-only": ("rate",),
}

#: Every tag string any template uses, opening and closing: the tokenizer's added tokens.
TAG_TOKENS: tuple[str, ...] = tuple(
    t for tag in dict.fromkeys(tag for tags in TEMPLATE_TAGS.values() for tag in tags) for t in (f"<{tag}>", f"</{tag}>")
)

_STEPS = {
    "analyze user": "the user's preferences, read from the ratings and reviews in their history",
    "analyze item": "the target item's key features, its likely positives and negatives",
    "match": "how well the item fits this user's preferences",
    "think": "your reasoning about the user, the item and how well they match",
}


def template_tags(template: str) -> tuple[str, ...]:
    if template not in TEMPLATE_TAGS:
        raise ValueError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATE_TAGS)}")
    return TEMPLATE_TAGS[template]


def _scale_text(scale: RatingScale | None) -> str:
    if scale is None:
        return "on the same scale as the ratings shown"
    return f"from {format_rating(scale.lo, scale)} to {format_rating(scale.hi, scale)}"


def system_prompt(template: str, scale: RatingScale | None = None) -> str:
    """The system message: the task and the answer format of ``template``.

    ``scale`` (the dataset's rating scale) is named when given; train and evaluation must agree
    on passing it, since it changes the prompt.
    """
    tags = template_tags(template)
    head = (f"You are a recommender that thinks before it recommends. Predict the rating the user will "
            f"give the target item, {_scale_text(scale)}.")
    if template == "rate-only":
        return head + "\nAnswer with the rating only, inside its tags: <rate>the rating, a number</rate>"
    steps = "\n".join(f"<{t}>{_STEPS[t]}</{t}>" for t in tags if t != "rate")
    return (f"{head}\nAnswer in {len(tags)} steps, each inside its tags, in this order:\n{steps}\n"
            f"<rate>the rating, a number only</rate>\nWrite nothing outside the tags.")


# ----------------------------------------------------------------------------------------------
# Numbers and lines (shared with the tiny base's pretraining documents)
# ----------------------------------------------------------------------------------------------


def format_rating(value: float, scale: RatingScale | None = None) -> str:
    """A rating as the scale writes it: "4" on whole-star scales, "3.5" on half stars.

    >>> format_rating(4.0, RatingScale(1, 5))
    '4'
    >>> format_rating(3.5, RatingScale(0.5, 5, 0.5))
    '3.5'
    """
    value = float(value)
    if scale is not None and float(scale.step).is_integer() and float(scale.lo).is_integer():
        return str(int(round(value)))
    if value.is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_average(value: float | None) -> str | None:
    """One decimal ("3.7"), or None when there is no average."""
    return None if _missing(value) else f"{float(value):.1f}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seq(value: Any) -> list:
    """Lists from parquet come back as lists, numpy arrays or None."""
    return [] if value is None else list(value)


def _snippet(text: Any, chars: int) -> str:
    if _missing(text):
        return ""
    text = " ".join(str(text).split())
    return text if len(text) <= chars else text[: max(chars - 1, 0)].rstrip() + "…"


def item_label(title: Any, attributes: Any) -> str:
    """"Title [attr, attr]" (attributes left out when there are none)."""
    attrs = [str(a) for a in _seq(attributes)]
    title = "(untitled)" if _missing(title) or not str(title).strip() else str(title).strip()
    return f"{title} [{', '.join(attrs)}]" if attrs else title


def history_line(entry: Mapping[str, Any], snippet_chars: int, scale: RatingScale | None = None) -> str:
    """One user-history line: "- Title [attributes] rated 4: review snippet"."""
    line = f"- {item_label(entry.get('title'), entry.get('attributes'))} rated {format_rating(entry['rating'], scale)}"
    review = _snippet(entry.get("review"), snippet_chars)
    return f"{line}: {review}" if review else line


def item_review_line(entry: Mapping[str, Any], snippet_chars: int, scale: RatingScale | None = None) -> str:
    """One earlier review of the target item: "- rated 4: review snippet"."""
    line = f"- rated {format_rating(entry['rating'], scale)}"
    review = _snippet(entry.get("review"), snippet_chars)
    return f"{line}: {review}" if review else line


def average_line(who: str, avg: Any, n: Any) -> str:
    text = format_average(avg)
    if text is None:
        return f"{who} average: none yet"
    count = "" if _missing(n) else f" ({int(n)} ratings)"
    return f"{who} average: {text}{count}"


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------


def _user_message(sample: Mapping[str, Any], opts: Any, history: Sequence[Mapping], reviews: Sequence[Mapping],
                  scale: RatingScale | None) -> str:
    parts = []
    if history:
        parts.append("User history (oldest first):")
        parts += [history_line(h, opts.prompt_snippet_chars, scale) for h in history]
    else:
        parts.append("User history: none shown")
    averages = [average_line("User", sample.get("user_avg"), sample.get("user_n")),
                average_line("Item", sample.get("item_avg"), sample.get("item_n"))]
    at_end = getattr(opts, "prompt_averages", "inline") == "end"
    if not at_end:
        parts.append(averages[0])
    parts.append("")
    parts.append(f"Target item: {item_label(sample.get('item_title'), sample.get('item_attributes'))}")
    description = _snippet(sample.get("item_description"), 10_000)
    if description:
        parts.append(f"Description: {description}")
    if reviews:
        parts.append("Earlier reviews of the item (oldest first):")
        parts += [item_review_line(r, opts.prompt_snippet_chars, scale) for r in reviews]
    parts += averages if at_end else averages[1:]
    parts.append("")
    parts.append("How will this user rate the target item?")
    return "\n".join(parts)


def build_messages(sample: Mapping[str, Any], opts: Any, tokenizer: Any = None,
                   scale: RatingScale | None = None) -> list[dict[str, str]]:
    """System + user messages for one sample (a split row as a dict, ``schema.SAMPLE_SCHEMA``).

    ``opts`` is a :class:`reczero.config.PromptOptions` (or any config inheriting it). With a
    ``tokenizer``, the rendered prompt is kept within ``opts.max_prompt_tokens`` by dropping the
    oldest user history entries first, then the oldest item reviews; the target item is never cut.
    """
    history = _seq(sample.get("user_history"))[-opts.prompt_history:] if opts.prompt_history > 0 else []
    reviews = _seq(sample.get("item_history"))[-opts.prompt_item_reviews:] if opts.prompt_item_reviews > 0 else []
    system = system_prompt(opts.template, scale)

    def make() -> list[dict[str, str]]:
        return [{"role": "system", "content": system},
                {"role": "user", "content": _user_message(sample, opts, history, reviews, scale)}]

    messages = make()
    if tokenizer is None:
        return messages
    while _count_tokens(messages, tokenizer) > opts.max_prompt_tokens:
        if history:
            history = history[1:]
        elif reviews:
            reviews = reviews[1:]
        else:
            log.warning("sample %s: the prompt without any history is %d tokens, over max_prompt_tokens=%d; kept whole",
                        sample.get("sample_id"), _count_tokens(messages, tokenizer), opts.max_prompt_tokens)
            return messages
        messages = make()
    return messages


def _count_tokens(messages: list[dict[str, str]], tokenizer: Any) -> int:
    text = _apply_template(tokenizer, messages, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _apply_template(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        from reczero.errors import ReczeroError

        raise ReczeroError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
                           "use an instruct/chat model or a base built with `reczero base`")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_prompt(sample: Mapping[str, Any], opts: Any, tokenizer: Any, scale: RatingScale | None = None) -> str:
    """The prompt text: messages through the tokenizer's chat template, generation prompt added."""
    return _apply_template(tokenizer, build_messages(sample, opts, tokenizer, scale), add_generation_prompt=True)


# ----------------------------------------------------------------------------------------------
# Answers
# ----------------------------------------------------------------------------------------------


def format_answer(template: str, parts: Mapping[str, str], rating: float | str,
                  scale: RatingScale | None = None) -> str:
    """The assistant's answer for ``template``: each step's text inside its tags, one per line.

    ``parts`` maps the step tags other than ``rate`` (``"analyze user"``, ``"analyze item"``,
    ``"match"``; or ``"think"``) to their text; a string ``rating`` is used as written.
    """
    tags = template_tags(template)
    missing = [t for t in tags if t != "rate" and not str(parts.get(t, "")).strip()]
    if missing:
        raise ValueError(f"format_answer({template!r}): no text for step(s) {', '.join(missing)}")
    rate = rating if isinstance(rating, str) else format_rating(rating, scale)
    lines = [f"<{t}>{str(parts[t]).strip()}</{t}>" for t in tags if t != "rate"]
    lines.append(f"<rate>{rate}</rate>")
    return "\n".join(lines)
