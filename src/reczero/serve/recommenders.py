"""What ``/v1/recommend`` serves: a small recommender interface, and the ranking baselines behind it.

A :class:`Recommender` turns histories (item ids, oldest first) into :class:`Scored`: either a
score for every catalogue item (``scores``), or user vectors to be matched against the item vectors
it computed once at load (``user_vectors`` and ``item_vectors``: scores are their inner products,
searched exactly or with FAISS, see :mod:`reczero.serve.topk`), with optional ``reasoning`` text
per history. The ranking baselines (popularity, SASRec, item-kNN: ``reczero.baselines.load_ranker``)
give scores; an R2ec run, whose scores are its hidden state at ``<answer>`` against its item
table, gives user vectors, the item table and its reasoning - the same interface, no new route.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from reczero.serve.topk import make_index, top_k


@dataclass
class Scored:
    """A recommender's answer for ``n`` histories: ``scores`` (n, n_items), or ``user_vectors``
    (n, d) to match against the recommender's ``item_vectors``; ``reasoning`` one text per row or None."""

    scores: np.ndarray | None = None
    user_vectors: np.ndarray | None = None
    reasoning: list[str | None] | None = None


class Recommender(Protocol):
    item_ids: Sequence[str]                  # the catalogue: dense index -> item id
    item_vectors: np.ndarray | None          # (n_items, d) when scores are user · item; None otherwise

    def score(self, histories: list[list[str]]) -> Scored: ...

    def index_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Catalogue indices of ``item_ids``, -1 for ids outside the catalogue."""
        ...


class RankerRecommender:
    """A fitted ranking baseline (:class:`reczero.baselines.ranker.Ranker`): scores over its catalogue."""

    item_vectors = None

    def __init__(self, ranker: Any) -> None:
        self.ranker = ranker
        self.item_ids = list(ranker.catalog.ids)

    def score(self, histories: list[list[str]]) -> Scored:
        scores = np.asarray(self.ranker.score(histories), dtype=np.float32)
        if scores.shape != (len(histories), len(self.item_ids)):
            raise RuntimeError(f"ranker returned scores of shape {scores.shape}; expected "
                               f"({len(histories)}, {len(self.item_ids)})")
        return Scored(scores=scores)

    def index_of(self, item_ids: Sequence[str]) -> np.ndarray:
        return self.ranker.catalog.index(list(item_ids))


class Retriever:
    """Top-k lists from a recommender: exact over scores, or through the item-vector index."""

    def __init__(self, recommender: Recommender, index: str = "exact") -> None:
        self.recommender = recommender
        vectors = recommender.item_vectors
        self.index = make_index(vectors, index) if vectors is not None else None

    def recommend(self, histories: list[list[str]], k: int, exclude_history: Sequence[bool]
                  ) -> list[tuple[list[str], list[float], str | None]]:
        """Per history: (item ids, scores, reasoning), best first; a row's history items are left out
        where its ``exclude_history`` is true."""
        scored = self.recommender.score(histories)
        none = np.empty(0, np.int64)
        exclude = [self.recommender.index_of(h) if flag else none
                   for h, flag in zip(histories, exclude_history, strict=True)]
        if scored.user_vectors is not None:
            if self.index is None:
                raise RuntimeError("the recommender returned user vectors but has no item vectors")
            ranked = self.index.search(scored.user_vectors, k, exclude)
        elif scored.scores is not None:
            ranked = top_k(scored.scores, k, exclude)
        else:
            raise RuntimeError("the recommender returned neither scores nor user vectors")
        reasoning = scored.reasoning or [None] * len(histories)
        ids = self.recommender.item_ids
        return [([ids[i] for i in idx], [float(s) for s in values], text)
                for (idx, values), text in zip(ranked, reasoning, strict=True)]
