"""Top-k over a catalogue: exact from a score matrix or item vectors, or a FAISS index for large ones.

What this module chose, and why:

* :func:`top_k` is exact: per row, the ``k`` highest scores after the row's excluded items (its
  history) are masked, highest first, **ties broken by catalogue order** (the lower index first), so
  the same request always gets the same list — the same selection as offline evaluation, since it is
  :func:`reczero.rankings.top_k_columns` (``np.partition`` finds the k-th value; only the candidates at or
  above it are sorted).
* :class:`ExactIndex` scores user vectors against item vectors computed once at start with one
  matrix product (``(n, d) @ (d, n_items)``), then :func:`top_k`.
* :class:`FaissIndex` (``--index faiss``, the optional ``faiss`` extra, imported only here) is an
  HNSW graph over the item vectors with inner-product similarity: sub-linear search for catalogues
  where a matrix product per request is too slow, at the price of being approximate. It asks for
  ``k`` plus the longest excluded list, then drops excluded items, so masking never leaves fewer
  than ``k`` results when the catalogue has them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reczero import rankings
from reczero.errors import ReczeroError

Exclude = Sequence[np.ndarray]          # per row, catalogue indices to leave out (-1 entries are ignored)


def top_k(scores: np.ndarray, k: int, exclude: Exclude | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of ``scores`` (n, n_items): (catalogue indices, scores) of the top ``k``, best first.

    Excluded and non-finite items are never returned; a row gets fewer than ``k`` when fewer remain.

    >>> [idx.tolist() for idx, _ in top_k(np.array([[0.1, 0.9, 0.5, 0.9]], np.float32), 3)]
    [[1, 3, 2]]
    >>> [idx.tolist() for idx, _ in top_k(np.array([[0.1, 0.9, 0.5, 0.9]], np.float32), 2, [np.array([1])])]
    [[3, 2]]
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n, n_items), got shape {scores.shape}")
    if exclude is not None:
        for row, idx in enumerate(exclude):
            idx = np.asarray(idx, dtype=np.int64)
            scores[row, idx[idx >= 0]] = -np.inf
    scores[~np.isfinite(scores)] = -np.inf
    if scores.shape[1] == 0 or k < 1:
        return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(scores))]
    cols, vals = rankings.top_k_columns(scores, k)
    keep = np.isfinite(vals)
    return [(c[m].astype(np.int64), v[m]) for c, v, m in zip(cols, vals, keep, strict=True)]

class ExactIndex:
    """Exact inner-product top-k over item vectors (one matrix product per batch)."""

    def __init__(self, item_vectors: np.ndarray) -> None:
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)

    def search(self, user_vectors: np.ndarray, k: int, exclude: Exclude | None = None):
        return top_k(np.asarray(user_vectors, np.float32) @ self.item_vectors.T, k, exclude)


class FaissIndex:
    """Approximate inner-product top-k with a FAISS HNSW index (for large catalogues)."""

    def __init__(self, item_vectors: np.ndarray, *, neighbours: int = 32, ef_search: int = 128) -> None:
        try:
            import faiss
        except ImportError as err:
            raise ReczeroError("--index faiss needs FAISS, which is not installed: pip install 'reczero[faiss]' "
                               "(or use --index exact)") from err
        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.n_items, dim = vectors.shape
        self.index = faiss.IndexHNSWFlat(dim, neighbours, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = ef_search
        self.index.add(vectors)

    def search(self, user_vectors: np.ndarray, k: int, exclude: Exclude | None = None):
        queries = np.ascontiguousarray(user_vectors, dtype=np.float32)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        want = min(k + extra, self.n_items)
        self.index.hnsw.efSearch = max(self.index.hnsw.efSearch, want)
        scores, ids = self.index.search(queries, want)
        out = []
        for row in range(len(queries)):
            keep = ids[row] >= 0
            if exclude is not None and len(exclude[row]):
                keep &= ~np.isin(ids[row], exclude[row])
            out.append((ids[row][keep][:k].astype(np.int64), scores[row][keep][:k].astype(np.float32)))
        return out


def make_index(item_vectors: np.ndarray, kind: str):
    """``kind`` is ``"exact"`` or ``"faiss"`` (ServeConfig.index)."""
    if kind == "exact":
        return ExactIndex(item_vectors)
    if kind == "faiss":
        return FaissIndex(item_vectors)
    raise ValueError(f"unknown index {kind!r}; expected exact or faiss")
