"""RecWorld's language: attribute vocabulary, titles, descriptions and reviews.

What this module chose, and why:

* **Small, regular vocabularies.** The world is read by tiny models (0.3M–5M parameters) through a
  BPE tokenizer trained on this very text, so every signal is carried by a few common words: 32
  single-word attributes (12 genres, 10 moods, 10 styles), titles of 2–4 words from 40 adjectives
  and 40 nouns, descriptions of one or two sentences, reviews of one to five short sentences.
* **Text that tells the truth, legibly.** A description names the item's attributes and carries a
  quality word ("weak" ... "brilliant") read off the item's latent quality with a little noise. A
  review opens with a sentiment sentence chosen by the rating (so sentiment follows the rating),
  then says, for each of the item's attributes, whether this user likes, dislikes or does not mind
  it, and sometimes names one more of the user's liked or disliked attributes that the item lacks.
  Collaborative filtering sees only the rating; a reader of the history learns the user's tastes.
* **Vectorised.** Reviews are built by indexing precomputed phrase tables with integer arrays and
  joining columns with ``pyarrow.compute.binary_join_element_wise``: no Python loop per review.
  Titles and descriptions are per item (thousands), where a Python loop is cheap and clear.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

GENRES = ("mystery", "romance", "horror", "comedy", "fantasy", "western",
          "thriller", "drama", "crime", "war", "space", "history")
MOODS = ("cozy", "dark", "funny", "sad", "tense", "calm", "hopeful", "bleak", "playful", "moody")
STYLES = ("epic", "noir", "retro", "quirky", "gritty", "lyrical", "slow", "brisk", "lush", "spare")
ATTRIBUTES = GENRES + MOODS + STYLES          # index = attribute id; genres first

TITLE_ADJECTIVES = (
    "Silent", "Golden", "Broken", "Hidden", "Lost", "Last", "Crimson", "Quiet", "Wild", "Bright",
    "Cold", "Distant", "Burning", "Secret", "Hollow", "Iron", "Velvet", "Silver", "Winter", "Summer",
    "Northern", "Midnight", "Paper", "Glass", "Stone", "Empty", "Little", "Restless", "Falling", "Sleeping",
    "Scarlet", "Electric", "Gentle", "Final", "Endless", "Ancient", "Salt", "Amber", "Wooden", "Pale",
)
TITLE_NOUNS = (
    "Harbor", "River", "Garden", "Letter", "Crown", "Road", "House", "Tower", "Mirror", "Island",
    "Forest", "Promise", "Station", "Engine", "Lantern", "Bridge", "Shadow", "Orchard", "Compass", "Window",
    "Valley", "Circus", "Echo", "Storm", "Field", "Voyage", "Market", "Castle", "Piano", "Clock",
    "Feather", "Desert", "Signal", "Harvest", "Ladder", "Canyon", "Meadow", "Lighthouse", "Hotel", "Kingdom",
)

# Quality words, worst to best; the description's word is the bin of (quality + noise).
QUALITY_WORDS = ("weak", "uneven", "decent", "solid", "strong", "brilliant")
QUALITY_EDGES = (-1.0, -0.4, 0.0, 0.4, 1.0)      # in units of the item-quality standard deviation

# Review openers by rating level 1..5 (row 0 = 1 star); sentiment follows the rating.
OPENERS = (
    ("Hated it.", "A total waste.", "Truly awful."),
    ("Rather dull.", "Disappointing.", "Not for me."),
    ("It was okay.", "Mixed feelings.", "Not bad, not great."),
    ("Really enjoyed it.", "Very good.", "Well worth it."),
    ("Loved it!", "A true gem.", "Simply wonderful."),
)
SUMMARIES = (
    ("Awful", "Skip it", "Terrible"),
    ("Meh", "Weak", "Dull"),
    ("Okay", "Mixed bag", "Average"),
    ("Very good", "Enjoyable", "Good one"),
    ("Wonderful", "A must", "Superb"),
)
# Attribute clauses by the user's affinity class: 0 = disliked, 1 = neutral, 2 = liked.
CLAUSES = (
    ("I can't stand {a} stories.", "The {a} side put me off.", "The {a} bits dragged."),
    ("The {a} side was fine.", "Some {a} touches, fine.", "The {a} parts were okay."),
    ("Loved the {a} feel.", "The {a} side won me over.", "I always enjoy {a} stories."),
)
# One more of the user's tastes that the item lacks: 0 = disliked, 1 = liked.
REVEALS = (
    ("Glad it had no {a} moments.", "At least it skipped the {a} stuff."),
    ("I wish it had more {a} moments.", "Give me {a} stories any day."),
)
DISLIKED, NEUTRAL, LIKED = 0, 1, 2


def _article(word: str) -> str:
    return "An" if word[0] in "aeiou" else "A"


def make_titles(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` titles of 2–4 words, distinct while the patterns allow (6,400 combinations)."""
    na, nn = len(TITLE_ADJECTIVES), len(TITLE_NOUNS)
    per = na * nn
    total = 4 * per
    codes = rng.choice(total, size=n, replace=n > total)
    titles = []
    for code in codes.tolist():
        pattern, rest = divmod(code, per)
        a, b = divmod(rest, nn)
        adj, noun, noun2 = TITLE_ADJECTIVES[a], TITLE_NOUNS[b], TITLE_NOUNS[a % nn]
        if noun2 == noun:
            noun2 = TITLE_NOUNS[(a + 1) % nn]
        titles.append((f"The {adj} {noun}", f"{adj} {noun}", f"The {noun} of {noun2}",
                       f"{noun2} and {noun}")[pattern])
    return titles


def quality_word_index(quality: np.ndarray, quality_sd: float, noise: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Index into QUALITY_WORDS of each item's (noisy) quality bin."""
    seen = quality / max(quality_sd, 1e-9) + noise * rng.standard_normal(quality.shape)
    return np.searchsorted(np.asarray(QUALITY_EDGES), seen)


def make_description(attributes: list[int], quality_word: int) -> str:
    """'A solid mystery story. It is cozy and quirky.' (genre first, then moods/styles)."""
    genre, *rest = (ATTRIBUTES[a] for a in attributes)
    qual = QUALITY_WORDS[quality_word]
    text = f"{_article(qual)} {qual} {genre} story."
    if rest:
        text += f" It is {' and '.join(rest)}."
    return text


def _table(rows: tuple[tuple[str, ...], ...], words: tuple[str, ...] | None = None) -> tuple[pa.Array, int]:
    """Flatten phrase templates into one string array: index = (word * rows + row) * variants + v."""
    variants = len(rows[0])
    if words is None:
        return pa.array([p for row in rows for p in row]), variants
    return pa.array([p.format(a=w) for w in words for row in rows for p in row]), variants


_OPENERS, _NV_OPEN = _table(OPENERS)
_SUMMARIES, _NV_SUM = _table(SUMMARIES)
_CLAUSES, _NV_CLAUSE = _table(CLAUSES, ATTRIBUTES)
_REVEALS, _NV_REVEAL = _table(REVEALS, ATTRIBUTES)


def _take(table: pa.Array, index: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    idx = pa.array(index.astype(np.int32), mask=None if valid is None else ~valid)
    return table.take(idx)


def compose_reviews(level: np.ndarray, clause_attr: np.ndarray, clause_class: np.ndarray,
                    reveal_attr: np.ndarray, reveal_liked: np.ndarray,
                    rng: np.random.Generator) -> tuple[pa.Array, pa.Array]:
    """Reviews and summaries for ``n`` interactions, vectorised.

    ``level``: (n,) rating level 1..5 (sentiment); ``clause_attr``/``clause_class``: (n, 3) item
    attribute ids (-1 = none) and the user's affinity class for each; ``reveal_attr``: (n,) an
    attribute the item lacks to mention (-1 = none) and ``reveal_liked`` whether the user likes it.
    """
    n = len(level)
    lvl = level.astype(np.int64) - 1
    pieces = [_take(_OPENERS, lvl * _NV_OPEN + rng.integers(0, _NV_OPEN, n))]
    for j in range(clause_attr.shape[1]):
        a = clause_attr[:, j]
        has = a >= 0
        idx = (np.where(has, a, 0) * len(CLAUSES) + clause_class[:, j]) * _NV_CLAUSE + rng.integers(0, _NV_CLAUSE, n)
        pieces.append(_take(_CLAUSES, idx, has))
    has = reveal_attr >= 0
    idx = (np.where(has, reveal_attr, 0) * len(REVEALS) + reveal_liked) * _NV_REVEAL + rng.integers(0, _NV_REVEAL, n)
    pieces.append(_take(_REVEALS, idx, has))
    reviews = pc.binary_join_element_wise(*pieces, " ", null_handling="skip")
    summaries = _take(_SUMMARIES, lvl * _NV_SUM + rng.integers(0, _NV_SUM, n))
    return reviews, summaries
