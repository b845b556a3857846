"""Rule-based rewards for RecZero (TRL's reward-function contract) and the rating parser.

What this module chose, and why:

* **Two reward terms, as in the paper**: a format term (``+bonus`` when the answer follows its
  template and the rating parses inside the scale, ``penalty`` otherwise; +0.5 / -0.5 by default)
  and an answer term ``1 - |y - y_hat| / max_error`` (``max_error`` defaults to the scale's span),
  clipped to [0, 1]. An unparsable rating gets the format penalty and an answer reward of 0 —
  never a perfect score.
* **TRL's contract**: a reward is called ``reward(prompts=..., completions=..., rating=..., **kw)``
  and returns one float per completion; dataset columns (here ``rating``) arrive as keyword
  arguments. Completions are strings or conversational lists (``[{"role": "assistant",
  "content": ...}]``). Parameterised rewards are small classes (they must pickle for multi-process
  training); their ``__name__`` (``format``, ``answer``) is what TRL logs as ``rewards/<name>``.
* **Parsing never raises and never backtracks badly**: :func:`parse_rating` locates the *last*
  ``</rate>`` and the nearest ``<rate>`` before it with ``str.rfind`` (linear time on hostile
  strings), then reads one number. It is lenient about decoration inside the tag (``**4**``,
  ``4/5``, ``4 stars``, ``4 out of 5``) so that real LLMs are not punished twice for style; the
  *format* check is strict.
* **Format strictness** (:func:`check_format`): after stripping surrounding whitespace, the text
  must be exactly the template's tagged blocks in order, each tag opening and closing exactly once,
  with only whitespace between blocks, every block non-empty, and the ``<rate>`` block a bare
  number (``4`` or ``3.5``). Markdown, preambles or a second ``<rate>`` fail the format.
* **Rewards travel with their weights**: a trainer takes :class:`RewardSpec` ``(func, weight)``
  pairs (plain tuples work too), and :func:`trl_rewards` turns them into TRL's two parallel lists
  (``reward_funcs`` for the trainer, ``reward_weights`` for ``GRPOConfig``) in one place, so a
  weight can never drift to another function's position. A weight of 0 logs a function without
  changing the advantages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from reczero.data.schema import RatingScale
from reczero.prompts import TAG_TOKENS, template_tags

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_BARE = re.compile(rf"\s*({_NUMBER})\s*", re.ASCII)
_DECORATED = re.compile(
    rf"[\s*_`\"']*({_NUMBER})\s*(?:/\s*{_NUMBER}|out\s+of\s+{_NUMBER}|stars?)?[\s*_`\"'.]*", re.ASCII | re.IGNORECASE
)


def _as_scale(scale: RatingScale | Sequence[float]) -> RatingScale:
    if isinstance(scale, RatingScale):
        return scale
    lo, hi = scale
    return RatingScale(float(lo), float(hi))


def _rate_content(text: str) -> str | None:
    end = text.rfind("</rate>")
    if end < 0:
        return None
    start = text.rfind("<rate>", 0, end)
    return None if start < 0 else text[start + len("<rate>"): end]


def _to_float(number: str) -> float | None:
    try:
        value = float(number)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def parse_rating(text: Any, scale: RatingScale | Sequence[float], template: str = "structured") -> float | None:
    """The number inside the last ``<rate>…</rate>``; None when absent, unparsable or off the scale.

    Never raises on any string (nor on non-strings, which give None).

    >>> parse_rating("<match>ok</match><rate> 4 </rate>", RatingScale(1, 5))
    4.0
    >>> parse_rating("<rate>6</rate>", RatingScale(1, 5)) is None
    True
    """
    template_tags(template)  # every template ends in <rate>; an unknown name is a caller bug
    if not isinstance(text, str):
        return None
    content = _rate_content(text)
    if content is None or len(content) > 64:
        return None
    match = _DECORATED.fullmatch(content)
    if match is None:
        return None
    value = _to_float(match.group(1))
    scale = _as_scale(scale)
    return value if value is not None and scale.contains(value) else None


def check_format(text: Any, template: str, scale: RatingScale | Sequence[float] | None = None) -> bool:
    """Whether ``text`` is exactly the template's tagged blocks (see the module docstring).

    With ``scale``, the rate must also lie inside it.
    """
    tags = template_tags(template)
    if not isinstance(text, str):
        return False
    body = text.strip()
    # each of the template's tags opens and closes exactly once; no other template's tags appear
    for token in TAG_TOKENS:
        expected = 1 if token.strip("</>") in tags else 0
        if body.count(token) != expected:
            return False
    pos = 0
    contents = {}
    for tag in tags:
        start = body.find(f"<{tag}>", pos)
        end = body.find(f"</{tag}>", start)
        if start < 0 or end < 0 or body[pos:start].strip():
            return False
        contents[tag] = body[start + len(tag) + 2: end]
        if not contents[tag].strip():
            return False
        pos = end + len(tag) + 3
    if pos != len(body):
        return False
    rate = _BARE.fullmatch(contents["rate"])
    if rate is None or _to_float(rate.group(1)) is None:
        return False
    return scale is None or _as_scale(scale).contains(float(rate.group(1)))


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or the assistant contents of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        texts = []
        for message in completion:
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content")
                if isinstance(content, list):  # multimodal-style parts: keep the text ones
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                texts.append(content if isinstance(content, str) else "")
        return "".join(texts)
    return ""


def _targets(rating: Sequence[Any] | None, n: int) -> list[float]:
    if rating is None:
        raise ValueError("reward needs the dataset column 'rating' (the true rating of each sample)")
    if len(rating) != n:
        raise ValueError(f"reward got {n} completions but {len(rating)} ratings")
    return [float(r) for r in rating]


class FormatReward:
    """``bonus`` when a completion follows the template and its rating parses inside the scale,
    else ``penalty`` (TRL logs it as ``rewards/format``)."""

    def __init__(self, scale: RatingScale | Sequence[float], template: str = "structured",
                 bonus: float = 0.5, penalty: float = -0.5) -> None:
        template_tags(template)
        self.scale, self.template, self.bonus, self.penalty = _as_scale(scale), template, float(bonus), float(penalty)
        self.__name__ = self.name = "format"

    def __call__(self, completions: Sequence[Any], rating: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        out = []
        for completion in completions:
            text = completion_text(completion)
            ok = check_format(text, self.template, self.scale) and parse_rating(text, self.scale, self.template) is not None
            out.append(self.bonus if ok else self.penalty)
        return out

    def __repr__(self) -> str:
        return f"FormatReward(scale={self.scale}, template={self.template!r}, bonus={self.bonus}, penalty={self.penalty})"


class AnswerReward:
    """``1 - |y - y_hat| / max_error`` clipped to [0, 1]; 0 when the rating cannot be parsed
    (TRL logs it as ``rewards/answer``). ``max_error`` defaults to the scale's span."""

    def __init__(self, scale: RatingScale | Sequence[float], template: str = "structured",
                 max_error: float | None = None) -> None:
        template_tags(template)
        self.scale, self.template = _as_scale(scale), template
        self.max_error = float(max_error) if max_error is not None else self.scale.span
        if not self.max_error > 0:
            raise ValueError(f"max_error must be > 0, got {self.max_error}")
        self.__name__ = self.name = "answer"

    def score(self, text: str, target: float) -> float:
        predicted = parse_rating(text, self.scale, self.template)
        if predicted is None:
            return 0.0
        return min(1.0, max(0.0, 1.0 - abs(target - predicted) / self.max_error))

    def __call__(self, completions: Sequence[Any], rating: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        targets = _targets(rating, len(completions))
        return [self.score(completion_text(c), y) for c, y in zip(completions, targets, strict=True)]

    def __repr__(self) -> str:
        return f"AnswerReward(scale={self.scale}, template={self.template!r}, max_error={self.max_error})"


class RewardSpec(NamedTuple):
    """One reward term of a GRPO run: a function on TRL's contract and its weight in the summed reward."""

    func: Callable[..., list[float]]
    weight: float


def trl_rewards(specs: Sequence[RewardSpec | tuple[Callable[..., list[float]], float]]) -> tuple[list[Any], list[float]]:
    """``(reward_funcs, reward_weights)`` for TRL's ``GRPOTrainer`` and ``GRPOConfig`` from
    ``(func, weight)`` pairs, in the same order.

    Refuses what TRL would misreport: no rewards, a non-callable, a weight that is not a finite
    number, or two functions with one ``__name__`` (TRL logs ``rewards/<name>`` per function).

    >>> funcs, weights = trl_rewards([(FormatReward((1, 5)), 1.0), RewardSpec(AnswerReward((1, 5)), 0.5)])
    >>> [f.__name__ for f in funcs], weights
    (['format', 'answer'], [1.0, 0.5])
    """
    if not specs:
        raise ValueError("at least one reward (func, weight) pair is needed")
    funcs, weights, names = [], [], set()
    for i, spec in enumerate(specs):
        try:
            func, weight = spec
        except (TypeError, ValueError):
            raise ValueError(f"reward {i}: expected a (func, weight) pair, got {spec!r}") from None
        name = getattr(func, "__name__", None)
        if not callable(func) or not name:
            raise ValueError(f"reward {i}: {func!r} is not a callable with a __name__ (TRL logs rewards by name)")
        if name in names:
            raise ValueError(f"reward {i}: a second reward named {name!r}; TRL would log both as rewards/{name}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"reward {name!r}: weight must be a finite number, got {weight!r}")
        names.add(name)
        funcs.append(func)
        weights.append(float(weight))
    return funcs, weights
