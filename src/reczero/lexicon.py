"""Word lists that read item and review text, shared by every reader of it (the heuristic teacher's
rationales, the tiny base's warm-up answers), so that none of them imports another's module.

Chosen: plain word lists and ``re``; a word counts only as a whole lowercase word.
"""

from __future__ import annotations

import re
from typing import Any

#: Quality adjectives of item descriptions, weakest first; RecWorld writes the six of weak, uneven,
#: decent, solid, strong, brilliant, the others are their synonyms next to them.
QUALITY_WORDS: tuple[str, ...] = ("weak", "poor", "uneven", "mediocre", "decent", "solid", "good", "strong", "great",
                                  "brilliant", "excellent")
_QUALITY = frozenset(QUALITY_WORDS)


def quality_word(description: Any) -> str | None:
    """The first word of :data:`QUALITY_WORDS` in an item description.

    >>> quality_word("A weak thriller story."), quality_word(None)
    ('weak', None)
    """
    return next((w for w in re.findall(r"[a-z]+", str(description or "").lower()) if w in _QUALITY), None)
