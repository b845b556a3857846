"""``itemknn``: item-based k-nearest neighbours (Sarwar et al. 2001; Deshpande & Karypis 2004).

``score(u, j) = sum_{h in history(u)} sim(h, j)``, where ``sim`` is the shrunk cosine of the
training co-occurrence, ``sim(i, j) = c_ij / (sqrt(c_i * c_j) + shrink)`` (``c_ij``: users who
interacted with both, ``c_i``: with ``i``), kept only for the ``neighbors`` most similar items
``i`` of each item ``j``; an item is never its own neighbour.

What this module chose, and why:

* **Item-KNN rather than BPR-MF** as the third classic: it has no training loop, no learning rate
  and no seed to tune, so it is a fixed, reproducible reference; it reads the user's recent history
  directly (the next-item signal that SASRec also uses), and it stays competitive with learned
  models on next-item data (Ludewig & Jannach 2018; Dacrema et al. 2019).
* **scipy.sparse, in blocks of items**: the co-occurrence ``X^T X`` (``X``: users x items, binary)
  is formed a block of columns at a time, densified only for that block to take each column's top
  neighbours with ``argpartition``; the kept similarities form one sparse items x items matrix of
  at most ``neighbors`` entries per column. Scoring a block of histories is one sparse product.
* Defaults (100 neighbours, shrinkage 10) are the usual ones of the item-KNN literature (e.g.
  RecBole's ``ItemKNN``: k=100, shrink=0); shrinkage damps similarities resting on few users.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from reczero.baselines.ranker import Ranker

log = logging.getLogger(__name__)

SIMILARITY = "similarity.npz"
BLOCK_ENTRIES = 1 << 24          # dense co-occurrence entries per block of columns (64 MiB float32)


def user_item_matrix(sequences, n_items: int):
    """Binary users x items CSR matrix of the training sequences (repeats counted once)."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    cols = np.concatenate(sequences) if sequences else np.empty(0, np.int64)
    x = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(sequences), n_items))
    x.data[:] = 1.0                  # duplicates were summed
    return x


def knn_similarity(x, *, neighbors: int, shrink: float):
    """The sparse items x items matrix ``S[i, j]`` = shrunk cosine of ``i`` among ``j``'s top neighbours."""
    import scipy.sparse as sp

    n_items = x.shape[1]
    x = x.tocsr()
    xc = x.tocsc()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
    k = min(neighbors, n_items - 1)
    if k <= 0:                        # a single item has no neighbour
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    block = max(1, BLOCK_ENTRIES // max(n_items, 1))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        # row j of the block: co-occurrence of item start+j with every item (X^T X is symmetric),
        # so each item's neighbours lie along a contiguous row
        co = (xc[:, start:stop].T @ x).toarray()                          # (block, n_items)
        sim = co / (norms[start:stop, None] * norms[None, :] + (shrink + 1e-12))
        sim[np.arange(stop - start), np.arange(start, stop)] = 0.0        # no self-similarity
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]                 # (block, k): k < n_items
        top_sim = np.take_along_axis(sim, top, axis=1)
        keep = top_sim > 0
        rows.append(top[keep])                                            # the neighbour i ...
        cols.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])   # ... of item j
        vals.append(top_sim[keep].astype(np.float32))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items))


class ItemKNN(Ranker):
    name = "itemknn"
    HPARAMS = ("neighbors", "shrink")

    def __init__(self, *, neighbors: int = 100, shrink: float = 10.0, **kw) -> None:
        super().__init__(**kw)
        if neighbors < 1 or shrink < 0:
            raise ValueError(f"{self.name}: need neighbors >= 1 and shrink >= 0")
        self.neighbors, self.shrink = int(neighbors), float(shrink)

    def _fit(self, sequences, valid_rows) -> None:
        x = user_item_matrix(sequences, len(self.catalog))
        self.similarity_ = knn_similarity(x, neighbors=self.neighbors, shrink=self.shrink)
        log.info("%s: %d items, %d similarities kept", self.name, x.shape[1], self.similarity_.nnz)

    def _score(self, histories) -> np.ndarray:
        return (user_item_matrix(histories, len(self.catalog)) @ self.similarity_).toarray()

    def _save(self, directory: Path) -> None:
        import scipy.sparse as sp

        sp.save_npz(directory / SIMILARITY, self.similarity_)

    def _load(self, directory: Path) -> None:
        import scipy.sparse as sp

        self.similarity_ = sp.load_npz(directory / SIMILARITY).tocsr()
