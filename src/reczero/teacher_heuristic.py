"""The embedded heuristic teacher: short, grounded four-step rationales from the visible data only.

What this teacher chose, and why:

* **Only what the prompt shows** is used: the history entries' attributes and ratings, the user's
  and the item's averages, the item's attributes and other users' earlier reviews (windowed as
  the prompt windows them: ``prompt_history``, ``prompt_item_reviews``). Nothing about
  the hidden rating model of RecWorld leaks into the text.
* **Tastes are deviations from the user's own average**: for each attribute in the history, the
  mean of ``rating - user_avg`` over the entries that carry it, shrunk by ``n / (n + 2)`` so a
  single rating counts for less (on RecWorld this shrinkage predicted best of n+1, n+2, n+3). ``>= +0.3`` is a like, ``<= -0.3`` a dislike.
* **The ``<match>`` step carries the arithmetic the rating needs, right before ``<rate>``**:
  the item's attributes that the user likes or dislikes with their deviations, the base (the mean
  of the user and item averages) and "so about X". A small model can then rate by reading the
  line next to the tag instead of the whole prompt, which is the point of thinking first.
* **Deliberately imperfect**: the estimate is base + the matched deviations (``|d| >= 0.15``), plus Gaussian noise
  (``noise``, seeded per ``sample_id`` so a resumed run writes the same text), rounded to the
  scale. It is often off by more than the tolerance, so the rationalisation path runs for real.
* **Rationalised answers** (told the true rating ``y``) keep the two analyses and the matched
  tastes, add the visible evidence that pulls toward ``y`` when the estimate is off by 0.5 or
  more ("but 4 reviews down to 2, the user has rated as low as 2": other users' reviews on that
  side, the user's own ratings reaching ``y``) and end at ``y``.
* Text is short (~40-80 words) and regular, for tiny models. ``think-answer`` puts the same three
  parts inside one ``<think>``; ``rate-only`` writes only the rating.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reczero.data.schema import RatingScale
from reczero.prompts import format_answer, format_rating

LIKE = 0.3          # shrunk deviation from the user's average that counts as a like (or, negated, a dislike)
MATCH = 0.15        # smaller deviations are left out of <match> (and of the estimate)
SHOWN = 3           # at most this many likes, dislikes, attributes or reviews per step


@dataclass
class Evidence:
    """What the heuristic read from one sample (all from the prompt's visible data)."""

    user_avg: float | None
    item_avg: float | None
    user_n: int
    item_n: int
    tastes: dict[str, float]            # attribute -> shrunk mean deviation from the user's average
    item_attributes: list[str]
    reviews: list[tuple[float, str]]    # (rating, snippet) of other users, most recent last
    user_ratings: list[float]
    base: float
    matches: list[tuple[str, float]]    # the item's attributes the user has a taste for

    @property
    def estimate(self) -> float:
        return self.base + sum(d for _, d in self.matches)


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _last(entries: Any, n: int | None) -> list:
    entries = list(entries or [])
    return entries if n is None else entries[-n:] if n > 0 else []


def read_evidence(sample: Mapping[str, Any], scale: RatingScale, shown_history: int | None = None,
                  shown_reviews: int | None = None) -> Evidence:
    """The evidence of one sample, from the entries the prompt shows (the last ``shown_*``; all when None)."""
    history = _last(sample.get("user_history"), shown_history)
    ratings = [float(h["rating"]) for h in history]
    user_avg = _num(sample.get("user_avg"))
    mean = user_avg if user_avg is not None else (sum(ratings) / len(ratings) if ratings else None)
    devs: dict[str, list[float]] = {}
    if mean is not None:
        for h in history:
            for attr in h.get("attributes") or []:
                devs.setdefault(str(attr), []).append(float(h["rating"]) - mean)
    tastes = {a: sum(d) / (len(d) + 2) for a, d in devs.items()}   # the mean, shrunk by n / (n + 2)
    item_avg = _num(sample.get("item_avg"))
    known = [v for v in (user_avg, item_avg) if v is not None]
    base = sum(known) / len(known) if known else scale.lo + scale.span / 2
    attrs = [str(a) for a in sample.get("item_attributes") or []]
    matches = [(a, tastes[a]) for a in attrs if a in tastes and abs(tastes[a]) >= MATCH]
    reviews = [(float(r["rating"]), _words(r.get("review"), 5)) for r in _last(sample.get("item_history"), shown_reviews)]
    return Evidence(user_avg, item_avg, int(sample.get("user_n") or len(history)), int(sample.get("item_n") or len(reviews)),
                    tastes, attrs, reviews, ratings, base, matches)


def _words(text: Any, n: int) -> str:
    words = str(text or "").replace('"', "'").replace("<", "(").replace(">", ")").split()
    return " ".join(words[:n]) + ("..." if len(words) > n else "")


def _signed(x: float) -> str:
    return f"{x:+.1f}"


def _count(n: int) -> str:
    return f"{n} rating{'' if n == 1 else 's'}"


def _avg(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


def analyze_user(ev: Evidence) -> str:
    likes = sorted(((a, d) for a, d in ev.tastes.items() if d >= LIKE), key=lambda t: -t[1])[:SHOWN]
    dislikes = sorted(((a, d) for a, d in ev.tastes.items() if d <= -LIKE), key=lambda t: t[1])[:SHOWN]
    if not ev.user_ratings and ev.user_avg is None:
        return "no history yet."
    parts = [f"avg {_avg(ev.user_avg)} over {_count(ev.user_n)}"]
    parts.append("likes " + ", ".join(f"{a} ({_signed(d)})" for a, d in likes) if likes else "no clear likes")
    parts.append("dislikes " + ", ".join(f"{a} ({_signed(d)})" for a, d in dislikes) if dislikes else "no clear dislikes")
    return "; ".join(parts) + "."


def analyze_item(ev: Evidence, title: Any, scale: RatingScale) -> str:
    name = _words(title, 6) or "the item"
    attrs = ", ".join(ev.item_attributes[:SHOWN + 1]) or "no listed attributes"
    text = f"{name}: {attrs}; " + (f"avg {_avg(ev.item_avg)} from {_count(ev.item_n)}" if ev.item_avg is not None else "no ratings yet")
    said = [f'{format_rating(r, scale)} "{s}"' for r, s in ev.reviews[-2:] if s]
    return text + ("; reviewers: " + ", ".join(said) if said else "") + "."


def _tastes(ev: Evidence) -> list[str]:
    return [f"{'likes' if d > 0 else 'dislikes'} {a} {_signed(d)}" for a, d in ev.matches]


def match(ev: Evidence, about: float, but: list[str] | None = None) -> str:
    """The step next to ``<rate>``: matched tastes, evidence that ``but`` pulls elsewhere, base, result."""
    cited = ", ".join(_tastes(ev)) or "no known likes or dislikes among its attributes"
    if but:
        cited += "; but " + ", ".join(but)
    return f"{cited}; base {ev.base:.1f} (user {_avg(ev.user_avg)}, item {_avg(ev.item_avg)}); so about {about:.1f}."


def pulls_toward(ev: Evidence, target: float, scale: RatingScale) -> list[str]:
    """Visible evidence that pulls the estimate toward ``target`` (for a rationalisation): reviews of
    the item on that side of the estimate, and the user's own ratings reaching the target."""
    if abs(target - ev.estimate) < 0.5:
        return []
    up = target > ev.estimate
    cited = []
    side = [r for r, _ in ev.reviews if (r - ev.estimate if up else ev.estimate - r) >= 0.5]
    if side:
        best = max(side) if up else min(side)
        cited.append(f"{len(side)} review{'s' if len(side) > 1 else ''} {'up to' if up else 'down to'} "
                     f"{format_rating(best, scale)}")
    if ev.user_ratings:
        extreme = max(ev.user_ratings) if up else min(ev.user_ratings)
        if (extreme >= target) if up else (extreme <= target):
            cited.append(f"the user has rated {'as high as' if up else 'as low as'} {format_rating(extreme, scale)}")
    return cited


class HeuristicTeacher:
    """The teacher protocol of :mod:`reczero.teacher` without an endpoint."""

    def __init__(self, template: str, scale: RatingScale, seed: int = 0, noise: float = 0.35,
                 shown_history: int | None = None, shown_reviews: int | None = None) -> None:
        self.template, self.scale, self.seed, self.noise = template, scale, seed, noise
        self.shown = (shown_history, shown_reviews)    # what the prompt shows (PromptOptions)
        self.name = "heuristic"

    def predict(self, sample: Mapping[str, Any]) -> float:
        """The heuristic's own (imperfect) rating: the estimate plus seeded noise, on the scale."""
        return self._round(round(self._about(read_evidence(sample, self.scale, *self.shown), sample), 1))

    def _about(self, ev: Evidence, sample: Mapping[str, Any]) -> float:
        rng = random.Random(f"{self.seed}:{sample['sample_id']}")
        return self.scale.clip(ev.estimate + rng.gauss(0.0, self.noise))

    def _round(self, value: float) -> float:
        """To the scale, halves up (so "about 3.5" rates 4, as a reader expects)."""
        step = self.scale.step or 1.0
        return self.scale.clip(self.scale.lo + math.floor((value - self.scale.lo) / step + 0.5 + 1e-9) * step)

    def write(self, sample: Mapping[str, Any], true_rating: float | None = None) -> str:
        """The first answer, or (with ``true_rating``) a rationale that leads to the true rating."""
        ev = read_evidence(sample, self.scale, *self.shown)
        if true_rating is None:
            about = round(self._about(ev, sample), 1)
            step = match(ev, about)
        else:
            about = float(true_rating)
            step = match(ev, about, pulls_toward(ev, about, self.scale))
        rating = self._round(about)
        if self.template == "rate-only":
            return format_answer("rate-only", {}, rating, self.scale)
        user, item = analyze_user(ev), analyze_item(ev, sample.get("item_title"), self.scale)
        if self.template == "think-answer":
            parts = {"think": f"User: {user} Item: {item} Match: {step}"}
        else:
            parts = {"analyze user": user, "analyze item": item, "match": step}
        return format_answer(self.template, parts, rating, self.scale)

    async def answer(self, sample: Mapping[str, Any], messages: list[dict[str, str]], feedback: Any = None) -> str:
        """One answer; ``feedback`` (a :class:`reczero.teacher.Feedback`) carries the true rating."""
        truth = feedback.rating if feedback is not None and feedback.kind == "rationalise" else None
        return self.write(sample, truth)

    async def close(self) -> None:
        pass
